/**
 * dm-verity hash trees streamed through a fixed amount of memory. The writer takes the digests
 * of one level in order, packs them into hash blocks, hands each filled stretch of blocks to the
 * caller to store and feeds their digests to the level above; the top block's digest is the
 * root. The reader fetches stored hash blocks a stretch at a time and compares entries.
 * Neither ever holds a whole level, so a tree of any size costs the same few hundred KiB.
 */
import type { TreeGeometry } from './dm-verity.ts';
import { type BlockHashing, hashBlocksInto } from './hashing.ts';

/** Bytes of hash blocks each level keeps before handing them on. */
const LEVEL_BUFFER = 256 << 10;

interface Level {
  /** Entries this level receives in all: the data blocks, or the blocks of the level below. */
  total: number;
  received: number;
  /** Hash blocks held, from block `base` of the level. */
  buffer: Buffer;
  capacity: number;
  base: number;
  /** Digests of the held blocks, for the level above. */
  digests: Buffer;
}

export class TreeWriter {
  readonly #g: TreeGeometry;
  readonly #blockSize: number;
  readonly #hashing: BlockHashing;
  readonly #digestSize: number;
  readonly #store: (offset: number, blocks: Buffer) => void;
  readonly #levels: Level[];
  #root: Buffer | undefined;

  /**
   * `hashing` hashes hash blocks (the salt as the format wants it); `store` receives each
   * stretch of finished blocks with its byte offset from the start of the tree, and must be
   * done with the bytes when it returns.
   */
  constructor(
    g: TreeGeometry,
    dataBlocks: number,
    hashing: BlockHashing,
    digestSize: number,
    store: (offset: number, blocks: Buffer) => void,
  ) {
    this.#g = g;
    this.#blockSize = hashing.blockSize;
    this.#hashing = hashing;
    this.#digestSize = digestSize;
    this.#store = store;
    const perBuffer = Math.max(1, Math.floor(LEVEL_BUFFER / this.#blockSize));
    this.#levels = g.levelBlocks.map((blocks, level) => {
      const capacity = Math.min(blocks, perBuffer);
      return {
        total: level === 0 ? dataBlocks : g.levelBlocks[level - 1]!,
        received: 0,
        buffer: Buffer.alloc(capacity * this.#blockSize),
        capacity,
        base: 0,
        digests: Buffer.alloc(capacity * g.slot),
      };
    });
  }

  /** Adds the next `count` digests of `level` (0: the data blocks'), each in a slot-sized stride. */
  add(level: number, digests: Uint8Array, count: number): void {
    const { slot, hashesPerBlock } = this.#g;
    const l = this.#levels[level];
    if (!l) {
      // No tree (a single data block): its digest is the root.
      this.#root = Buffer.from(digests.subarray(0, this.#digestSize));
      return;
    }
    // Where the slots fill their blocks exactly (the usual geometry), a run is one copy.
    const packed = slot * hashesPerBlock === this.#blockSize;
    for (let i = 0; i < count; ) {
      const block = Math.floor(l.received / hashesPerBlock) - l.base;
      if (block >= l.capacity) {
        this.#flush(level, l.capacity);
        continue;
      }
      const within = l.received % hashesPerBlock;
      const room = packed ? (l.capacity - block) * hashesPerBlock - within : hashesPerBlock - within;
      const n = Math.min(count - i, room);
      l.buffer.set(digests.subarray(i * slot, (i + n) * slot), block * this.#blockSize + within * slot);
      l.received += n;
      i += n;
    }
    if (l.received === l.total) this.#flush(level, Math.ceil(l.total / hashesPerBlock) - l.base);
  }

  #flush(level: number, blocks: number): void {
    const l = this.#levels[level]!;
    const bytes = l.buffer.subarray(0, blocks * this.#blockSize);
    this.#store(this.#g.levelOffsets[level]! + l.base * this.#blockSize, bytes);
    hashBlocksInto(this.#hashing, bytes, l.digests, 0, this.#g.slot);
    bytes.fill(0);
    l.base += blocks;
    this.add(level + 1, l.digests, blocks);
  }

  /** The root hash, once every data block's digest was added. */
  get root(): Buffer {
    if (!this.#root) throw new Error('dm-verity tree is incomplete');
    return this.#root;
  }
}

/** Reads a stored tree's hash blocks (at `treeStart` of `fd`) a stretch at a time. */
export class TreeReader {
  readonly #fd: number;
  readonly #treeStart: number;
  readonly #g: TreeGeometry;
  readonly #blockSize: number;
  readonly #digestSize: number;
  readonly #read: (fd: number, target: Uint8Array, position: number) => number;
  #blocks = Buffer.alloc(0);
  #entries = Buffer.alloc(0);

  constructor(
    fd: number,
    treeStart: number,
    g: TreeGeometry,
    blockSize: number,
    digestSize: number,
    read: (fd: number, target: Uint8Array, position: number) => number,
  ) {
    this.#fd = fd;
    this.#treeStart = treeStart;
    this.#g = g;
    this.#blockSize = blockSize;
    this.#digestSize = digestSize;
    this.#read = read;
  }

  #load(into: 'blocks' | 'entries', level: number, first: number, count: number): Buffer {
    const length = count * this.#blockSize;
    let buffer = into === 'blocks' ? this.#blocks : this.#entries;
    if (buffer.length < length) {
      buffer = Buffer.alloc(length);
      if (into === 'blocks') this.#blocks = buffer;
      else this.#entries = buffer;
    }
    const view = buffer.subarray(0, length);
    const position = this.#treeStart + this.#g.levelOffsets[level]! + first * this.#blockSize;
    const got = this.#read(this.#fd, view, position);
    view.fill(0, got);
    return view;
  }

  /** Blocks [first, first + count) of `level`; valid until the next call. */
  blocks(level: number, first: number, count: number): Buffer {
    return this.#load('blocks', level, first, count);
  }

  /**
   * Compares `count` digests (slot-sized strides) with the entries [first, first + count) that
   * `level` stores; the position of the first that differs, or -1.
   */
  firstMismatch(level: number, digests: Uint8Array, first: number, count: number): number {
    const { slot, hashesPerBlock } = this.#g;
    const firstBlock = Math.floor(first / hashesPerBlock);
    const lastBlock = Math.floor((first + count - 1) / hashesPerBlock);
    const stored = this.#load('entries', level, firstBlock, lastBlock - firstBlock + 1);
    // Where the slots fill their blocks exactly (the usual geometry), the entries are one run.
    const packed = slot * hashesPerBlock === this.#blockSize;
    for (let i = 0; i < count; ) {
      const entry = first + i;
      const within = entry % hashesPerBlock;
      const n = packed ? count - i : Math.min(count - i, hashesPerBlock - within);
      const at = (Math.floor(entry / hashesPerBlock) - firstBlock) * this.#blockSize + within * slot;
      // A whole run at once; entry by entry only to find the culprit (slot padding is not compared).
      if (stored.compare(digests, i * slot, (i + n) * slot, at, at + n * slot) !== 0) {
        for (let j = 0; j < n; j++) {
          const s = at + j * slot;
          const d = (i + j) * slot;
          if (stored.compare(digests, d, d + this.#digestSize, s, s + this.#digestSize) !== 0) return i + j;
        }
      }
      i += n;
    }
    return -1;
  }
}
