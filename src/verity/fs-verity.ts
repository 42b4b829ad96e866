/**
 * fs-verity file digests (the kernel's and `fsverity digest`'s): a Merkle tree over the file's
 * blocks, the root hash in a 256-byte descriptor, the digest = hash of the descriptor. The tree
 * is folded as the digests arrive, one pending block per level, so its memory is a few blocks
 * whatever the size of the file.
 */
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync } from 'node:fs';
import { VerityError } from './errors.ts';
import { type BlockHashing, DIGEST_SIZE, fileBlockDigests, hashBlocksInto } from './hashing.ts';

/** Bytes hashed per step when the data is in memory or streamed. */
const STEP_BYTES = 1 << 20;

export type FsverityAlgorithm = 'sha256' | 'sha512';
const ALGORITHM_ID: Record<FsverityAlgorithm, number> = { sha256: 1, sha512: 2 };
/** The hash functions' own block sizes, to which the salt is padded. */
const HASH_BLOCK: Record<FsverityAlgorithm, number> = { sha256: 64, sha512: 128 };

export interface FsverityOptions {
  algorithm?: FsverityAlgorithm;
  /** Merkle tree block size, a power of two from 1024 to 65536 (default 4096). */
  blockSize?: number;
  /** Up to 32 bytes. */
  salt?: Uint8Array;
}

interface Resolved {
  algorithm: FsverityAlgorithm;
  blockSize: number;
  salt: Uint8Array;
  hashing: BlockHashing;
}

function resolve(o: FsverityOptions): Resolved {
  const algorithm = o.algorithm ?? 'sha256';
  const blockSize = o.blockSize ?? 4096;
  const salt = o.salt ?? new Uint8Array(0);
  if (!(algorithm in ALGORITHM_ID))
    throw new VerityError('VERITY_INVALID_OPTION', `unsupported fs-verity hash ${algorithm}`);
  if (
    !Number.isInteger(blockSize) ||
    blockSize < 1024 ||
    blockSize > 65536 ||
    (blockSize & (blockSize - 1)) !== 0
  ) {
    throw new VerityError(
      'VERITY_INVALID_OPTION',
      `fs-verity block size ${blockSize} is not a power of two in 1024..65536`,
    );
  }
  if (salt.length > 32)
    throw new VerityError(
      'VERITY_INVALID_OPTION',
      `fs-verity salt of ${salt.length} bytes is longer than 32`,
    );
  const padded = new Uint8Array(
    salt.length === 0 ? 0 : Math.ceil(salt.length / HASH_BLOCK[algorithm]) * HASH_BLOCK[algorithm],
  );
  padded.set(salt);
  return {
    algorithm,
    blockSize,
    salt,
    hashing: { algorithm, blockSize, prefix: padded, suffix: new Uint8Array(0) },
  };
}

/** Bytes of blocks each level of the tree keeps, at most, before hashing them in one call. */
const LEVEL_BUFFER = 128 << 10;

interface FoldLevel {
  /** Whole blocks of digests, zero-padded; `filled` digests so far. */
  blocks: Buffer;
  filled: number;
  /** The digests of those blocks, on their way to the level above. */
  digests: Buffer;
  /** Digests this level received in all. */
  total: number;
}

/**
 * The Merkle tree folded as the leaf digests arrive: each level keeps a few blocks of digests
 * and, when they are full, hashes them in one call into the level above. At the end every
 * level's last blocks, zero-padded, are hashed upward until a level holds a single digest: the
 * root (a one-block file's root is its block's digest). A level's buffer starts at one block
 * and doubles up to LEVEL_BUFFER, so a small file costs a few KiB.
 */
class MerkleFold {
  readonly #r: Resolved;
  readonly #size: number;
  readonly #perBlock: number;
  readonly #capacity: number;
  readonly #levels: FoldLevel[] = [];

  constructor(r: Resolved) {
    this.#r = r;
    this.#size = DIGEST_SIZE[r.algorithm];
    this.#perBlock = r.blockSize / this.#size;
    this.#capacity = Math.max(1, Math.floor(LEVEL_BUFFER / r.blockSize));
  }

  /** Adds `count` digests (packed, no padding) to `level` (0: the file's blocks). */
  add(digests: Uint8Array, count: number, level = 0): void {
    while (this.#levels.length <= level) {
      this.#levels.push({
        blocks: Buffer.alloc(this.#r.blockSize),
        filled: 0,
        digests: Buffer.alloc(this.#size),
        total: 0,
      });
    }
    const l = this.#levels[level]!;
    for (let i = 0; i < count; ) {
      const room = (l.blocks.length / this.#r.blockSize) * this.#perBlock;
      const n = Math.min(count - i, room - l.filled);
      l.blocks.set(digests.subarray(i * this.#size, (i + n) * this.#size), l.filled * this.#size);
      l.filled += n;
      l.total += n;
      i += n;
      if (l.filled < room) continue;
      const held = l.blocks.length / this.#r.blockSize;
      if (held < this.#capacity) {
        const grown = Buffer.alloc(Math.min(held * 2, this.#capacity) * this.#r.blockSize);
        grown.set(l.blocks);
        l.blocks = grown;
        l.digests = Buffer.alloc((grown.length / this.#r.blockSize) * this.#size);
      } else this.#up(level);
    }
  }

  /** Hashes the level's filled blocks (the last zero-padded) into the level above. */
  #up(level: number): void {
    const l = this.#levels[level]!;
    const blocks = Math.ceil(l.filled / this.#perBlock);
    const bytes = l.blocks.subarray(0, blocks * this.#r.blockSize);
    hashBlocksInto(this.#r.hashing, bytes, l.digests, 0, this.#size);
    bytes.fill(0);
    l.filled = 0;
    this.add(l.digests, blocks, level + 1);
  }

  /** The root hash; zeros when no block was added (an empty file). */
  root(): Buffer {
    for (let level = 0; level < this.#levels.length; level++) {
      const l = this.#levels[level]!;
      if (l.total === 1) return Buffer.from(l.blocks.subarray(0, this.#size));
      if (l.filled > 0) this.#up(level);
    }
    return Buffer.alloc(this.#size);
  }
}

function descriptorDigest(root: Buffer, dataSize: number, r: Resolved): Buffer {
  const d = Buffer.alloc(256);
  d[0] = 1;
  d[1] = ALGORITHM_ID[r.algorithm];
  d[2] = Math.log2(r.blockSize);
  d[3] = r.salt.length;
  d.writeBigUInt64LE(BigInt(dataSize), 8);
  root.copy(d, 16);
  Buffer.from(r.salt).copy(d, 80);
  return createHash(r.algorithm).update(d).digest();
}

let shared = Buffer.alloc(0);

/**
 * Leaf digests' scratch, shared by every digest in progress: it is filled and emptied into the
 * tree with no await in between, and composefs digests thousands of small files.
 */
function scratch(size: number): Buffer {
  if (shared.length < size) shared = Buffer.alloc(size);
  return shared;
}

/** The fs-verity digest of data held in memory or streamed (hashed on this thread). */
export async function fsverityDigest(
  data: Uint8Array | AsyncIterable<Uint8Array>,
  options: FsverityOptions = {},
): Promise<Buffer> {
  const r = resolve(options);
  const size = DIGEST_SIZE[r.algorithm];
  const tree = new MerkleFold(r);
  const step = Math.max(1, Math.floor(STEP_BYTES / r.blockSize)) * r.blockSize;
  const out = scratch((step / r.blockSize) * size);
  /** Hashes whole blocks of `bytes` (the last zero-padded when `final`); returns what is left. */
  const hashWhole = (bytes: Uint8Array, final: boolean): number => {
    let at = 0;
    for (; bytes.length - at >= r.blockSize || (final && at < bytes.length); ) {
      const whole = Math.min(step, bytes.length - at - ((bytes.length - at) % r.blockSize));
      if (whole === 0) {
        const last = Buffer.alloc(r.blockSize);
        last.set(bytes.subarray(at));
        hashBlocksInto(r.hashing, last, out, 0, size);
        tree.add(out, 1);
        return bytes.length;
      }
      hashBlocksInto(r.hashing, bytes.subarray(at, at + whole), out, 0, size);
      tree.add(out, whole / r.blockSize);
      at += whole;
    }
    return at;
  };
  let total = 0;
  if (data instanceof Uint8Array) {
    total = data.length;
    hashWhole(data, true);
  } else {
    // Less than a block carried from one chunk to the next.
    const carry = Buffer.alloc(r.blockSize);
    let carried = 0;
    for await (const chunk of data) {
      total += chunk.length;
      let at = 0;
      if (carried > 0) {
        at = Math.min(chunk.length, r.blockSize - carried);
        carry.set(chunk.subarray(0, at), carried);
        carried += at;
        if (carried < r.blockSize) continue;
        hashWhole(carry, false);
        carried = 0;
      }
      at += hashWhole(chunk.subarray(at), false);
      carry.set(chunk.subarray(at));
      carried = chunk.length - at;
    }
    hashWhole(carry.subarray(0, carried), true);
  }
  return descriptorDigest(tree.root(), total, r);
}

/** The fs-verity digest of a file, its blocks read and hashed on every core. */
export async function fsverityDigestFile(path: string, options: FsverityOptions = {}): Promise<Buffer> {
  const r = resolve(options);
  const fd = openSync(path, 'r');
  let size: number;
  try {
    size = fstatSync(fd).size;
  } finally {
    closeSync(fd);
  }
  const tree = new MerkleFold(r);
  const digestSize = DIGEST_SIZE[r.algorithm];
  const blocks = Math.ceil(size / r.blockSize);
  for await (const run of fileBlockDigests(path, 0, 0, blocks, r.hashing, digestSize))
    tree.add(run.digests, run.count);
  return descriptorDigest(tree.root(), size, r);
}

/** What kernel fs-verity signatures sign: "FSVerity", u16 algorithm, u16 digest size, digest. */
export function formattedDigest(digest: Uint8Array, algorithm: FsverityAlgorithm = 'sha256'): Buffer {
  const head = Buffer.alloc(12);
  head.write('FSVerity', 0, 'latin1');
  head.writeUInt16LE(ALGORITHM_ID[algorithm], 8);
  head.writeUInt16LE(digest.length, 10);
  return Buffer.concat([head, digest]);
}
