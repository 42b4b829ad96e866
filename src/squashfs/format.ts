/**
 * squashfs 4.0 on-disk constants and the superblock, as documented in the kernel's
 * Documentation/filesystems/squashfs.rst and fs/squashfs/squashfs_fs.h. Little-endian.
 */
import { SealError } from '../errors.ts';

export type SquashfsErrorCode =
  | 'SQUASHFS_BAD_MAGIC'
  | 'SQUASHFS_UNSUPPORTED'
  | 'SQUASHFS_CORRUPT'
  | 'SQUASHFS_TRUNCATED'
  | 'SQUASHFS_NOT_FOUND'
  | 'SQUASHFS_INVALID_OPTION'
  | 'SQUASHFS_UNREPRESENTABLE';

export class SquashfsError extends SealError<SquashfsErrorCode> {}

export const MAGIC = 0x73717368;
export const SUPERBLOCK_SIZE = 96;
export const METADATA_SIZE = 8192;
/** Set in a metadata block's u16 header when the block is stored uncompressed. */
export const METADATA_UNCOMPRESSED = 0x8000;
/** Set in a data block's u32 size when the block is stored uncompressed. */
export const DATA_UNCOMPRESSED = 1 << 24;
export const INVALID_FRAGMENT = 0xffffffff;
export const INVALID_XATTR = 0xffffffff;
export const INVALID_TABLE = 0xffffffffffffffffn;
export const DIR_HEADER_MAX_ENTRIES = 256;

export const Compressor = { gzip: 1, lzma: 2, lzo: 3, xz: 4, lz4: 5, zstd: 6 } as const;
export type CompressorName = keyof typeof Compressor;

export const Flag = {
  UNCOMPRESSED_INODES: 0x0001,
  UNCOMPRESSED_DATA: 0x0002,
  CHECK: 0x0004,
  UNCOMPRESSED_FRAGMENTS: 0x0008,
  NO_FRAGMENTS: 0x0010,
  ALWAYS_FRAGMENTS: 0x0020,
  DUPLICATES: 0x0040,
  EXPORTABLE: 0x0080,
  UNCOMPRESSED_XATTRS: 0x0100,
  NO_XATTRS: 0x0200,
  COMPRESSOR_OPTIONS: 0x0400,
  UNCOMPRESSED_IDS: 0x0800,
} as const;

export const InodeType = {
  dir: 1,
  file: 2,
  symlink: 3,
  block: 4,
  char: 5,
  fifo: 6,
  socket: 7,
  extDir: 8,
  extFile: 9,
  extSymlink: 10,
  extBlock: 11,
  extChar: 12,
  extFifo: 13,
  extSocket: 14,
} as const;

/** xattr name prefixes squashfs can store, by type id. */
export const XATTR_PREFIXES = ['user.', 'trusted.', 'security.'] as const;
/** Set in an xattr entry's type when its value is stored out of line. */
export const XATTR_VALUE_OOL = 0x100;

export interface Superblock {
  inodeCount: number;
  mkfsTime: number;
  blockSize: number;
  fragmentCount: number;
  compressor: number;
  blockLog: number;
  flags: number;
  idCount: number;
  versionMajor: number;
  versionMinor: number;
  rootInode: bigint;
  bytesUsed: bigint;
  idTableStart: bigint;
  xattrIdTableStart: bigint;
  inodeTableStart: bigint;
  directoryTableStart: bigint;
  fragmentTableStart: bigint;
  exportTableStart: bigint;
}

export function encodeSuperblock(sb: Superblock): Buffer {
  const b = Buffer.alloc(SUPERBLOCK_SIZE);
  b.writeUInt32LE(MAGIC, 0);
  b.writeUInt32LE(sb.inodeCount, 4);
  b.writeUInt32LE(sb.mkfsTime >>> 0, 8);
  b.writeUInt32LE(sb.blockSize, 12);
  b.writeUInt32LE(sb.fragmentCount, 16);
  b.writeUInt16LE(sb.compressor, 20);
  b.writeUInt16LE(sb.blockLog, 22);
  b.writeUInt16LE(sb.flags, 24);
  b.writeUInt16LE(sb.idCount, 26);
  b.writeUInt16LE(sb.versionMajor, 28);
  b.writeUInt16LE(sb.versionMinor, 30);
  b.writeBigUInt64LE(sb.rootInode, 32);
  b.writeBigUInt64LE(sb.bytesUsed, 40);
  b.writeBigUInt64LE(sb.idTableStart, 48);
  b.writeBigUInt64LE(sb.xattrIdTableStart, 56);
  b.writeBigUInt64LE(sb.inodeTableStart, 64);
  b.writeBigUInt64LE(sb.directoryTableStart, 72);
  b.writeBigUInt64LE(sb.fragmentTableStart, 80);
  b.writeBigUInt64LE(sb.exportTableStart, 88);
  return b;
}

export function decodeSuperblock(b: Buffer, subject: string): Superblock {
  if (b.length < SUPERBLOCK_SIZE)
    throw new SquashfsError('SQUASHFS_TRUNCATED', `${subject} is too short for a squashfs superblock`, {
      subject,
    });
  if (b.readUInt32LE(0) !== MAGIC)
    throw new SquashfsError('SQUASHFS_BAD_MAGIC', `${subject} is not a squashfs image (bad magic)`, {
      subject,
    });
  const sb: Superblock = {
    inodeCount: b.readUInt32LE(4),
    mkfsTime: b.readUInt32LE(8),
    blockSize: b.readUInt32LE(12),
    fragmentCount: b.readUInt32LE(16),
    compressor: b.readUInt16LE(20),
    blockLog: b.readUInt16LE(22),
    flags: b.readUInt16LE(24),
    idCount: b.readUInt16LE(26),
    versionMajor: b.readUInt16LE(28),
    versionMinor: b.readUInt16LE(30),
    rootInode: b.readBigUInt64LE(32),
    bytesUsed: b.readBigUInt64LE(40),
    idTableStart: b.readBigUInt64LE(48),
    xattrIdTableStart: b.readBigUInt64LE(56),
    inodeTableStart: b.readBigUInt64LE(64),
    directoryTableStart: b.readBigUInt64LE(72),
    fragmentTableStart: b.readBigUInt64LE(80),
    exportTableStart: b.readBigUInt64LE(88),
  };
  if (sb.versionMajor !== 4 || sb.versionMinor !== 0) {
    throw new SquashfsError(
      'SQUASHFS_UNSUPPORTED',
      `${subject}: squashfs ${sb.versionMajor}.${sb.versionMinor} is not supported (4.0 is)`,
      { subject },
    );
  }
  if (sb.blockSize < 4096 || sb.blockSize > 1 << 20 || 1 << sb.blockLog !== sb.blockSize) {
    throw new SquashfsError('SQUASHFS_CORRUPT', `${subject}: invalid block size ${sb.blockSize}`, {
      subject,
    });
  }
  return sb;
}
