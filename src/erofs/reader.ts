/**
 * EROFS reader: superblock, compact and extended inodes, directories, shared and inline xattrs,
 * and the flat-plain, flat-inline and chunk-based layouts (block maps and chunk indexes), plus
 * lz4-compressed files as `mkfs.erofs -zlz4` / `-zlz4hc` write them (decompress.ts). Every offset read from
 * the image is bounds-checked, so corrupt or hostile images give an ErofsError.
 */
import { closeSync, fstatSync, openSync } from 'node:fs';
import { fileRangeProblem, resolvePath } from '../tree/image-paths.ts';
import {
  type Content,
  type DeviceNumber,
  type DirInode,
  decodeDevice,
  type Inode,
  type InodeType,
  type Tree,
  typeFromMode,
} from '../tree/model.ts';
import { entryNameProblem, quoteBytes, xattrNameProblem } from '../tree/names.ts';
import { readFullySync } from '../util/read.ts';
import { readCompressed } from './decompress.ts';
import {
  CHUNK_BLKBITS_MASK,
  CHUNK_FORMAT_INDEXES,
  DIRENT_SIZE,
  decodeSuperblock,
  ErofsError,
  FeatureIncompat,
  Layout,
  NULL_ADDR,
  SUPER_OFFSET,
  SUPERBLOCK_SIZE,
  type Superblock,
  XATTR_ENTRY_SIZE,
  XATTR_IBODY_HEADER_SIZE,
  XATTR_INDEX_NAMES,
} from './format.ts';

export interface ErofsInode {
  nid: number;
  type: InodeType;
  /** st_mode with type bits. */
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  size: number;
  mtime: { sec: number; nsec: number };
  ino: number;
  layout: number;
  compact: boolean;
  /** i_u: block address, device number or chunk format. */
  raw: number;
  xattrCount: number;
  /** Byte position of the inode in the image and its header size. */
  position: number;
  inodeSize: number;
  xattrSize: number;
  rdev?: DeviceNumber;
  target?: string;
}

export interface ErofsDirEntry {
  name: string;
  nid: number;
  fileType: number;
}

const MAX_DEPTH = 4096;
const CACHE_PAGE = 4096;
const CACHE_PAGES = 64;

export class ErofsImage {
  readonly path: string;
  readonly superblock: Superblock;
  readonly blockSize: number;
  #fd: number;
  #size: number;
  #inodes = new Map<number, ErofsInode>();
  #pages = new Map<number, Buffer>();

  private constructor(path: string, fd: number, size: number, superblock: Superblock) {
    this.path = path;
    this.#fd = fd;
    this.#size = size;
    this.superblock = superblock;
    this.blockSize = 2 ** superblock.blockBits;
  }

  static open(path: string): ErofsImage {
    const fd = openSync(path, 'r');
    try {
      const size = fstatSync(fd).size;
      const head = Buffer.alloc(SUPERBLOCK_SIZE);
      if (size < SUPER_OFFSET + SUPERBLOCK_SIZE) {
        throw new ErofsError('EROFS_TRUNCATED', `${path} is too short for an EROFS image`, { subject: path });
      }
      readFullySync(fd, head, SUPER_OFFSET);
      const sb = decodeSuperblock(head, path);
      if (sb.blockBits < 9 || sb.blockBits > 16) {
        throw new ErofsError('EROFS_UNSUPPORTED', `${path}: block size 2^${sb.blockBits} is not supported`, {
          subject: path,
        });
      }
      const known =
        FeatureIncompat.ZERO_PADDING |
        FeatureIncompat.COMPR_CFGS |
        FeatureIncompat.CHUNKED_FILE |
        FeatureIncompat.ZTAILPACKING |
        // Deduplicated pclusters read like any other; files kept as fragments are refused when read.
        FeatureIncompat.FRAGMENTS;
      if (sb.featureIncompat & ~known) {
        throw new ErofsError(
          'EROFS_UNSUPPORTED',
          `${path}: unsupported EROFS features 0x${(sb.featureIncompat & ~known).toString(16)}`,
          { subject: path },
        );
      }
      return new ErofsImage(path, fd, size, sb);
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  close(): void {
    closeSync(this.#fd);
  }

  corrupt(what: string): never {
    throw new ErofsError('EROFS_CORRUPT', `${this.path}: ${what}`, { subject: this.path });
  }

  /** Reads `length` bytes at `position`, which must lie inside the image. */
  read(position: number, length: number): Buffer {
    if (!Number.isSafeInteger(position) || position < 0 || length < 0 || position + length > this.#size) {
      throw new ErofsError(
        'EROFS_TRUNCATED',
        `${this.path}: read of ${length} bytes at ${position} is past the end`,
        {
          subject: this.path,
        },
      );
    }
    // Metadata reads are small and clustered: serve them from a few cached 4 KiB pages.
    const page = Math.floor(position / CACHE_PAGE);
    if (length <= CACHE_PAGE && Math.floor((position + length - 1) / CACHE_PAGE) === page) {
      const cached = this.#page(page);
      const at = position - page * CACHE_PAGE;
      return Buffer.from(cached.subarray(at, at + length));
    }
    return this.#readRaw(position, length);
  }

  #page(page: number): Buffer {
    let data = this.#pages.get(page);
    if (!data) {
      data = this.#readRaw(page * CACHE_PAGE, Math.min(CACHE_PAGE, this.#size - page * CACHE_PAGE));
      if (this.#pages.size >= CACHE_PAGES) this.#pages.delete(this.#pages.keys().next().value!);
      this.#pages.set(page, data);
    }
    return data;
  }

  #readRaw(position: number, length: number): Buffer {
    const b = Buffer.allocUnsafe(length);
    if (readFullySync(this.#fd, b, position) < length) this.corrupt('short read');
    return b;
  }

  get rootNid(): number {
    return this.superblock.rootNid;
  }

  inode(nid: number): ErofsInode {
    const cached = this.#inodes.get(nid);
    if (cached) return cached;
    const position = this.superblock.metaBlockAddr * this.blockSize + nid * 32;
    const head = this.read(position, 32);
    const format = head.readUInt16LE(0);
    const compact = (format & 1) === 0;
    const layout = (format >> 1) & 0x7;
    if (format & ~0xf) this.corrupt(`inode ${nid} has an unknown format 0x${format.toString(16)}`);
    const b = compact ? head : this.read(position, 64);
    const mode = b.readUInt16LE(4);
    const type = typeFromMode(mode);
    if (!type) this.corrupt(`inode ${nid} has an invalid mode ${mode.toString(8)}`);
    const xattrCount = b.readUInt16LE(2);
    const inode: ErofsInode = compact
      ? {
          nid,
          type,
          mode,
          uid: b.readUInt16LE(24),
          gid: b.readUInt16LE(26),
          nlink: b.readUInt16LE(6),
          size: b.readUInt32LE(8),
          mtime: { sec: Number(this.superblock.buildTime), nsec: this.superblock.buildTimeNsec },
          ino: b.readUInt32LE(20),
          layout,
          compact,
          raw: b.readUInt32LE(16),
          xattrCount,
          position,
          inodeSize: 32,
          xattrSize: xattrCount === 0 ? 0 : XATTR_IBODY_HEADER_SIZE + (xattrCount - 1) * 4,
        }
      : {
          nid,
          type,
          mode,
          uid: b.readUInt32LE(24),
          gid: b.readUInt32LE(28),
          nlink: b.readUInt32LE(44),
          size: Number(b.readBigUInt64LE(8)),
          mtime: { sec: Number(b.readBigInt64LE(32)), nsec: b.readUInt32LE(40) },
          ino: b.readUInt32LE(20),
          layout,
          compact,
          raw: b.readUInt32LE(16),
          xattrCount,
          position,
          inodeSize: 64,
          xattrSize: xattrCount === 0 ? 0 : XATTR_IBODY_HEADER_SIZE + (xattrCount - 1) * 4,
        };
    // Only chunk-based files (holes) and compressed ones can be larger than the image.
    const roomy =
      layout === Layout.CHUNK_BASED ||
      layout === Layout.COMPRESSED_FULL ||
      layout === Layout.COMPRESSED_COMPACT;
    const bound = roomy && type === 'file' ? Number.MAX_SAFE_INTEGER : this.#size;
    if (!Number.isSafeInteger(inode.size) || inode.size > bound)
      this.corrupt(`inode ${nid} has an impossible size`);
    if (type === 'char' || type === 'block') inode.rdev = decodeDevice(inode.raw);
    if (type === 'symlink') {
      if (inode.size === 0 || inode.size > 4096)
        this.corrupt(`symlink inode ${nid} has length ${inode.size}`);
      inode.target = this.readData(inode, 0, inode.size).toString('latin1');
    }
    this.#inodes.set(nid, inode);
    return inode;
  }

  /** Bytes `[offset, offset + length)` of an inode's data. */
  readData(inode: ErofsInode, offset: number, length: number): Buffer {
    if (offset < 0 || offset + length > inode.size) this.corrupt(`read past the end of inode ${inode.nid}`);
    if (length === 0) return Buffer.alloc(0);
    const bs = this.blockSize;
    switch (inode.layout) {
      case Layout.FLAT_PLAIN:
      case Layout.FLAT_INLINE: {
        const inline = inode.layout === Layout.FLAT_INLINE;
        const blocks = inline ? Math.floor(inode.size / bs) : Math.ceil(inode.size / bs);
        const blockBytes = Math.min(blocks * bs, inode.size);
        const out = Buffer.alloc(length);
        if (offset < blockBytes) {
          const n = Math.min(length, blockBytes - offset);
          this.read(inode.raw * bs + offset, n).copy(out, 0);
        }
        if (offset + length > blockBytes) {
          const from = Math.max(offset, blockBytes);
          const tailStart = inode.position + inode.inodeSize + inode.xattrSize;
          const tailLength = inode.size - blockBytes;
          if (Math.floor(tailStart / bs) !== Math.floor((tailStart + tailLength - 1) / bs)) {
            this.corrupt(`inline data of inode ${inode.nid} crosses a block boundary`);
          }
          this.read(tailStart + (from - blockBytes), offset + length - from).copy(out, from - offset);
        }
        return out;
      }
      case Layout.CHUNK_BASED:
        return this.#readChunked(inode, offset, length);
      case Layout.COMPRESSED_FULL:
      case Layout.COMPRESSED_COMPACT:
        return readCompressed(this, inode, offset, length);
      default:
        return this.corrupt(`inode ${inode.nid} has an unknown data layout ${inode.layout}`);
    }
  }

  #readChunked(inode: ErofsInode, offset: number, length: number): Buffer {
    const bs = this.blockSize;
    const format = inode.raw & 0xffff;
    if (format & ~(CHUNK_BLKBITS_MASK | CHUNK_FORMAT_INDEXES))
      this.corrupt(`inode ${inode.nid}: bad chunk format`);
    const chunkBits = this.superblock.blockBits + (format & CHUNK_BLKBITS_MASK);
    if (chunkBits > 48) this.corrupt(`inode ${inode.nid}: chunk size 2^${chunkBits}`);
    const chunk = 2 ** chunkBits;
    const unit = format & CHUNK_FORMAT_INDEXES ? 8 : 4;
    const base = inode.position + inode.inodeSize + inode.xattrSize;
    const indexStart = Math.ceil(base / unit) * unit;
    const out = Buffer.alloc(length);
    for (let at = offset; at < offset + length; ) {
      const index = Math.floor(at / chunk);
      const within = at - index * chunk;
      const n = Math.min(chunk - within, offset + length - at);
      const entry = this.read(indexStart + index * unit, unit);
      const addr = unit === 8 ? entry.readUInt32LE(4) : entry.readUInt32LE(0);
      if (unit === 8 && entry.readUInt16LE(2) !== 0) {
        throw new ErofsError('EROFS_UNSUPPORTED', `${this.path}: chunks on extra devices are not supported`);
      }
      if (addr !== NULL_ADDR) this.read(addr * bs + within, n).copy(out, at - offset);
      at += n;
    }
    return out;
  }

  /** The inode at `path` (names as byte strings, `/`-separated, from the root; symlinks not followed). */
  lookup(path: string): ErofsInode {
    const inode = resolvePath(this.inode(this.rootNid), path, (dir, name) => {
      const entry = dir.type === 'dir' ? this.readDir(dir).find((e) => e.name === name) : undefined;
      return entry && this.inode(entry.nid);
    });
    if (inode) return inode;
    throw new ErofsError('EROFS_NOT_FOUND', `${this.path}: no ${JSON.stringify(path)} in the image`, {
      subject: path,
    });
  }

  /** Streams `length` bytes of a regular file from `offset` (default: all of it), 1 MiB at a time. */
  *readFile(inode: ErofsInode, offset = 0, length = Math.max(0, inode.size - offset)): Generator<Buffer> {
    const problem = fileRangeProblem(inode.type, inode.size, offset, length);
    if (problem) {
      throw new ErofsError('EROFS_INVALID_OPTION', `${this.path}: inode ${inode.nid} ${problem}`, {
        subject: this.path,
      });
    }
    for (let at = offset; at < offset + length; at += 1 << 20)
      yield this.readData(inode, at, Math.min(1 << 20, offset + length - at));
  }

  /** Entries of a directory inode, `.` and `..` included, in on-disk order. */
  readDir(inode: ErofsInode): ErofsDirEntry[] {
    if (inode.type !== 'dir') this.corrupt(`inode ${inode.nid} is not a directory`);
    const bs = this.blockSize;
    const entries: ErofsDirEntry[] = [];
    for (let start = 0; start < inode.size; start += bs) {
      const block = this.readData(inode, start, Math.min(bs, inode.size - start));
      if (block.length < DIRENT_SIZE) this.corrupt(`directory ${inode.nid} has a truncated block`);
      const first = block.readUInt16LE(8);
      if (first % DIRENT_SIZE !== 0 || first === 0 || first > block.length) {
        this.corrupt(`directory ${inode.nid} has a bad first name offset ${first}`);
      }
      const count = first / DIRENT_SIZE;
      for (let i = 0; i < count; i++) {
        const nameStart = block.readUInt16LE(i * DIRENT_SIZE + 8);
        let nameEnd = i + 1 < count ? block.readUInt16LE((i + 1) * DIRENT_SIZE + 8) : block.length;
        if (i + 1 === count) {
          const nul = block.indexOf(0, nameStart);
          if (nul >= 0 && nul < nameEnd) nameEnd = nul;
        }
        if (
          nameStart < first ||
          nameEnd <= nameStart ||
          nameEnd > block.length ||
          nameEnd - nameStart > 255
        ) {
          this.corrupt(`directory ${inode.nid} has a bad name at entry ${i}`);
        }
        const nid = Number(block.readBigUInt64LE(i * DIRENT_SIZE));
        const name = block.toString('latin1', nameStart, nameEnd);
        const problem = name === '.' || name === '..' ? undefined : entryNameProblem(name);
        if (problem) this.corrupt(`directory ${inode.nid}, entry ${i}: ${problem}: ${quoteBytes(name)}`);
        entries.push({
          name,
          nid,
          fileType: block[i * DIRENT_SIZE + 10]!,
        });
      }
    }
    return entries;
  }

  /** Extended attributes of an inode: inline ones first, then shared, as stored. */
  xattrs(inode: ErofsInode): [name: string, value: Buffer][] {
    if (inode.xattrSize === 0) return [];
    const start = inode.position + inode.inodeSize;
    const body = this.read(start, inode.xattrSize);
    const sharedCount = body[4]!;
    if (XATTR_IBODY_HEADER_SIZE + sharedCount * 4 > body.length)
      this.corrupt(`inode ${inode.nid}: bad xattr header`);
    const out: [string, Buffer][] = [];
    const entryAt = (b: Buffer, at: number, limit: number): [string, Buffer, number] => {
      if (at + XATTR_ENTRY_SIZE > limit) this.corrupt(`inode ${inode.nid}: truncated xattr entry`);
      const nameLength = b[at]!;
      const index = b[at + 1]!;
      const valueSize = b.readUInt16LE(at + 2);
      const end = at + XATTR_ENTRY_SIZE + nameLength + valueSize;
      if (end > limit) this.corrupt(`inode ${inode.nid}: xattr entry past its area`);
      if (index & 0x80) throw new ErofsError('EROFS_UNSUPPORTED', `${this.path}: long xattr name prefixes`);
      const prefix = index === 0 ? '' : XATTR_INDEX_NAMES[index];
      if (prefix === undefined) this.corrupt(`inode ${inode.nid}: unknown xattr name index ${index}`);
      const suffix = b.toString('latin1', at + XATTR_ENTRY_SIZE, at + XATTR_ENTRY_SIZE + nameLength);
      const value = Buffer.from(b.subarray(at + XATTR_ENTRY_SIZE + nameLength, end));
      const problem = xattrNameProblem(prefix + suffix);
      if (problem) this.corrupt(`inode ${inode.nid}: ${problem}: ${quoteBytes(prefix + suffix)}`);
      return [prefix + suffix, value, Math.ceil(end / 4) * 4];
    };
    let at = XATTR_IBODY_HEADER_SIZE + sharedCount * 4;
    while (at + XATTR_ENTRY_SIZE <= body.length) {
      const [name, value, next] = entryAt(body, at, body.length);
      out.push([name, value]);
      at = next;
    }
    const sharedBase = this.superblock.xattrBlockAddr * this.blockSize;
    for (let i = 0; i < sharedCount; i++) {
      const id = body.readUInt32LE(XATTR_IBODY_HEADER_SIZE + i * 4);
      const head = this.read(sharedBase + id * 4, XATTR_ENTRY_SIZE);
      const entry = this.read(sharedBase + id * 4, XATTR_ENTRY_SIZE + head[0]! + head.readUInt16LE(2));
      const [name, value] = entryAt(entry, 0, entry.length);
      out.push([name, value]);
    }
    return out;
  }

  /** Depth-first walk with children sorted bytewise; hardlinks repeat their inode. */
  *walk(): Generator<{ path: string; inode: ErofsInode; linkOf?: string }> {
    const firstPath = new Map<number, string>();
    const onPath = new Set<number>();
    const self = this;
    function* visit(
      path: string,
      nid: number,
      depth: number,
    ): Generator<{ path: string; inode: ErofsInode; linkOf?: string }> {
      if (depth > MAX_DEPTH) self.corrupt('directories nest too deeply');
      const inode = self.inode(nid);
      const seen = firstPath.get(nid);
      if (inode.type === 'dir') {
        if (onPath.has(nid) || seen !== undefined) self.corrupt(`directory inode ${nid} is reachable twice`);
      }
      yield { path, inode, ...(seen !== undefined ? { linkOf: seen } : {}) };
      if (seen !== undefined) return;
      firstPath.set(nid, path);
      if (inode.type !== 'dir') return;
      onPath.add(nid);
      const children = self
        .readDir(inode)
        .filter((e) => e.name !== '.' && e.name !== '..')
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (let i = 1; i < children.length; i++) {
        if (children[i]!.name === children[i - 1]!.name) self.corrupt(`duplicate name ${children[i]!.name}`);
      }
      for (const child of children)
        yield* visit(path === '' ? child.name : `${path}/${child.name}`, child.nid, depth + 1);
      onPath.delete(nid);
    }
    yield* visit('', this.rootNid, 0);
  }

  /** The file's data as a Content read from the image on demand. */
  content(inode: ErofsInode): Content {
    const image = this;
    return {
      size: inode.size,
      async *read() {
        yield* image.readFile(inode);
      },
    };
  }

  /** The whole image as a tree (file contents are read from the image when consumed). */
  toTree(): Tree {
    const inodes = new Map<number, Inode>();
    let root: DirInode | undefined;
    const dirs = new Map<string, DirInode>();
    for (const { path, inode: e, linkOf } of this.walk()) {
      let inode = inodes.get(e.nid);
      if (!inode) {
        const common = {
          mode: e.mode & 0o7777,
          uid: e.uid,
          gid: e.gid,
          mtime: e.mtime,
          xattrs: new Map(this.xattrs(e).map(([n, v]) => [n, new Uint8Array(v)] as const)),
        };
        switch (e.type) {
          case 'dir':
            inode = { ...common, type: 'dir', children: new Map() };
            break;
          case 'file':
            inode = { ...common, type: 'file', content: this.content(e) };
            break;
          case 'symlink':
            inode = { ...common, type: 'symlink', target: e.target! };
            break;
          case 'char':
          case 'block':
            inode = { ...common, type: e.type, rdev: e.rdev! };
            break;
          default:
            inode = { ...common, type: e.type };
        }
        inodes.set(e.nid, inode);
      }
      void linkOf;
      if (path === '') {
        if (inode.type !== 'dir') this.corrupt('the root is not a directory');
        root = inode;
        dirs.set('', inode);
        continue;
      }
      const slash = path.lastIndexOf('/');
      const parent = dirs.get(slash < 0 ? '' : path.slice(0, slash))!;
      parent.children.set(path.slice(slash + 1), inode);
      if (inode.type === 'dir') dirs.set(path, inode);
    }
    return { root: root! };
  }
}
