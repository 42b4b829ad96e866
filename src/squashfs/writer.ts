/**
 * squashfs 4.0 writer from the tree model. File data (blocks and fragment blocks) is streamed
 * to the image and compressed on the worker pool in order; only metadata is kept in memory.
 * The inode and directory tables are then written bottom-up (children before their directory),
 * followed by the fragment, export, id and xattr tables. Same tree + options → same bytes.
 */
import { createHash, hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { contentReader } from '../tree/content.ts';
import {
  type DirInode,
  encodeDevice,
  type Inode,
  linkCounts,
  sortedChildren,
  type Tree,
  walk,
} from '../tree/model.ts';
import { writeAtomic } from '../util/atomic.ts';
import { sourceUrl } from '../util/paths.ts';
import { sharedPool } from '../util/pool.ts';
import { writeFully, writeFullySync } from '../util/write.ts';
import {
  type BlockCodec,
  blockCodecs,
  compressBlock,
  compressorId,
  compressorOptions,
  DEFAULT_LEVEL,
  LEVEL_RANGE,
  type WriteCompression,
  XZ_FILTERS,
  type XzFilter,
} from './compression.ts';
import {
  DATA_UNCOMPRESSED,
  DIR_HEADER_MAX_ENTRIES,
  encodeSuperblock,
  Flag,
  INVALID_FRAGMENT,
  INVALID_TABLE,
  INVALID_XATTR,
  InodeType,
  METADATA_UNCOMPRESSED,
  SquashfsError,
  SUPERBLOCK_SIZE,
  XATTR_PREFIXES,
} from './format.ts';
import { MetadataWriter, packRef } from './metadata.ts';

export interface SquashfsWriteOptions {
  compression?: WriteCompression;
  /** Compression level: gzip 1–9 (default 9), zstd 1–22 (15), xz preset 0–9 (6). */
  level?: number;
  /** xz: filters tried in front of LZMA2 for each data block, the smallest result kept. */
  xzFilters?: readonly XzFilter[];
  /** Data block size, a power of two from 4 KiB to 1 MiB (default 128 KiB). */
  blockSize?: number;
  /** Superblock mkfs time; default $SOURCE_DATE_EPOCH, else the newest mtime in the tree. */
  mkfsTime?: number;
  /** Every file owned by root (uid and gid 0). */
  allRoot?: boolean;
  /** Store extended attributes (default true). */
  xattrs?: boolean;
  /** Detect duplicate files and store them once (default true, as mksquashfs). */
  duplicates?: boolean;
  /** Pack small files into fragment blocks (default true). */
  fragments?: boolean;
  /** Also pack the tail ends of files larger than a block into fragments (default false). */
  tailEnds?: boolean;
  /** Write the NFS export table (default true). */
  exportable?: boolean;
  /** Called with the number of file bytes processed. */
  onProgress?: (bytes: number) => void;
}

export interface SquashfsWriteResult {
  /** Bytes used by the filesystem (the image is padded to a 4 KiB multiple after it). */
  bytesUsed: number;
  inodes: number;
  /** The image size on disk. */
  size: number;
}

const COMPRESSION_MODULE = sourceUrl('squashfs/compression.ts').href;

/** Where a file's data went. */
interface FileData {
  blocksStart: number;
  /** Stored size of each block (| DATA_UNCOMPRESSED, or 0 for a sparse block). */
  blockSizes: number[];
  fragment: number;
  fragmentOffset: number;
  sparseBytes: number;
}

/** Output stream of the data area: writes happen in submission order as compressions finish. */
class DataWriter {
  position: number;
  #handle: FileHandle;
  #queue: Promise<void> = Promise.resolve();
  #inFlight = 0;
  #limit: number;
  #waiters: (() => void)[] = [];
  #codec: BlockCodec;
  #zero: Uint8Array;

  constructor(handle: FileHandle, start: number, codec: BlockCodec, blockSize: number) {
    this.#handle = handle;
    this.position = start;
    this.#codec = codec;
    this.#limit = Math.max(4, sharedPool().size * 8);
    this.#zero = new Uint8Array(blockSize);
  }

  isZero(block: Uint8Array): boolean {
    return Buffer.compare(block, this.#zero.subarray(0, block.length)) === 0;
  }

  /**
   * Queues a block; `done` gets its stored size once its position is fixed. Positions follow
   * submission order, so the image is the same whatever order compressions finish in.
   */
  async submit(block: Uint8Array, done: (storedSize: number, position: number) => void): Promise<void> {
    while (this.#inFlight >= this.#limit) await new Promise<void>((r) => this.#waiters.push(r));
    this.#inFlight++;
    const packed =
      this.#codec.kind === 'none'
        ? Promise.resolve(undefined)
        : sharedPool().run<Uint8Array | undefined>(COMPRESSION_MODULE, 'compressBlock', [this.#codec, block]);
    this.#queue = this.#queue.then(async () => {
      const out = await packed;
      const data = out ?? block;
      const position = this.position;
      this.position += data.length;
      // Synchronous: a page-cache copy, cheaper than a thread-pool round trip per block.
      writeFullySync(this.#handle.fd, data, position);
      done(out ? out.length : data.length | DATA_UNCOMPRESSED, position);
      this.#inFlight--;
      this.#waiters.shift()?.();
    });
  }

  async flush(): Promise<void> {
    await this.#queue;
  }
}

function validate(
  options: SquashfsWriteOptions,
): Required<Omit<SquashfsWriteOptions, 'mkfsTime' | 'onProgress'>> {
  const compression = options.compression ?? 'gzip';
  if (!(compression in DEFAULT_LEVEL)) {
    throw new SquashfsError(
      'SQUASHFS_INVALID_OPTION',
      `unsupported compression ${compression} (none, gzip, zstd, xz)`,
    );
  }
  const level = options.level ?? DEFAULT_LEVEL[compression];
  const [min, max] = LEVEL_RANGE[compression];
  if (compression !== 'none' && (!Number.isInteger(level) || level < min || level > max)) {
    throw new SquashfsError('SQUASHFS_INVALID_OPTION', `${compression} level must be ${min}..${max}`);
  }
  const blockSize = options.blockSize ?? 128 * 1024;
  if (
    !Number.isInteger(blockSize) ||
    blockSize < 4096 ||
    blockSize > 1 << 20 ||
    (blockSize & (blockSize - 1)) !== 0
  ) {
    throw new SquashfsError(
      'SQUASHFS_INVALID_OPTION',
      `block size must be a power of two from 4096 to 1048576`,
    );
  }
  const xzFilters = [...new Set(options.xzFilters ?? [])].sort(
    (a, b) => (XZ_FILTERS[a] ?? 0) - (XZ_FILTERS[b] ?? 0),
  );
  const unknown = xzFilters.find((f) => !(f in XZ_FILTERS));
  if (unknown !== undefined || (xzFilters.length > 0 && compression !== 'xz')) {
    throw new SquashfsError(
      'SQUASHFS_INVALID_OPTION',
      unknown !== undefined
        ? `unknown xz filter ${unknown} (${Object.keys(XZ_FILTERS).join(', ')})`
        : 'xz filters need xz compression',
    );
  }
  if (compression !== 'none') probeCodec(compression, level, blockSize, xzFilters);
  return {
    compression,
    level,
    xzFilters,
    blockSize,
    allRoot: options.allRoot ?? false,
    xattrs: options.xattrs ?? true,
    duplicates: options.duplicates ?? true,
    fragments: options.fragments ?? true,
    tailEnds: options.tailEnds ?? false,
    exportable: options.exportable ?? true,
  };
}

/**
 * Compresses a small sample with the chosen settings, so a missing codecs addon or an xz filter
 * this liblzma lacks is a clear error before anything is written, not a failure in a worker.
 */
function probeCodec(
  compression: WriteCompression,
  level: number,
  blockSize: number,
  filters: readonly XzFilter[],
): void {
  const sample = Buffer.alloc(4096, 'seal ');
  try {
    compressBlock(blockCodecs(compression, level, blockSize, filters).data, sample);
  } catch (error) {
    if (error instanceof SquashfsError) throw error;
    throw new SquashfsError('SQUASHFS_INVALID_OPTION', `${compression}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

async function contentHash(inode: Extract<Inode, { type: 'file' }>): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of inode.content.read()) hash.update(chunk);
  return hash.digest('hex');
}

/** Writes `tree` as a squashfs image at `out` (atomically). */
export async function writeSquashfs(
  tree: Tree,
  out: string,
  options: SquashfsWriteOptions = {},
): Promise<SquashfsWriteResult> {
  const opts = validate(options);
  const { blockSize } = opts;
  const entries = [...walk(tree)];
  const inodes = [...new Set(entries.map((e) => e.inode))];

  for (const inode of inodes) {
    for (const name of inode.xattrs.keys()) {
      if (opts.xattrs && !XATTR_PREFIXES.some((p) => name.startsWith(p))) {
        throw new SquashfsError(
          'SQUASHFS_UNREPRESENTABLE',
          `squashfs cannot store the xattr ${name} (only user., trusted., security.)`,
          {
            subject: name,
          },
        );
      }
    }
  }

  // Duplicate files, found as mksquashfs does: same size, then same content. Files larger than
  // a block are hashed now; smaller ones from the bytes read to write them.
  const files = inodes.filter((i): i is Extract<Inode, { type: 'file' }> => i.type === 'file');
  const filesOfSize = new Map<number, number>();
  for (const f of files) filesOfSize.set(f.content.size, (filesOfSize.get(f.content.size) ?? 0) + 1);
  const mayDuplicate = (size: number) => opts.duplicates && size > 0 && filesOfSize.get(size)! > 1;
  const firstWithContent = new Map<string, Inode>();
  /** The earlier file with these bytes, or undefined when `inode` is the first. */
  const earlierCopy = (inode: Inode, size: number, digest: string): Inode | undefined => {
    const key = `${size}:${digest}`;
    const first = firstWithContent.get(key);
    if (!first) firstWithContent.set(key, inode);
    return first;
  };
  const duplicateOf = new Map<Inode, Inode>();
  for (const f of files) {
    if (f.content.size <= blockSize || !mayDuplicate(f.content.size)) continue;
    const first = earlierCopy(f, f.content.size, await contentHash(f));
    if (first) duplicateOf.set(f, first);
  }

  const mkfsTime =
    options.mkfsTime ??
    (process.env.SOURCE_DATE_EPOCH
      ? Number(process.env.SOURCE_DATE_EPOCH)
      : Math.max(0, ...inodes.map((i) => i.mtime.sec)));

  return writeAtomic(out, async (handle) => {
    const codecs = blockCodecs(opts.compression, opts.level, blockSize, opts.xzFilters);
    const optionsBlock = compressorOptions(opts.compression, opts.level, blockSize, opts.xzFilters);
    // The options block (a metadata block stored uncompressed) sits between superblock and data.
    if (optionsBlock) {
      const header = Buffer.alloc(2);
      header.writeUInt16LE(optionsBlock.length | METADATA_UNCOMPRESSED);
      await writeFully(handle, Buffer.concat([header, optionsBlock]), SUPERBLOCK_SIZE);
    }
    const dataStart = SUPERBLOCK_SIZE + (optionsBlock ? 2 + optionsBlock.length : 0);
    const data = new DataWriter(handle, dataStart, codecs.data, blockSize);
    const fileData = new Map<Inode, FileData>();
    const fragmentEntries: { start: number; size: number }[] = [];
    let fragment = Buffer.allocUnsafeSlow(blockSize);
    let fragmentUsed = 0;
    const flushFragment = async () => {
      if (fragmentUsed === 0) return;
      const index = fragmentEntries.length;
      fragmentEntries.push({ start: 0, size: 0 });
      const block = fragment.subarray(0, fragmentUsed);
      fragment = Buffer.allocUnsafeSlow(blockSize);
      fragmentUsed = 0;
      await data.submit(block, (size, position) => {
        fragmentEntries[index] = { start: position, size };
      });
    };

    for (const inode of files) {
      const size = inode.content.size;
      const earlier = duplicateOf.get(inode);
      if (earlier) {
        fileData.set(inode, fileData.get(earlier)!);
        continue;
      }
      const useFragment =
        opts.fragments && size > 0 && (size < blockSize || (opts.tailEnds && size % blockSize !== 0));
      const fullBlocks = useFragment ? Math.floor(size / blockSize) : Math.ceil(size / blockSize);
      const record: FileData = {
        blocksStart: 0,
        blockSizes: [],
        fragment: INVALID_FRAGMENT,
        fragmentOffset: 0,
        sparseBytes: 0,
      };
      fileData.set(inode, record);
      /** Whether this file (of at most one block) repeats an earlier one, which it then shares. */
      const isCopy = (bytes: Uint8Array) => {
        if (size > blockSize || !mayDuplicate(size)) return false;
        const first = earlierCopy(inode, size, hash('sha256', bytes));
        if (first) fileData.set(inode, fileData.get(first)!);
        return first !== undefined;
      };
      const reader = contentReader(inode.content);
      try {
        let firstPositioned = false;
        for (let i = 0; i < fullBlocks; i++) {
          // A fresh buffer per block: it stays queued until written.
          const block = Buffer.allocUnsafeSlow(Math.min(blockSize, size - i * blockSize));
          await reader.readInto(block);
          options.onProgress?.(block.length);
          if (i === 0 && isCopy(block)) break;
          record.blockSizes.push(0);
          if (data.isZero(block)) {
            record.sparseBytes += block.length;
            continue;
          }
          await data.submit(block, (stored, position) => {
            record.blockSizes[i] = stored;
            if (!firstPositioned) {
              firstPositioned = true;
              // Sparse blocks before the first stored one take no room: start where it lands.
              record.blocksStart = position;
            }
          });
        }
        const tail = useFragment ? size % blockSize : 0;
        if (tail === 0) continue;
        // The tail is read straight into the current fragment block when it fits there.
        const fits = fragmentUsed + tail <= blockSize;
        const bytes = fits ? fragment.subarray(fragmentUsed, fragmentUsed + tail) : Buffer.allocUnsafe(tail);
        await reader.readInto(bytes);
        options.onProgress?.(tail);
        if (isCopy(bytes)) continue;
        if (!fits) {
          await flushFragment();
          fragment.set(bytes);
        }
        record.fragment = fragmentEntries.length;
        record.fragmentOffset = fragmentUsed;
        fragmentUsed += tail;
      } finally {
        reader.close();
      }
    }
    await flushFragment();
    await data.flush();
    const dataEnd = data.position;

    // Ids.
    const ids: number[] = [];
    const idIndex = new Map<number, number>();
    const idOf = (id: number) => {
      const v = opts.allRoot ? 0 : id;
      let i = idIndex.get(v);
      if (i === undefined) {
        i = ids.length;
        ids.push(v);
        idIndex.set(v, i);
        if (ids.length > 65536)
          throw new SquashfsError('SQUASHFS_UNREPRESENTABLE', 'more than 65536 distinct uids/gids');
      }
      return i;
    };

    // Xattr sets, shared between inodes with equal sets.
    const xattrKv = new MetadataWriter(codecs.metadata);
    const xattrIds: { ref: bigint; count: number; size: number }[] = [];
    const xattrSetIndex = new Map<string, number>();
    const xattrOf = (inode: Inode): number => {
      if (!opts.xattrs || inode.xattrs.size === 0) return INVALID_XATTR;
      const sorted = [...inode.xattrs].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const key = sorted.map(([k, v]) => `${k}\0${Buffer.from(v).toString('hex')}`).join('\n');
      let idx = xattrSetIndex.get(key);
      if (idx !== undefined) return idx;
      const pos = xattrKv.position();
      let size = 0;
      for (const [name, value] of sorted) {
        const type = XATTR_PREFIXES.findIndex((p) => name.startsWith(p));
        const short = Buffer.from(name.slice(XATTR_PREFIXES[type]!.length), 'latin1');
        const head = Buffer.alloc(4);
        head.writeUInt16LE(type, 0);
        head.writeUInt16LE(short.length, 2);
        const vhead = Buffer.alloc(4);
        vhead.writeUInt32LE(value.length, 0);
        xattrKv.write(head);
        xattrKv.write(short);
        xattrKv.write(vhead);
        xattrKv.write(value);
        size += short.length + value.length;
      }
      idx = xattrIds.length;
      xattrIds.push({ ref: packRef(pos.block, pos.offset), count: sorted.length, size });
      xattrSetIndex.set(key, idx);
      return idx;
    };

    // Inode numbers: post-order (children before their directory), hardlinks numbered once.
    const numbers = new Map<Inode, number>();
    const numberTree = (dir: DirInode) => {
      for (const [, child] of sortedChildren(dir)) {
        if (child.type === 'dir') numberTree(child);
        else if (!numbers.has(child)) numbers.set(child, numbers.size + 1);
      }
      numbers.set(dir, numbers.size + 1);
    };
    numberTree(tree.root);
    const inodeCount = numbers.size;
    const nlinks = linkCounts(tree);

    const inodeTable = new MetadataWriter(codecs.metadata);
    const dirTable = new MetadataWriter(codecs.metadata);
    const refs = new Map<Inode, { block: number; offset: number }>();
    const exportRefs: bigint[] = new Array(inodeCount).fill(0n);

    const header = (type: number, inode: Inode) => {
      const b = Buffer.alloc(16);
      b.writeUInt16LE(type, 0);
      b.writeUInt16LE(inode.mode & 0o7777, 2);
      b.writeUInt16LE(idOf(inode.uid), 4);
      b.writeUInt16LE(idOf(inode.gid), 6);
      b.writeUInt32LE(Math.max(0, Math.min(0xffffffff, inode.mtime.sec)), 8);
      b.writeUInt32LE(numbers.get(inode)!, 12);
      return b;
    };
    const emit = (inode: Inode, body: Buffer) => {
      const pos = inodeTable.position();
      refs.set(inode, pos);
      exportRefs[numbers.get(inode)! - 1] = packRef(pos.block, pos.offset);
      inodeTable.write(body);
    };

    const writeLeaf = (inode: Exclude<Inode, DirInode>) => {
      const xattr = xattrOf(inode);
      const nlink = nlinks.get(inode) ?? 1;
      switch (inode.type) {
        case 'file': {
          const fd = fileData.get(inode)!;
          const size = inode.content.size;
          // Files without stored blocks (empty, fragment-only, all sparse) keep start 0.
          const start = fd.blocksStart;
          const list = Buffer.alloc(4 * fd.blockSizes.length);
          fd.blockSizes.forEach((s, i) => {
            list.writeUInt32LE(s, 4 * i);
          });
          if (
            nlink === 1 &&
            xattr === INVALID_XATTR &&
            start < 2 ** 32 &&
            size < 2 ** 32 &&
            fd.sparseBytes === 0
          ) {
            const b = Buffer.alloc(16);
            b.writeUInt32LE(start, 0);
            b.writeUInt32LE(fd.fragment, 4);
            b.writeUInt32LE(fd.fragmentOffset, 8);
            b.writeUInt32LE(size, 12);
            emit(inode, Buffer.concat([header(InodeType.file, inode), b, list]));
          } else {
            const b = Buffer.alloc(40);
            b.writeBigUInt64LE(BigInt(start), 0);
            b.writeBigUInt64LE(BigInt(size), 8);
            b.writeBigUInt64LE(BigInt(fd.sparseBytes), 16);
            b.writeUInt32LE(nlink, 24);
            b.writeUInt32LE(fd.fragment, 28);
            b.writeUInt32LE(fd.fragmentOffset, 32);
            b.writeUInt32LE(xattr, 36);
            emit(inode, Buffer.concat([header(InodeType.extFile, inode), b, list]));
          }
          return;
        }
        case 'symlink': {
          const target = Buffer.from(inode.target, 'latin1');
          const b = Buffer.alloc(8);
          b.writeUInt32LE(nlink, 0);
          b.writeUInt32LE(target.length, 4);
          const tail = Buffer.alloc(xattr === INVALID_XATTR ? 0 : 4);
          if (tail.length) tail.writeUInt32LE(xattr, 0);
          emit(
            inode,
            Buffer.concat([
              header(tail.length ? InodeType.extSymlink : InodeType.symlink, inode),
              b,
              target,
              tail,
            ]),
          );
          return;
        }
        case 'char':
        case 'block': {
          const ext = xattr !== INVALID_XATTR;
          const b = Buffer.alloc(ext ? 12 : 8);
          b.writeUInt32LE(nlink, 0);
          b.writeUInt32LE(encodeDevice(inode.rdev), 4);
          if (ext) b.writeUInt32LE(xattr, 8);
          const type =
            inode.type === 'char'
              ? ext
                ? InodeType.extChar
                : InodeType.char
              : ext
                ? InodeType.extBlock
                : InodeType.block;
          emit(inode, Buffer.concat([header(type, inode), b]));
          return;
        }
        case 'fifo':
        case 'socket': {
          const ext = xattr !== INVALID_XATTR;
          const b = Buffer.alloc(ext ? 8 : 4);
          b.writeUInt32LE(nlink, 0);
          if (ext) b.writeUInt32LE(xattr, 4);
          const type =
            inode.type === 'fifo'
              ? ext
                ? InodeType.extFifo
                : InodeType.fifo
              : ext
                ? InodeType.extSocket
                : InodeType.socket;
          emit(inode, Buffer.concat([header(type, inode), b]));
          return;
        }
      }
    };

    const basicType = (inode: Inode): number =>
      ({ dir: 1, file: 2, symlink: 3, block: 4, char: 5, fifo: 6, socket: 7 })[inode.type];

    const writeDir = (dir: DirInode, parentNumber: number) => {
      const children = sortedChildren(dir);
      for (const [, child] of children) {
        if (child.type === 'dir') writeDir(child, numbers.get(dir)!);
        else if (!refs.has(child)) writeLeaf(child);
      }
      // The listing: runs of entries under headers; a run shares its inode metadata block,
      // holds at most 256 entries and inode numbers within ±32767 of its base.
      const listingStart = dirTable.position();
      const startLength = dirTable.length;
      const index: { offset: number; block: number; name: Buffer }[] = [];
      let lastIndexBlock = listingStart.block;
      let run: { block: number; base: number; entries: Buffer[]; names: Buffer[] } | undefined;
      const flushRun = () => {
        if (!run) return;
        const pos = dirTable.position();
        if (pos.block !== lastIndexBlock) {
          index.push({ offset: dirTable.length - startLength, block: pos.block, name: run.names[0]! });
          lastIndexBlock = pos.block;
        }
        const h = Buffer.alloc(12);
        h.writeUInt32LE(run.entries.length - 1, 0);
        h.writeUInt32LE(run.block, 4);
        h.writeUInt32LE(run.base, 8);
        dirTable.write(h);
        for (const e of run.entries) dirTable.write(e);
        run = undefined;
      };
      for (const [name, child] of children) {
        const ref = refs.get(child)!;
        const number = numbers.get(child)!;
        if (
          !run ||
          run.block !== ref.block ||
          run.entries.length === DIR_HEADER_MAX_ENTRIES ||
          Math.abs(number - run.base) > 32767
        ) {
          flushRun();
          run = { block: ref.block, base: number, entries: [], names: [] };
        }
        const nameBytes = Buffer.from(name, 'latin1');
        const e = Buffer.alloc(8);
        e.writeUInt16LE(ref.offset, 0);
        e.writeInt16LE(number - run.base, 2);
        e.writeUInt16LE(basicType(child), 4);
        e.writeUInt16LE(nameBytes.length - 1, 6);
        run.entries.push(Buffer.concat([e, nameBytes]));
        run.names.push(nameBytes);
      }
      flushRun();
      const listingSize = dirTable.length - startLength;
      const fileSize = listingSize + 3;
      const xattr = xattrOf(dir);
      const nlink = nlinks.get(dir) ?? 2;
      if (xattr === INVALID_XATTR && index.length === 0 && fileSize <= 0xffff) {
        const b = Buffer.alloc(16);
        b.writeUInt32LE(listingStart.block, 0);
        b.writeUInt32LE(nlink, 4);
        b.writeUInt16LE(fileSize, 8);
        b.writeUInt16LE(listingStart.offset, 10);
        b.writeUInt32LE(parentNumber, 12);
        emit(dir, Buffer.concat([header(InodeType.dir, dir), b]));
      } else {
        const b = Buffer.alloc(24);
        b.writeUInt32LE(nlink, 0);
        b.writeUInt32LE(fileSize, 4);
        b.writeUInt32LE(listingStart.block, 8);
        b.writeUInt32LE(parentNumber, 12);
        b.writeUInt16LE(index.length, 16);
        b.writeUInt16LE(listingStart.offset, 18);
        b.writeUInt32LE(xattr, 20);
        const parts: Buffer[] = [header(InodeType.extDir, dir), b];
        for (const i of index) {
          const ib = Buffer.alloc(12);
          ib.writeUInt32LE(i.offset, 0);
          ib.writeUInt32LE(i.block, 4);
          ib.writeUInt32LE(i.name.length - 1, 8);
          parts.push(ib, i.name);
        }
        emit(dir, Buffer.concat(parts));
      }
    };
    writeDir(tree.root, inodeCount + 1);
    const rootRef = refs.get(tree.root)!;

    // Tables after the data, in mksquashfs's order.
    let position = dataEnd;
    const put = async (bytes: Uint8Array) => {
      const at = position;
      await writeFully(handle, bytes, at);
      position += bytes.length;
      return at;
    };
    /** A table of fixed-size entries in metadata blocks, followed by its u64 block index. */
    const putIndexedTable = async (
      entrySize: number,
      count: number,
      fill: (b: Buffer, i: number) => void,
    ) => {
      const w = new MetadataWriter(codecs.metadata);
      for (let i = 0; i < count; i++) {
        const b = Buffer.alloc(entrySize);
        fill(b, i);
        w.write(b);
      }
      const stream = w.finish();
      const at = await put(stream);
      const indexBytes = Buffer.alloc(8 * w.blockStarts.length);
      w.blockStarts.forEach((s, i) => {
        indexBytes.writeBigUInt64LE(BigInt(at + s), 8 * i);
      });
      return { indexAt: await put(indexBytes) };
    };

    const inodeTableStart = await put(inodeTable.finish());
    const directoryTableStart = await put(dirTable.finish());
    let fragmentTableStart = INVALID_TABLE;
    if (fragmentEntries.length > 0) {
      const t = await putIndexedTable(16, fragmentEntries.length, (b, i) => {
        b.writeBigUInt64LE(BigInt(fragmentEntries[i]!.start), 0);
        b.writeUInt32LE(fragmentEntries[i]!.size, 8);
      });
      fragmentTableStart = BigInt(t.indexAt);
    }
    let exportTableStart = INVALID_TABLE;
    if (opts.exportable) {
      const t = await putIndexedTable(8, inodeCount, (b, i) => b.writeBigUInt64LE(exportRefs[i]!, 0));
      exportTableStart = BigInt(t.indexAt);
    }
    const idTable = await putIndexedTable(4, ids.length, (b, i) => b.writeUInt32LE(ids[i]! >>> 0, 0));
    let xattrIdTableStart = INVALID_TABLE;
    if (xattrIds.length > 0) {
      const kvStart = await put(xattrKv.finish());
      const w = new MetadataWriter(codecs.metadata);
      for (const x of xattrIds) {
        const b = Buffer.alloc(16);
        b.writeBigUInt64LE(x.ref, 0);
        b.writeUInt32LE(x.count, 8);
        b.writeUInt32LE(x.size, 12);
        w.write(b);
      }
      const idsAt = await put(w.finish());
      const head = Buffer.alloc(16 + 8 * w.blockStarts.length);
      head.writeBigUInt64LE(BigInt(kvStart), 0);
      head.writeUInt32LE(xattrIds.length, 8);
      w.blockStarts.forEach((s, i) => {
        head.writeBigUInt64LE(BigInt(idsAt + s), 16 + 8 * i);
      });
      xattrIdTableStart = BigInt(await put(head));
    }
    const bytesUsed = position;

    let flags = 0;
    if (opts.compression === 'none') {
      flags |= Flag.UNCOMPRESSED_INODES | Flag.UNCOMPRESSED_DATA | Flag.UNCOMPRESSED_FRAGMENTS;
      flags |= Flag.UNCOMPRESSED_XATTRS | Flag.UNCOMPRESSED_IDS;
    }
    if (!opts.fragments) flags |= Flag.NO_FRAGMENTS;
    if (opts.tailEnds) flags |= Flag.ALWAYS_FRAGMENTS;
    if (opts.duplicates) flags |= Flag.DUPLICATES;
    if (opts.exportable) flags |= Flag.EXPORTABLE;
    if (xattrIds.length === 0) flags |= Flag.NO_XATTRS;
    if (optionsBlock) flags |= Flag.COMPRESSOR_OPTIONS;

    await writeFully(
      handle,
      encodeSuperblock({
        inodeCount,
        mkfsTime,
        blockSize,
        fragmentCount: fragmentEntries.length,
        compressor: compressorId(opts.compression),
        blockLog: Math.log2(blockSize),
        flags,
        idCount: ids.length,
        versionMajor: 4,
        versionMinor: 0,
        rootInode: packRef(rootRef.block, rootRef.offset),
        bytesUsed: BigInt(bytesUsed),
        idTableStart: BigInt(idTable.indexAt),
        xattrIdTableStart,
        inodeTableStart: BigInt(inodeTableStart),
        directoryTableStart: BigInt(directoryTableStart),
        fragmentTableStart,
        exportTableStart,
      }),
      0,
    );
    // Padded to 4 KiB, as mksquashfs does (loop devices and the verity layout rely on it).
    const size = Math.ceil(bytesUsed / 4096) * 4096;
    await handle.truncate(size);
    return { bytesUsed, inodes: inodeCount, size };
  });
}
