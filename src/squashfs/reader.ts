/**
 * squashfs 4.0 reader: superblock, id/fragment/export/xattr tables, inodes, directories and
 * file data. Every offset and length read from the image is checked before use, directory
 * walks refuse cycles, and allocations are bounded by what the image can actually hold, so a
 * corrupt or hostile image gives a SquashfsError, never a crash or a hang.
 */
import { closeSync, fstatSync, openSync } from 'node:fs';
import { fileRangeProblem, resolvePath } from '../tree/image-paths.ts';
import {
  type DeviceNumber,
  type DirInode,
  decodeDevice,
  emptyDir,
  type Inode,
  type Timestamp,
  type Tree,
  type InodeType as TreeType,
} from '../tree/model.ts';
import { entryNameProblem, quoteBytes, xattrNameProblem } from '../tree/names.ts';
import { readFullySync } from '../util/read.ts';
import { blockDecoder } from './compression.ts';
import {
  DATA_UNCOMPRESSED,
  decodeSuperblock,
  INVALID_FRAGMENT,
  INVALID_TABLE,
  INVALID_XATTR,
  METADATA_SIZE,
  METADATA_UNCOMPRESSED,
  SquashfsError,
  SUPERBLOCK_SIZE,
  type Superblock,
  XATTR_PREFIXES,
  XATTR_VALUE_OOL,
} from './format.ts';

export interface SquashfsInode {
  ref: bigint;
  number: number;
  type: TreeType;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  nlink: number;
  xattr: number;
  /** Files: size in bytes; directories: listing size + 3; symlinks: target length. */
  size: number;
  // Files.
  blocksStart?: number;
  blockSizes?: number[];
  fragment?: number;
  fragmentOffset?: number;
  // Directories.
  dirBlock?: number;
  dirOffset?: number;
  parent?: number;
  // Symlinks and devices.
  target?: string;
  rdev?: DeviceNumber;
}

export interface SquashfsDirEntry {
  name: string;
  ref: bigint;
  number: number;
}

const TYPE_OF: Record<number, TreeType> = {
  1: 'dir',
  2: 'file',
  3: 'symlink',
  4: 'block',
  5: 'char',
  6: 'fifo',
  7: 'socket',
};

export class SquashfsImage {
  readonly path: string;
  readonly superblock: Superblock;
  #fd: number;
  #size: number;
  #end: number;
  #metadataCache = new Map<number, Buffer>();
  #ids: number[] = [];
  #fragments: { start: number; size: number }[] = [];
  #xattrIds: { ref: bigint; count: number }[] = [];
  #xattrKvStart = 0;
  #decode: (data: Uint8Array, limit: number) => Buffer;

  private constructor(path: string, fd: number, superblock: Superblock, size: number) {
    this.path = path;
    this.#fd = fd;
    this.superblock = superblock;
    this.#size = size;
    this.#end = Math.min(size, Number(superblock.bytesUsed));
    this.#decode = blockDecoder(superblock.compressor, path);
  }

  static open(path: string): SquashfsImage {
    const fd = openSync(path, 'r');
    try {
      const size = fstatSync(fd).size;
      const head = Buffer.alloc(SUPERBLOCK_SIZE);
      readFullySync(fd, head, 0);
      const sb = decodeSuperblock(head, path);
      if (sb.bytesUsed > BigInt(size)) {
        throw new SquashfsError(
          'SQUASHFS_TRUNCATED',
          `${path} is truncated: ${sb.bytesUsed} bytes used, ${size} present`,
          {
            subject: path,
          },
        );
      }
      const image = new SquashfsImage(path, fd, sb, size);
      image.#loadTables();
      return image;
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  close(): void {
    closeSync(this.#fd);
  }

  #corrupt(what: string): never {
    throw new SquashfsError('SQUASHFS_CORRUPT', `${this.path}: ${what}`, { subject: this.path });
  }

  #read(position: number, length: number): Buffer {
    if (!Number.isSafeInteger(position) || position < 0 || length < 0 || position + length > this.#end) {
      this.#corrupt(`a read of ${length} bytes at ${position} is outside the image`);
    }
    const buffer = Buffer.alloc(length);
    if (readFullySync(this.#fd, buffer, position) < length) this.#corrupt('unexpected end of file');
    return buffer;
  }

  #table(start: bigint, what: string): number {
    if (start === INVALID_TABLE || start >= BigInt(this.#end))
      this.#corrupt(`the ${what} table starts outside the image`);
    return Number(start);
  }

  /** The uncompressed metadata block at absolute `position`, and where the next one starts. */
  #metadataBlock(position: number): { data: Buffer; next: number } {
    const cached = this.#metadataCache.get(position);
    const header = this.#read(position, 2).readUInt16LE(0);
    const length = header & ~METADATA_UNCOMPRESSED;
    if (length === 0 || length > METADATA_SIZE)
      this.#corrupt(`metadata block at ${position} has length ${length}`);
    const next = position + 2 + length;
    if (cached) return { data: cached, next };
    const raw = this.#read(position + 2, length);
    const data = header & METADATA_UNCOMPRESSED ? raw : this.#decode(raw, METADATA_SIZE);
    if (this.#metadataCache.size > 4096) this.#metadataCache.clear();
    this.#metadataCache.set(position, data);
    return { data, next };
  }

  /** Reads `length` bytes of a metadata stream starting at block `block` (absolute), offset `offset`. */
  #metadata(block: number, offset: number, length: number): Buffer {
    return this.#cursor(block, offset).take(length);
  }

  /** A cursor over a metadata stream, for structures of variable length that cross blocks. */
  #cursor(block: number, offset: number) {
    let b = block;
    let o = offset;
    return {
      take: (length: number): Buffer => {
        const out = Buffer.alloc(length);
        let done = 0;
        while (done < length) {
          const { data, next } = this.#metadataBlock(b);
          if (o >= data.length) {
            if (o > data.length) this.#corrupt(`metadata offset ${o} past the end of its block`);
            b = next; // always forward: a block is at least 3 bytes long
            o = 0;
            continue;
          }
          const n = Math.min(length - done, data.length - o);
          data.copy(out, done, o, o + n);
          done += n;
          o += n;
        }
        return out;
      },
    };
  }

  /** Reads a table of `count` fixed-size entries through its u64 index of metadata blocks. */
  #indexedTable(start: bigint, count: number, entrySize: number, what: string): Buffer {
    if (count === 0) return Buffer.alloc(0);
    const total = count * entrySize;
    const blocks = Math.ceil(total / METADATA_SIZE);
    const at = this.#table(start, what);
    if (blocks * 8 > this.#end - at) this.#corrupt(`the ${what} table index is larger than the image`);
    const index = this.#read(at, blocks * 8);
    const out = Buffer.alloc(total);
    for (let i = 0; i < blocks; i++) {
      const position = Number(index.readBigUInt64LE(8 * i));
      const length = Math.min(METADATA_SIZE, total - i * METADATA_SIZE);
      this.#metadata(position, 0, length).copy(out, i * METADATA_SIZE);
    }
    return out;
  }

  #loadTables(): void {
    const sb = this.superblock;
    const ids = this.#indexedTable(sb.idTableStart, sb.idCount, 4, 'id');
    for (let i = 0; i < sb.idCount; i++) this.#ids.push(ids.readUInt32LE(4 * i));
    if (sb.fragmentCount > 0) {
      if (sb.fragmentCount * 16 > this.#end) this.#corrupt('fragment count larger than the image');
      const frags = this.#indexedTable(sb.fragmentTableStart, sb.fragmentCount, 16, 'fragment');
      for (let i = 0; i < sb.fragmentCount; i++) {
        this.#fragments.push({
          start: Number(frags.readBigUInt64LE(16 * i)),
          size: frags.readUInt32LE(16 * i + 8),
        });
      }
    }
    if (sb.xattrIdTableStart !== INVALID_TABLE) {
      const at = this.#table(sb.xattrIdTableStart, 'xattr id');
      const head = this.#read(at, 16);
      this.#xattrKvStart = Number(head.readBigUInt64LE(0));
      const count = head.readUInt32LE(8);
      if (count * 16 > this.#end) this.#corrupt('xattr id count larger than the image');
      // Its block index follows the 16-byte header.
      const ids = this.#indexedTable(BigInt(at + 16), count, 16, 'xattr id');
      for (let i = 0; i < count; i++) {
        this.#xattrIds.push({ ref: ids.readBigUInt64LE(16 * i), count: ids.readUInt32LE(16 * i + 8) });
      }
    }
  }

  #id(index: number): number {
    const id = this.#ids[index];
    if (id === undefined) this.#corrupt(`id index ${index} out of range`);
    return id;
  }

  get rootRef(): bigint {
    return this.superblock.rootInode;
  }

  inode(ref: bigint): SquashfsInode {
    const block = Number(this.superblock.inodeTableStart) + Number(ref >> 16n);
    const offset = Number(ref & 0xffffn);
    if (offset >= METADATA_SIZE || block >= Number(this.superblock.directoryTableStart)) {
      this.#corrupt(`inode reference ${ref.toString(16)} is outside the inode table`);
    }
    const c = this.#cursor(block, offset);
    const h = c.take(16);
    const raw = h.readUInt16LE(0);
    const basic = raw > 7 ? raw - 7 : raw;
    const type = TYPE_OF[basic];
    if (!type) this.#corrupt(`unknown inode type ${raw}`);
    const inode: SquashfsInode = {
      ref,
      number: h.readUInt32LE(12),
      type,
      mode: h.readUInt16LE(2) & 0o7777,
      uid: this.#id(h.readUInt16LE(4)),
      gid: this.#id(h.readUInt16LE(6)),
      mtime: h.readUInt32LE(8),
      nlink: 1,
      xattr: INVALID_XATTR,
      size: 0,
    };
    const ext = raw > 7;
    const bs = this.superblock.blockSize;
    switch (type) {
      case 'dir':
        if (ext) {
          const b = c.take(24);
          inode.nlink = b.readUInt32LE(0);
          inode.size = b.readUInt32LE(4);
          inode.dirBlock = b.readUInt32LE(8);
          inode.parent = b.readUInt32LE(12);
          inode.dirOffset = b.readUInt16LE(18);
          inode.xattr = b.readUInt32LE(20);
        } else {
          const b = c.take(16);
          inode.dirBlock = b.readUInt32LE(0);
          inode.nlink = b.readUInt32LE(4);
          inode.size = b.readUInt16LE(8);
          inode.dirOffset = b.readUInt16LE(10);
          inode.parent = b.readUInt32LE(12);
        }
        break;
      case 'file': {
        let size: number;
        if (ext) {
          const b = c.take(40);
          inode.blocksStart = Number(b.readBigUInt64LE(0));
          size = Number(b.readBigUInt64LE(8));
          inode.nlink = b.readUInt32LE(24);
          inode.fragment = b.readUInt32LE(28);
          inode.fragmentOffset = b.readUInt32LE(32);
          inode.xattr = b.readUInt32LE(36);
        } else {
          const b = c.take(16);
          inode.blocksStart = b.readUInt32LE(0);
          inode.fragment = b.readUInt32LE(4);
          inode.fragmentOffset = b.readUInt32LE(8);
          size = b.readUInt32LE(12);
        }
        if (!Number.isSafeInteger(size)) this.#corrupt(`file size ${size} too large`);
        inode.size = size;
        const hasFragment = inode.fragment !== INVALID_FRAGMENT;
        const count = hasFragment ? Math.floor(size / bs) : Math.ceil(size / bs);
        // Every block needs 4 bytes of the inode table. A metadata block of 8 KiB takes at least
        // 10 bytes on disk (its header and the smallest compressed form), so the table unpacks to
        // at most ~820 times its size: a list longer than that is corruption, not a big file.
        const tableBytes = Number(this.superblock.directoryTableStart - this.superblock.inodeTableStart);
        if (count * 4 > tableBytes * 1024)
          this.#corrupt(`file of ${size} bytes has more blocks than the inode table can list`);
        const list = c.take(4 * count);
        inode.blockSizes = Array.from({ length: count }, (_, i) => list.readUInt32LE(4 * i));
        if (hasFragment && inode.fragment! >= this.#fragments.length)
          this.#corrupt(`fragment ${inode.fragment} out of range`);
        break;
      }
      case 'symlink': {
        const b = c.take(8);
        inode.nlink = b.readUInt32LE(0);
        const length = b.readUInt32LE(4);
        if (length > 65536) this.#corrupt(`symlink target of ${length} bytes`);
        inode.target = c.take(length).toString('latin1');
        inode.size = length;
        if (ext) inode.xattr = c.take(4).readUInt32LE(0);
        break;
      }
      case 'char':
      case 'block': {
        const b = c.take(ext ? 12 : 8);
        inode.nlink = b.readUInt32LE(0);
        inode.rdev = decodeDevice(b.readUInt32LE(4));
        if (ext) inode.xattr = b.readUInt32LE(8);
        break;
      }
      default: {
        const b = c.take(ext ? 8 : 4);
        inode.nlink = b.readUInt32LE(0);
        if (ext) inode.xattr = b.readUInt32LE(4);
      }
    }
    return inode;
  }

  readDir(dir: SquashfsInode): SquashfsDirEntry[] {
    if (dir.type !== 'dir') this.#corrupt(`inode ${dir.number} is not a directory`);
    if (dir.size <= 3) return [];
    const listing = dir.size - 3;
    const block = Number(this.superblock.directoryTableStart) + dir.dirBlock!;
    const data = this.#metadata(block, dir.dirOffset!, listing);
    const entries: SquashfsDirEntry[] = [];
    let pos = 0;
    while (pos + 12 <= listing) {
      const count = data.readUInt32LE(pos) + 1;
      const start = data.readUInt32LE(pos + 4);
      const base = data.readUInt32LE(pos + 8);
      pos += 12;
      if (count > 256) this.#corrupt(`directory header with ${count} entries`);
      for (let i = 0; i < count; i++) {
        if (pos + 8 > listing) this.#corrupt('directory listing truncated');
        const offset = data.readUInt16LE(pos);
        const delta = data.readInt16LE(pos + 2);
        const nameSize = data.readUInt16LE(pos + 6) + 1;
        pos += 8;
        if (pos + nameSize > listing || nameSize > 256) this.#corrupt('directory entry name out of bounds');
        const name = data.toString('latin1', pos, pos + nameSize);
        pos += nameSize;
        const problem = entryNameProblem(name);
        if (problem) {
          this.#corrupt(`directory entry with an invalid name: ${problem}: ${quoteBytes(name)}`);
        }
        entries.push({ name, ref: (BigInt(start) << 16n) | BigInt(offset), number: base + delta });
      }
    }
    return entries;
  }

  /** The inode at `path` (names as byte strings, `/`-separated, from the root; symlinks not followed). */
  lookup(path: string): SquashfsInode {
    const inode = resolvePath(this.inode(this.rootRef), path, (dir, name) => {
      const entry = dir.type === 'dir' ? this.readDir(dir).find((e) => e.name === name) : undefined;
      return entry && this.inode(entry.ref);
    });
    if (inode) return inode;
    throw new SquashfsError('SQUASHFS_NOT_FOUND', `${this.path}: no ${JSON.stringify(path)} in the image`, {
      subject: path,
    });
  }

  xattrs(inode: SquashfsInode): Map<string, Uint8Array> {
    const out = new Map<string, Uint8Array>();
    if (inode.xattr === INVALID_XATTR) return out;
    const id = this.#xattrIds[inode.xattr];
    if (!id) this.#corrupt(`xattr index ${inode.xattr} out of range`);
    if (id.count > 65536) this.#corrupt(`xattr set of ${id.count} entries`);
    const c = this.#cursor(this.#xattrKvStart + Number(id.ref >> 16n), Number(id.ref & 0xffffn));
    for (let i = 0; i < id.count; i++) {
      const head = c.take(4);
      const type = head.readUInt16LE(0);
      const prefix = XATTR_PREFIXES[type & 0xff];
      if (!prefix) this.#corrupt(`unknown xattr type ${type}`);
      const name = prefix + c.take(head.readUInt16LE(2)).toString('latin1');
      const problem = xattrNameProblem(name);
      if (problem) this.#corrupt(`${problem}: ${quoteBytes(name)}`);
      const vsize = c.take(4).readUInt32LE(0);
      if (vsize > 1 << 20) this.#corrupt(`xattr value of ${vsize} bytes`);
      let value = c.take(vsize);
      if (type & XATTR_VALUE_OOL) {
        if (vsize !== 8) this.#corrupt('out-of-line xattr reference of the wrong size');
        const ref = value.readBigUInt64LE(0);
        const v = this.#cursor(this.#xattrKvStart + Number(ref >> 16n), Number(ref & 0xffffn));
        const size = v.take(4).readUInt32LE(0);
        if (size > 1 << 20) this.#corrupt(`xattr value of ${size} bytes`);
        value = v.take(size);
      }
      out.set(name, value);
    }
    return out;
  }

  #dataBlock(position: number, stored: number, limit: number): Buffer {
    const length = stored & ~DATA_UNCOMPRESSED;
    if (length > this.superblock.blockSize) this.#corrupt(`data block of ${length} bytes`);
    const raw = this.#read(position, length);
    return stored & DATA_UNCOMPRESSED ? raw : this.#decode(raw, limit);
  }

  /**
   * Streams `length` bytes of a regular file from `offset` (default: all of it). Only the blocks
   * holding the range are read: a block's place is the sum of the stored sizes before it.
   */
  async *readFile(
    inode: SquashfsInode,
    offset = 0,
    length = Math.max(0, inode.size - offset),
  ): AsyncGenerator<Uint8Array> {
    const problem = fileRangeProblem(inode.type, inode.size, offset, length);
    if (problem) {
      throw new SquashfsError('SQUASHFS_INVALID_OPTION', `${this.path}: inode ${inode.number} ${problem}`, {
        subject: this.path,
      });
    }
    const bs = this.superblock.blockSize;
    const sizes = inode.blockSizes!;
    const end = offset + length;
    const first = Math.floor(offset / bs);
    let position = inode.blocksStart!;
    for (let i = 0; i < first && i < sizes.length; i++) position += sizes[i]! & ~DATA_UNCOMPRESSED;
    for (let i = first; i < sizes.length && i * bs < end; i++) {
      const want = Math.min(bs, inode.size - i * bs);
      const stored = sizes[i]!;
      let block: Uint8Array;
      if (stored === 0) block = new Uint8Array(want);
      else {
        block = this.#dataBlock(position, stored, bs);
        position += stored & ~DATA_UNCOMPRESSED;
        if (block.length < want) this.#corrupt(`data block of inode ${inode.number} is short`);
      }
      yield block.subarray(Math.max(0, offset - i * bs), Math.min(want, end - i * bs));
    }
    const tailStart = sizes.length * bs;
    if (end > tailStart) {
      if (inode.fragment === INVALID_FRAGMENT) this.#corrupt(`file inode ${inode.number} is missing data`);
      const frag = this.#fragments[inode.fragment!]!;
      const block = this.#dataBlock(frag.start, frag.size, bs);
      const start = inode.fragmentOffset!;
      if (start + (inode.size - tailStart) > block.length)
        this.#corrupt(`fragment ${inode.fragment} is too short`);
      yield block.subarray(start + Math.max(0, offset - tailStart), start + (end - tailStart));
    }
  }

  /** Walks the whole image depth-first (children sorted as stored), refusing directory cycles. */
  *walk(): Generator<{ path: string; inode: SquashfsInode }> {
    const root = this.inode(this.rootRef);
    if (root.type !== 'dir') this.#corrupt('the root inode is not a directory');
    const active = new Set<bigint>();
    let visited = 0;
    const limit = Math.max(this.superblock.inodeCount, 1) * 4 + 16;
    const self = this;
    function* visit(path: string, inode: SquashfsInode): Generator<{ path: string; inode: SquashfsInode }> {
      if (++visited > limit) self.#corrupt('more directory entries than inodes: a cycle');
      yield { path, inode };
      if (inode.type !== 'dir') return;
      if (active.has(inode.ref)) self.#corrupt(`directory cycle at ${path || '/'}`);
      active.add(inode.ref);
      for (const entry of self.readDir(inode)) {
        yield* visit(path === '' ? entry.name : `${path}/${entry.name}`, self.inode(entry.ref));
      }
      active.delete(inode.ref);
    }
    yield* visit('', root);
  }

  /** The image as a tree; file contents are read from the image when needed. */
  toTree(): Tree {
    const root = emptyDir();
    const dirs = new Map<string, DirInode>([['', root]]);
    const byNumber = new Map<number, Inode>();
    for (const { path, inode } of this.walk()) {
      const common = {
        mode: inode.mode,
        uid: inode.uid,
        gid: inode.gid,
        mtime: { sec: inode.mtime, nsec: 0 } as Timestamp,
        xattrs: this.xattrs(inode),
      };
      let node: Inode;
      if (inode.type === 'dir') {
        node = path === '' ? Object.assign(root, common) : { ...common, type: 'dir', children: new Map() };
        dirs.set(path, node as DirInode);
      } else {
        const seen = byNumber.get(inode.number);
        if (seen) node = seen;
        else {
          switch (inode.type) {
            case 'file': {
              node = {
                ...common,
                type: 'file',
                content: { size: inode.size, read: () => this.readFile(inode) },
              };
              break;
            }
            case 'symlink':
              node = { ...common, type: 'symlink', target: inode.target! };
              break;
            case 'char':
            case 'block':
              node = { ...common, type: inode.type, rdev: inode.rdev! };
              break;
            default:
              node = { ...common, type: inode.type as 'fifo' | 'socket' };
          }
          if (inode.nlink > 1) byNumber.set(inode.number, node);
        }
      }
      if (path !== '') {
        const slash = path.lastIndexOf('/');
        dirs.get(slash < 0 ? '' : path.slice(0, slash))!.children.set(path.slice(slash + 1), node);
      }
    }
    return { root };
  }
}
