/**
 * EROFS image writer (uncompressed, 4 KiB blocks). One layout engine serves plain EROFS images
 * and composefs metadata images, and follows libcomposefs's placement rules so that composefs
 * images come out bit-identical to mkcomposefs:
 *
 * - inodes are numbered breadth-first from the root, children sorted bytewise, and packed
 *   right after the superblock on 32-byte slots; an inode is compact (32 bytes) when its mtime
 *   equals the image's build time (the oldest mtime) and its numbers fit, else extended;
 * - directory blocks, symlink targets and file tails up to half a block are stored inline after
 *   the inode (padding is inserted so a tail never straddles a block), everything else in
 *   whole blocks of the data area;
 * - xattrs used by more than one inode go to the shared table, which follows the inodes.
 *
 * File contents of plain images are streamed (never held in memory) into the data area after
 * the blocks known at layout time; with `chunkBits` they are chunk-based, all-zero chunks
 * becoming holes.
 */
import { contentReader } from '../tree/content.ts';
import { type Content, type Timestamp, typeFromMode } from '../tree/model.ts';
import {
  alignUp,
  BLOCK_BITS,
  BLOCK_SIZE,
  CHUNK_BLKBITS_MASK,
  COMPACT_INODE_SIZE,
  DIRENT_SIZE,
  ErofsError,
  EXTENDED_INODE_SIZE,
  encodeSuperblock,
  FeatureCompat,
  FeatureIncompat,
  FileType,
  Layout,
  MAX_SHARED_PER_INODE,
  NULL_ADDR,
  SLOT_SIZE,
  SUPER_OFFSET,
  SUPERBLOCK_SIZE,
  XATTR_ENTRY_SIZE,
  XATTR_FILTER_SEED,
  XATTR_IBODY_HEADER_SIZE,
  xattrEntrySize,
  xattrNameIndex,
} from './format.ts';
import { xxh32 } from './xxh32.ts';

export interface ErofsXattr {
  /** Full name with its namespace, a byte string. */
  name: string;
  value: Uint8Array;
}

/** Regular-file data: held in memory, streamed from a content, or external (composefs). */
export type ErofsFileData =
  | { kind: 'bytes'; bytes: Uint8Array }
  | { kind: 'content'; content: Content }
  | { kind: 'external'; size: number };

export interface ErofsDirEntry {
  /** Byte string. */
  name: string;
  node: ErofsNode;
  /** A further name of a node that is stored under another entry (a hardlink). */
  link?: boolean;
}

export interface ErofsNode {
  /** st_mode, type bits included. */
  mode: number;
  uid: number;
  gid: number;
  /** Link count of non-directories (directories get 2 + subdirectories). */
  nlink: number;
  mtime: Timestamp;
  /** Encoded device number of character and block devices. */
  rdev: number;
  xattrs: ErofsXattr[];
  /** Directory entries other than `.` and `..`. */
  children?: ErofsDirEntry[];
  /** Symlink target, a byte string. */
  symlink?: string;
  data?: ErofsFileData;
}

export interface ErofsWriteOptions {
  /** Bytes placed at offset 0, before the superblock (the composefs header). */
  header?: Uint8Array;
  /** Store streamed file contents chunk-based with chunks of 2^chunkBits bytes (12..43). */
  chunkBits?: number;
  /** Called with the number of file bytes written. */
  onProgress?: (bytes: number) => void;
}

/** Where the image bytes go; writes may come in any order. */
export interface ErofsSink {
  write(data: Uint8Array, position: number): Promise<void>;
  /** Sets the final size; bytes never written read as zeros. */
  finish(size: number): Promise<void>;
}

export interface ErofsWriteResult {
  /** Image size in bytes. */
  size: number;
  inodes: number;
  blocks: number;
}

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const HALF_BLOCK = BLOCK_SIZE / 2;

const fileType = (node: ErofsNode) => FileType[typeFromMode(node.mode) ?? 'unknown'];

/** The layout of one inode. */
interface Placed {
  node: ErofsNode;
  /** Entries with `.` and `..`, sorted. */
  entries: ErofsDirEntry[];
  index: number;
  nid: number;
  position: number;
  padding: number;
  compact: boolean;
  size: number;
  blocks: number;
  tailSize: number;
  xattrSize: number;
  shared: number[];
  unshared: ErofsXattr[];
  /** Data-area block address of the first block (static blocks) or chunk addresses. */
  blockAddr: number;
  chunkBits: number;
  chunkCount: number;
  chunkAddrs?: number[];
  tail?: Uint8Array;
}

const typeOf = (node: ErofsNode) => node.mode & S_IFMT;
const byteLength = (s: string) => s.length; // byte strings: one char per byte
const latin1 = (s: string) => Buffer.from(s, 'latin1');

function fileSize(node: ErofsNode): number {
  const data = node.data;
  if (!data) return 0;
  return data.kind === 'bytes' ? data.bytes.length : data.kind === 'content' ? data.content.size : data.size;
}

/** Chunk size for a single-chunk external file, as libcomposefs picks it. */
export function externalChunkBits(size: number): number {
  let bits = size <= 1 ? 0 : Math.ceil(Math.log2(size));
  while (2 ** bits < size) bits++;
  while (bits > 0 && 2 ** (bits - 1) >= size) bits--;
  return Math.min(Math.max(bits, BLOCK_BITS), BLOCK_BITS + CHUNK_BLKBITS_MASK);
}

function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareXattrsDescending(a: ErofsXattr, b: ErofsXattr): number {
  if (a.name !== b.name) return compareNames(b.name, a.name);
  if (a.value.length !== b.value.length) return b.value.length - a.value.length;
  return Buffer.compare(b.value, a.value);
}

const xattrKey = (x: ErofsXattr) => `${x.name}\0${Buffer.from(x.value).toString('latin1')}`;

/** Breadth-first order of the stored nodes (hardlinks and `.`/`..` are not stored twice). */
function breadthFirst(root: ErofsNode): Placed[] {
  const placed: Placed[] = [];
  const parents = new Map<ErofsNode, ErofsNode>([[root, root]]);
  const queue: ErofsNode[] = [root];
  const seen = new Set<ErofsNode>([root]);
  for (let i = 0; i < queue.length; i++) {
    const node = queue[i]!;
    const isDir = typeOf(node) === S_IFDIR;
    if (!isDir && node.children?.length) {
      throw new ErofsError('EROFS_UNREPRESENTABLE', 'only directories can have children');
    }
    const entries: ErofsDirEntry[] = [];
    if (isDir) {
      const names = new Set<string>();
      const children = [...(node.children ?? [])].sort((a, b) => compareNames(a.name, b.name));
      for (const entry of children) {
        if (entry.name === '' || entry.name === '.' || entry.name === '..' || entry.name.includes('/')) {
          throw new ErofsError('EROFS_UNREPRESENTABLE', `invalid file name ${JSON.stringify(entry.name)}`, {
            subject: entry.name,
          });
        }
        if (byteLength(entry.name) > 255) {
          throw new ErofsError('EROFS_UNREPRESENTABLE', 'file name longer than 255 bytes', {
            subject: entry.name,
          });
        }
        if (names.has(entry.name)) {
          throw new ErofsError('EROFS_UNREPRESENTABLE', `duplicate name ${entry.name}`, {
            subject: entry.name,
          });
        }
        names.add(entry.name);
        entries.push(entry);
        if (entry.link) continue;
        if (seen.has(entry.node))
          throw new ErofsError('EROFS_UNREPRESENTABLE', `${entry.name} is stored twice`);
        if (typeOf(entry.node) === S_IFDIR) parents.set(entry.node, node);
        seen.add(entry.node);
        queue.push(entry.node);
      }
      entries.push({ name: '.', node, link: true }, { name: '..', node: parents.get(node)!, link: true });
      entries.sort((a, b) => compareNames(a.name, b.name));
    }
    placed.push({
      node,
      entries,
      index: i,
      nid: 0,
      position: 0,
      padding: 0,
      compact: false,
      size: 0,
      blocks: 0,
      tailSize: 0,
      xattrSize: 0,
      shared: [],
      unshared: [],
      blockAddr: 0,
      chunkBits: 0,
      chunkCount: 0,
    });
  }
  for (const p of placed) {
    for (const entry of p.entries) {
      if (entry.link && !seen.has(entry.node)) {
        throw new ErofsError('EROFS_UNREPRESENTABLE', `hardlink ${entry.name} points outside the tree`, {
          subject: entry.name,
        });
      }
      if (entry.link && entry.name !== '.' && entry.name !== '..' && typeOf(entry.node) === S_IFDIR) {
        throw new ErofsError('EROFS_UNREPRESENTABLE', `directories cannot be hardlinked (${entry.name})`, {
          subject: entry.name,
        });
      }
    }
  }
  return placed;
}

/** Shared xattr table: (name, value) pairs used by more than one inode, in canonical order. */
function shareXattrs(placed: Placed[]): { table: ErofsXattr[]; offsets: Map<string, number>; size: number } {
  const uses = new Map<string, { xattr: ErofsXattr; count: number }>();
  for (const p of placed) {
    for (const x of p.node.xattrs) {
      const key = xattrKey(x);
      const entry = uses.get(key);
      if (entry) entry.count++;
      else uses.set(key, { xattr: x, count: 1 });
    }
  }
  const table = [...uses.values()]
    .filter((u) => u.count > 1)
    .map((u) => u.xattr)
    .sort(compareXattrsDescending);
  const offsets = new Map<string, number>();
  let size = 0;
  for (const x of table) {
    offsets.set(xattrKey(x), size);
    size += xattrEntrySize(x.name, x.value.length);
  }
  return { table, offsets, size };
}

function directoryLayout(p: Placed): void {
  let blocks = 0;
  let used = 0;
  for (const entry of p.entries) {
    const length = DIRENT_SIZE + byteLength(entry.name);
    if (used + length > BLOCK_SIZE) {
      blocks++;
      used = 0;
    }
    used += length;
  }
  // Never inline more than half a block of entries.
  if (used > HALF_BLOCK) {
    blocks++;
    used = 0;
  }
  p.blocks = blocks;
  p.tailSize = used;
}

/** Padding before an inode at `position` so that its inline tail does not cross a block. */
function tailPadding(p: Placed, position: number, inodeSize: number): number {
  const total = inodeSize + p.xattrSize + p.tailSize;
  // A chunk index of a streamed file may span blocks: the kernel reads its entries one by one.
  if (p.chunkCount > 0 && p.node.data?.kind === 'content') return 0;
  if (typeOf(p.node) === S_IFLNK) {
    // A symlink keeps its target next to the inode, or moves it to a block if it cannot.
    if (Math.floor(total / BLOCK_SIZE) > 0) {
      p.blocks++;
      p.tailSize = 0;
    }
    return Math.floor(position / BLOCK_SIZE) !== Math.floor((position + total - 1) / BLOCK_SIZE)
      ? alignUp(position, BLOCK_SIZE) - position
      : 0;
  }
  const beforeTail = inodeSize + p.xattrSize;
  const room = BLOCK_SIZE - ((position + beforeTail) % BLOCK_SIZE);
  if (room >= p.tailSize) return 0;
  const padding = alignUp(room, SLOT_SIZE);
  if (p.tailSize <= BLOCK_SIZE - ((position + beforeTail + padding) % BLOCK_SIZE)) return padding;
  p.blocks++;
  p.tailSize = 0;
  return alignUp(position, BLOCK_SIZE) - position;
}

function xattrFilter(xattrs: ErofsXattr[]): number {
  let bits = 0;
  for (const x of xattrs) {
    const [index, suffix] = xattrNameIndex(x.name);
    bits |= 1 << (xxh32(latin1(suffix), (XATTR_FILTER_SEED + index) >>> 0) & 31);
  }
  return ~bits >>> 0;
}

function encodeXattr(x: ErofsXattr): Buffer {
  const [index, suffix] = xattrNameIndex(x.name);
  if (suffix.length > 255) throw new ErofsError('EROFS_UNREPRESENTABLE', `xattr name too long: ${x.name}`);
  if (x.value.length > 0xffff)
    throw new ErofsError('EROFS_UNREPRESENTABLE', `xattr value too long: ${x.name}`);
  const b = Buffer.alloc(xattrEntrySize(x.name, x.value.length));
  b.writeUInt8(suffix.length, 0);
  b.writeUInt8(index, 1);
  b.writeUInt16LE(x.value.length, 2);
  b.write(suffix, XATTR_ENTRY_SIZE, 'latin1');
  b.set(x.value, XATTR_ENTRY_SIZE + suffix.length);
  return b;
}

/** Directory entry blocks: whole blocks plus the (possibly empty) inline tail. */
function directoryBlocks(p: Placed, nidOf: (node: ErofsNode) => number): { blocks: Buffer[]; tail: Buffer } {
  const groups: ErofsDirEntry[][] = [[]];
  let used = 0;
  for (const entry of p.entries) {
    const length = DIRENT_SIZE + byteLength(entry.name);
    if (used + length > BLOCK_SIZE) {
      groups.push([]);
      used = 0;
    }
    groups.at(-1)!.push(entry);
    used += length;
  }
  const encode = (group: ErofsDirEntry[], size: number) => {
    const b = Buffer.alloc(size);
    let nameOffset = group.length * DIRENT_SIZE;
    group.forEach((entry, i) => {
      b.writeBigUInt64LE(BigInt(nidOf(entry.node)), i * DIRENT_SIZE);
      b.writeUInt16LE(nameOffset, i * DIRENT_SIZE + 8);
      b.writeUInt8(fileType(entry.node), i * DIRENT_SIZE + 10);
      nameOffset += b.write(entry.name, nameOffset, 'latin1');
    });
    return b;
  };
  const blocks = groups.slice(0, p.blocks).map((g) => encode(g, BLOCK_SIZE));
  const rest = groups.slice(p.blocks).flat();
  return { blocks, tail: rest.length ? encode(rest, p.tailSize) : Buffer.alloc(0) };
}

/** Lays out and writes the tree rooted at `root` as an EROFS image into `sink`. */
export async function writeErofsImage(
  root: ErofsNode,
  sink: ErofsSink,
  options: ErofsWriteOptions = {},
): Promise<ErofsWriteResult> {
  if (typeOf(root) !== S_IFDIR) throw new ErofsError('EROFS_UNREPRESENTABLE', 'the root must be a directory');
  const chunkBits = options.chunkBits;
  if (chunkBits !== undefined && !(chunkBits >= BLOCK_BITS && chunkBits <= BLOCK_BITS + CHUNK_BLKBITS_MASK)) {
    throw new ErofsError('EROFS_INVALID_OPTION', 'chunk size must be a power of two from 4 KiB');
  }
  const placed = breadthFirst(root);
  const byNode = new Map(placed.map((p) => [p.node, p]));
  const nidOf = (node: ErofsNode) => byNode.get(node)!.nid;

  // The build time is the oldest mtime; inodes with exactly that mtime can be compact.
  let build = root.mtime;
  for (const { node } of placed) {
    const t = node.mtime;
    if (t.sec < build.sec || (t.sec === build.sec && t.nsec < build.nsec)) build = t;
  }

  const shared = shareXattrs(placed);
  let usesChunks = false;

  // Inode placement.
  let position = SUPER_OFFSET + SUPERBLOCK_SIZE;
  const metaStart = Math.floor(position / BLOCK_SIZE) * BLOCK_SIZE;
  let staticBlocks = 0;
  for (const p of placed) {
    const { node } = p;
    const type = typeOf(node);
    if (type === S_IFDIR) {
      directoryLayout(p);
      node.nlink = 2 + p.entries.filter((e) => !e.link && typeOf(e.node) === S_IFDIR).length;
    } else if (type === S_IFLNK) {
      p.tailSize = byteLength(node.symlink ?? '');
      if (p.tailSize === 0 || p.tailSize > BLOCK_SIZE) {
        throw new ErofsError('EROFS_UNREPRESENTABLE', 'symlink targets must be 1..4096 bytes');
      }
    } else if (type === S_IFREG && node.data && fileSize(node) > 0) {
      const size = fileSize(node);
      if (node.data.kind === 'external' || (node.data.kind === 'content' && chunkBits !== undefined)) {
        p.chunkBits = node.data.kind === 'external' ? externalChunkBits(size) : chunkBits!;
        p.chunkCount = Math.ceil(size / 2 ** p.chunkBits);
        // The chunk index follows the inode like a tail (4-byte entries never straddle a block).
        p.tailSize = p.chunkCount * 4;
        usesChunks = true;
      } else {
        p.blocks = Math.floor(size / BLOCK_SIZE);
        p.tailSize = size % BLOCK_SIZE;
        if (p.tailSize > HALF_BLOCK) {
          p.blocks++;
          p.tailSize = 0;
        }
      }
    }
    const size =
      type === S_IFDIR ? p.blocks * BLOCK_SIZE + p.tailSize : type === S_IFLNK ? p.tailSize : fileSize(node);
    p.compact =
      node.mtime.sec === build.sec &&
      node.mtime.nsec === build.nsec &&
      node.nlink <= 0xffff &&
      node.uid <= 0xffff &&
      node.gid <= 0xffff &&
      size <= 0xffffffff;
    const inodeSize = p.compact ? COMPACT_INODE_SIZE : EXTENDED_INODE_SIZE;

    const sorted = [...node.xattrs].sort((a, b) => compareNames(a.name, b.name));
    let unsharedSize = 0;
    for (const x of sorted) {
      const offset = shared.offsets.get(xattrKey(x));
      if (offset !== undefined && p.shared.length < MAX_SHARED_PER_INODE) p.shared.push(offset);
      else {
        p.unshared.push(x);
        unsharedSize += xattrEntrySize(x.name, x.value.length);
      }
    }
    p.xattrSize =
      sorted.length === 0 ? 0 : alignUp(XATTR_IBODY_HEADER_SIZE + p.shared.length * 4 + unsharedSize, 4);

    const aligned = alignUp(position, SLOT_SIZE);
    const extra = tailPadding(p, aligned, inodeSize);
    p.padding = aligned - position + extra;
    position = aligned + extra;
    p.position = position;
    p.nid = (position - metaStart) / SLOT_SIZE;
    p.size =
      type === S_IFDIR
        ? p.blocks * BLOCK_SIZE + p.tailSize
        : type === S_IFLNK
          ? byteLength(node.symlink ?? '')
          : type === S_IFREG
            ? fileSize(node)
            : 0;
    if (type === S_IFDIR || type === S_IFLNK || node.data?.kind !== 'content') staticBlocks += p.blocks;
    position += inodeSize + p.xattrSize + p.tailSize;
  }
  if (placed[0]!.nid > 0xffff) throw new ErofsError('EROFS_UNREPRESENTABLE', 'root inode out of reach');
  const inodesEnd = alignUp(position, SLOT_SIZE);
  const dataStart = alignUp(inodesEnd + shared.size, BLOCK_SIZE);

  // Static data blocks (directories, long symlinks, in-memory file data), breadth-first.
  let next = dataStart / BLOCK_SIZE;
  const staticWrites: [Uint8Array, number][] = [];
  const dirTails = new Map<Placed, Buffer>();
  for (const p of placed) {
    const type = typeOf(p.node);
    if (type === S_IFDIR) {
      const { blocks, tail } = directoryBlocks(p, nidOf);
      dirTails.set(p, tail);
      if (p.blocks > 0) p.blockAddr = next;
      for (const b of blocks) staticWrites.push([b, next++ * BLOCK_SIZE]);
    } else if (p.blocks > 0 && (type === S_IFLNK || p.node.data?.kind === 'bytes')) {
      const bytes = type === S_IFLNK ? latin1(p.node.symlink!) : (p.node.data as { bytes: Uint8Array }).bytes;
      p.blockAddr = next;
      const body = bytes.subarray(0, p.blocks * BLOCK_SIZE);
      const padded = Buffer.alloc(p.blocks * BLOCK_SIZE);
      padded.set(body);
      staticWrites.push([padded, next * BLOCK_SIZE]);
      next += p.blocks;
      if (p.tailSize > 0) p.tail = bytes.subarray(p.blocks * BLOCK_SIZE);
    } else if (p.tailSize > 0 && p.node.data?.kind === 'bytes') {
      p.tail = p.node.data.bytes;
    } else if (p.blocks > 0 && p.node.data?.kind === 'external') {
      // A chunk index that does not fit after its inode goes to a block of null addresses, as
      // libcomposefs does (the inode keeps the chunk-based layout).
      p.blockAddr = next;
      staticWrites.push([Buffer.alloc(p.blocks * BLOCK_SIZE, 0xff), next * BLOCK_SIZE]);
      next += p.blocks;
    }
  }
  if (next - dataStart / BLOCK_SIZE !== staticBlocks)
    throw new Error('EROFS layout: static block count mismatch');

  // Streamed contents after the static blocks.
  for (const p of placed) {
    const data = p.node.data;
    if (typeOf(p.node) !== S_IFREG || data?.kind !== 'content' || data.content.size === 0) continue;
    next = await streamContent(p, data.content, next, sink, options.onProgress);
  }
  const totalBlocks = next;

  // Metadata: header, superblock, inodes with xattrs and tails, shared xattrs.
  const meta = Buffer.alloc(dataStart);
  if (options.header) meta.set(options.header, 0);
  encodeSuperblock({
    featureCompat: FeatureCompat.MTIME | FeatureCompat.XATTR_FILTER,
    featureIncompat: usesChunks && options.header === undefined ? FeatureIncompat.CHUNKED_FILE : 0,
    rootNid: placed[0]!.nid,
    inodes: BigInt(placed.length),
    buildTime: BigInt(build.sec),
    buildTimeNsec: build.nsec,
    blocks: totalBlocks,
    metaBlockAddr: metaStart / BLOCK_SIZE,
    xattrBlockAddr: Math.floor(inodesEnd / BLOCK_SIZE),
  }).copy(meta, SUPER_OFFSET);
  for (const p of placed) writeInode(meta, p, inodesEnd, dirTails.get(p));
  let xattrPosition = inodesEnd;
  for (const x of shared.table) {
    const b = encodeXattr(x);
    b.copy(meta, xattrPosition);
    xattrPosition += b.length;
  }
  await sink.write(meta, 0);
  for (const [block, at] of staticWrites) await sink.write(block, at);
  await sink.finish(totalBlocks * BLOCK_SIZE);
  return { size: totalBlocks * BLOCK_SIZE, inodes: placed.length, blocks: totalBlocks };
}

function writeInode(meta: Buffer, p: Placed, inodesEnd: number, dirTail: Buffer | undefined): void {
  const { node } = p;
  const type = typeOf(node);
  const layout =
    p.chunkCount > 0 ? Layout.CHUNK_BASED : p.tailSize > 0 ? Layout.FLAT_INLINE : Layout.FLAT_PLAIN;
  const format = (layout << 1) | (p.compact ? 0 : 1);
  const xattrCount = p.xattrSize === 0 ? 0 : (p.xattrSize - XATTR_IBODY_HEADER_SIZE) / 4 + 1;
  let u = 0;
  if (type === S_IFCHR || type === S_IFBLK) u = node.rdev >>> 0;
  // The chunk format shares i_u with the block address; libcomposefs sets only its low half.
  else if (layout === Layout.CHUNK_BASED)
    u = ((p.blocks > 0 ? p.blockAddr & 0xffff0000 : 0) | (p.chunkBits - BLOCK_BITS)) >>> 0;
  else if (p.blocks > 0) u = p.blockAddr;
  let at = p.position;
  if (p.compact) {
    meta.writeUInt16LE(format, at);
    meta.writeUInt16LE(xattrCount, at + 2);
    meta.writeUInt16LE(node.mode & 0xffff, at + 4);
    meta.writeUInt16LE(node.nlink, at + 6);
    meta.writeUInt32LE(p.size, at + 8);
    meta.writeUInt32LE(u, at + 16);
    meta.writeUInt32LE(p.index, at + 20);
    meta.writeUInt16LE(node.uid, at + 24);
    meta.writeUInt16LE(node.gid, at + 26);
    at += COMPACT_INODE_SIZE;
  } else {
    meta.writeUInt16LE(format, at);
    meta.writeUInt16LE(xattrCount, at + 2);
    meta.writeUInt16LE(node.mode & 0xffff, at + 4);
    meta.writeBigUInt64LE(BigInt(p.size), at + 8);
    meta.writeUInt32LE(u, at + 16);
    meta.writeUInt32LE(p.index, at + 20);
    meta.writeUInt32LE(node.uid >>> 0, at + 24);
    meta.writeUInt32LE(node.gid >>> 0, at + 28);
    meta.writeBigInt64LE(BigInt(node.mtime.sec), at + 32);
    meta.writeUInt32LE(node.mtime.nsec, at + 40);
    meta.writeUInt32LE(node.nlink >>> 0, at + 44);
    at += EXTENDED_INODE_SIZE;
  }
  if (p.xattrSize > 0) {
    meta.writeUInt32LE(xattrFilter(node.xattrs), at);
    meta.writeUInt8(p.shared.length, at + 4);
    let x = at + XATTR_IBODY_HEADER_SIZE;
    for (const offset of p.shared) {
      meta.writeUInt32LE(((inodesEnd % BLOCK_SIZE) + offset) / 4, x);
      x += 4;
    }
    for (const xattr of p.unshared) x += encodeXattr(xattr).copy(meta, x);
    at += p.xattrSize;
  }
  if (type === S_IFDIR) dirTail?.copy(meta, at);
  else if (type === S_IFLNK && p.blocks === 0) meta.write(node.symlink!, at, 'latin1');
  else if (p.chunkCount > 0 && p.tailSize > 0) {
    for (let i = 0; i < p.chunkCount; i++) meta.writeUInt32LE(p.chunkAddrs?.[i] ?? NULL_ADDR, at + i * 4);
  } else if (p.tail) meta.set(p.tail, at);
}

/** Pieces a file's data is read and written in: large files are never held whole. */
const PIECE = 1 << 20;

/** Streams a file's content into the data area from block `next`; returns the next free block. */
async function streamContent(
  p: Placed,
  content: Content,
  next: number,
  sink: ErofsSink,
  onProgress: ((bytes: number) => void) | undefined,
): Promise<number> {
  const size = content.size;
  const chunked = p.chunkCount > 0;
  const unit = chunked ? 2 ** p.chunkBits : Number.POSITIVE_INFINITY;
  // Bytes stored in blocks (the last one zero-padded); the rest (a tail) is inlined after the inode.
  const stored = chunked ? size : Math.min(size, p.blocks * BLOCK_SIZE);
  if (chunked) p.chunkAddrs = [];
  else if (p.blocks > 0) {
    p.blockAddr = next;
    next += p.blocks;
  }
  // The chunk being filled: where it is stored, undefined while it has been all zeros (a hole).
  let chunkAddr: number | undefined;
  let chunkOffset = 0;
  const reader = contentReader(content);
  try {
    for (let offset = 0; offset < stored; ) {
      // A fresh buffer per piece: the sink keeps it until it is written.
      const piece = Buffer.allocUnsafe(Math.min(PIECE, stored - offset, unit - chunkOffset));
      await reader.readInto(piece);
      onProgress?.(piece.length);
      if (!chunked) {
        await sink.write(piece, p.blockAddr * BLOCK_SIZE + offset);
        offset += piece.length;
        continue;
      }
      if (chunkAddr === undefined && !isZero(piece)) {
        chunkAddr = next;
        next += Math.ceil(Math.min(unit, size - (offset - chunkOffset)) / BLOCK_SIZE);
      }
      if (chunkAddr !== undefined) await sink.write(piece, chunkAddr * BLOCK_SIZE + chunkOffset);
      chunkOffset += piece.length;
      offset += piece.length;
      if (chunkOffset === unit || offset === size) {
        p.chunkAddrs!.push(chunkAddr ?? NULL_ADDR);
        chunkAddr = undefined;
        chunkOffset = 0;
      }
    }
    // (A chunk-based inode's inline bytes are its chunk index, not data.)
    if (!chunked && p.tailSize > 0) {
      p.tail = Buffer.allocUnsafe(p.tailSize);
      await reader.readInto(p.tail);
      onProgress?.(p.tailSize);
    }
  } finally {
    reader.close();
  }
  return next;
}

const ZEROS = Buffer.alloc(1 << 16);

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i += ZEROS.length) {
    const part = b.subarray(i, i + ZEROS.length);
    if (!part.equals(ZEROS.subarray(0, part.length))) return false;
  }
  return true;
}
