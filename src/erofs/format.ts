/**
 * EROFS on-disk constants and structures, as documented in the kernel's
 * Documentation/filesystems/erofs.rst and fs/erofs/erofs_fs.h. Little-endian; Seal writes
 * 4 KiB blocks and 32-byte inode slots.
 */
import { SealError } from '../errors.ts';

export type ErofsErrorCode =
  | 'EROFS_BAD_MAGIC'
  | 'EROFS_UNSUPPORTED'
  | 'EROFS_CORRUPT'
  | 'EROFS_TRUNCATED'
  | 'EROFS_NOT_FOUND'
  | 'EROFS_UNREPRESENTABLE'
  | 'EROFS_INVALID_OPTION';

export class ErofsError extends SealError<ErofsErrorCode> {}

export const SUPER_OFFSET = 1024;
export const SUPER_MAGIC = 0xe0f5e1e2;
export const SUPERBLOCK_SIZE = 128;
export const BLOCK_BITS = 12;
export const BLOCK_SIZE = 1 << BLOCK_BITS;
export const SLOT_BITS = 5;
export const SLOT_SIZE = 1 << SLOT_BITS;
export const COMPACT_INODE_SIZE = 32;
export const EXTENDED_INODE_SIZE = 64;
export const DIRENT_SIZE = 12;
export const XATTR_IBODY_HEADER_SIZE = 12;
export const XATTR_ENTRY_SIZE = 4;
export const NULL_ADDR = 0xffffffff;
export const NAME_MAX = 255;

export const FeatureCompat = { SB_CHKSUM: 0x1, MTIME: 0x2, XATTR_FILTER: 0x4 } as const;
export const FeatureIncompat = {
  ZERO_PADDING: 0x1,
  COMPR_CFGS: 0x2,
  CHUNKED_FILE: 0x4,
  DEVICE_TABLE: 0x8,
  ZTAILPACKING: 0x10,
  FRAGMENTS: 0x20,
  XATTR_PREFIXES: 0x40,
} as const;
/** Same bit as COMPR_CFGS: compressed images with pclusters of more than one block. */
export const BIG_PCLUSTER = FeatureIncompat.COMPR_CFGS;
/** Same bit as FRAGMENTS: pclusters shared by several extents (mkfs.erofs -Ededupe). */
export const DEDUPE = FeatureIncompat.FRAGMENTS;

export const Layout = {
  FLAT_PLAIN: 0,
  COMPRESSED_FULL: 1,
  FLAT_INLINE: 2,
  COMPRESSED_COMPACT: 3,
  CHUNK_BASED: 4,
} as const;

export const CHUNK_BLKBITS_MASK = 0x1f;

/*
 * Compressed files ("z_erofs"). The data is cut into logical clusters (lclusters, one block
 * unless the map header says otherwise), each described by an index; an extent starts at a
 * HEAD (or PLAIN, stored uncompressed) lcluster and continues over NONHEAD ones, and its
 * compressed bytes fill a physical cluster (pcluster) of one or more blocks.
 */
export const Z_MAP_HEADER_SIZE = 8;
/** Full (non-compact) indexes follow the map header and 8 reserved bytes. */
export const Z_FULL_INDEX_PADDING = 8;
export const Z_FULL_INDEX_SIZE = 8;
export const ZAdvise = {
  COMPACTED_2B: 0x1,
  BIG_PCLUSTER_1: 0x2,
  BIG_PCLUSTER_2: 0x4,
  INLINE_PCLUSTER: 0x8,
  INTERLACED_PCLUSTER: 0x10,
  FRAGMENT_PCLUSTER: 0x20,
} as const;
export const LclusterType = { PLAIN: 0, HEAD1: 1, NONHEAD: 2, HEAD2: 3 } as const;
export const ZAlgorithm = { LZ4: 0, LZMA: 1, DEFLATE: 2, ZSTD: 3 } as const;
export const Z_ALGORITHM_NAMES = ['lz4', 'lzma', 'deflate', 'zstd'] as const;
/** In a NONHEAD delta[0]: the value is the pcluster's block count, not a distance. */
export const Z_D0_CBLKCNT = 1 << 11;
/** Top bit of h_clusterbits: the whole file lives in the packed inode. */
export const Z_FRAGMENT_INODE_BIT = 0x80;
/** The kernel's limits on one pcluster and on the data one extent decompresses to. */
export const Z_PCLUSTER_MAX_SIZE = 1 << 20;
export const Z_EXTENT_MAX_SIZE = 12 << 20;
export const CHUNK_FORMAT_INDEXES = 0x20;

/** Directory entry file types. */
export const FileType = {
  unknown: 0,
  file: 1,
  dir: 2,
  char: 3,
  block: 4,
  fifo: 5,
  socket: 6,
  symlink: 7,
} as const;

/** Xattr name indexes: the prefix is stored as a number and only the rest of the name as bytes. */
export const XATTR_PREFIXES: readonly (readonly [prefix: string, index: number])[] = [
  ['user.', 1],
  ['system.posix_acl_access', 2],
  ['system.posix_acl_default', 3],
  ['trusted.', 4],
  ['security.', 6],
];
export const XATTR_INDEX_NAMES: Record<number, string> = {
  1: 'user.',
  2: 'system.posix_acl_access',
  3: 'system.posix_acl_default',
  4: 'trusted.',
  5: 'lustre.',
  6: 'security.',
};
export const XATTR_FILTER_SEED = 0x25bbe08f;
/** At most this many shared xattr references per inode (the top bit marks long prefixes). */
export const MAX_SHARED_PER_INODE = 0x80;

export interface Superblock {
  checksum: number;
  featureCompat: number;
  blockBits: number;
  extSlots: number;
  rootNid: number;
  inodes: bigint;
  buildTime: bigint;
  buildTimeNsec: number;
  blocks: number;
  metaBlockAddr: number;
  xattrBlockAddr: number;
  uuid: Buffer;
  volumeName: Buffer;
  featureIncompat: number;
  /** lz4 max distance or the bitmap of available compressors (COMPR_CFGS). */
  compressionInfo: number;
  extraDevices: number;
  dirBlockBits: number;
  xattrPrefixCount: number;
  xattrPrefixStart: number;
  packedNid: bigint;
}

export function encodeSuperblock(sb: Partial<Superblock>): Buffer {
  const b = Buffer.alloc(SUPERBLOCK_SIZE);
  b.writeUInt32LE(SUPER_MAGIC, 0);
  b.writeUInt32LE(sb.checksum ?? 0, 4);
  b.writeUInt32LE(sb.featureCompat ?? 0, 8);
  b.writeUInt8(sb.blockBits ?? BLOCK_BITS, 12);
  b.writeUInt8(sb.extSlots ?? 0, 13);
  b.writeUInt16LE(sb.rootNid ?? 0, 14);
  b.writeBigUInt64LE(sb.inodes ?? 0n, 16);
  b.writeBigUInt64LE(sb.buildTime ?? 0n, 24);
  b.writeUInt32LE(sb.buildTimeNsec ?? 0, 32);
  b.writeUInt32LE(sb.blocks ?? 0, 36);
  b.writeUInt32LE(sb.metaBlockAddr ?? 0, 40);
  b.writeUInt32LE(sb.xattrBlockAddr ?? 0, 44);
  sb.uuid?.copy(b, 48, 0, 16);
  sb.volumeName?.copy(b, 64, 0, 16);
  b.writeUInt32LE(sb.featureIncompat ?? 0, 80);
  b.writeUInt16LE(sb.compressionInfo ?? 0, 84);
  b.writeUInt16LE(sb.extraDevices ?? 0, 86);
  b.writeUInt8(sb.dirBlockBits ?? 0, 90);
  b.writeUInt8(sb.xattrPrefixCount ?? 0, 91);
  b.writeUInt32LE(sb.xattrPrefixStart ?? 0, 92);
  b.writeBigUInt64LE(sb.packedNid ?? 0n, 96);
  return b;
}

export function decodeSuperblock(b: Buffer, subject?: string): Superblock {
  if (b.length < SUPERBLOCK_SIZE)
    throw new ErofsError('EROFS_TRUNCATED', 'image too short for a superblock', { subject });
  if (b.readUInt32LE(0) !== SUPER_MAGIC)
    throw new ErofsError('EROFS_BAD_MAGIC', 'not an EROFS image', { subject });
  return {
    checksum: b.readUInt32LE(4),
    featureCompat: b.readUInt32LE(8),
    blockBits: b.readUInt8(12),
    extSlots: b.readUInt8(13),
    rootNid: b.readUInt16LE(14),
    inodes: b.readBigUInt64LE(16),
    buildTime: b.readBigUInt64LE(24),
    buildTimeNsec: b.readUInt32LE(32),
    blocks: b.readUInt32LE(36),
    metaBlockAddr: b.readUInt32LE(40),
    xattrBlockAddr: b.readUInt32LE(44),
    uuid: Buffer.from(b.subarray(48, 64)),
    volumeName: Buffer.from(b.subarray(64, 80)),
    featureIncompat: b.readUInt32LE(80),
    compressionInfo: b.readUInt16LE(84),
    extraDevices: b.readUInt16LE(86),
    dirBlockBits: b.readUInt8(90),
    xattrPrefixCount: b.readUInt8(91),
    xattrPrefixStart: b.readUInt32LE(92),
    packedNid: b.readBigUInt64LE(96),
  };
}

/** Splits an xattr name into its EROFS prefix index and the stored suffix (index 0: no prefix). */
export function xattrNameIndex(name: string): [index: number, suffix: string] {
  for (const [prefix, index] of XATTR_PREFIXES)
    if (name.startsWith(prefix)) return [index, name.slice(prefix.length)];
  return [0, name];
}

/** Bytes an xattr entry takes on disk (header, name suffix, value, 4-byte aligned). */
export function xattrEntrySize(name: string, valueLength: number): number {
  return alignUp(XATTR_ENTRY_SIZE + xattrNameIndex(name)[1].length + valueLength, 4);
}

export function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}
