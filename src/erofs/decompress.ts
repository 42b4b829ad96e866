/**
 * Compressed EROFS files (the COMPRESSED_FULL and COMPRESSED_COMPACT layouts), as the kernel
 * reads them: map an offset to its extent through the lcluster indexes, then decompress the
 * extent's pcluster. Covers what `mkfs.erofs -zlz4` / `-zlz4hc` write: full and compact (2- and
 * 4-byte) indexes, big pclusters, LZ4 with and without 0-padding, uncompressed extents and
 * tail-packed (inline) pclusters. Every index and length comes from the image, so each one is
 * checked before it is used to read or allocate.
 */
import { decompressLz4Block, Lz4Error } from '../util/lz4.ts';
import {
  BIG_PCLUSTER,
  ErofsError,
  FeatureIncompat,
  Layout,
  LclusterType,
  Z_ALGORITHM_NAMES,
  Z_D0_CBLKCNT,
  Z_EXTENT_MAX_SIZE,
  Z_FRAGMENT_INODE_BIT,
  Z_FULL_INDEX_PADDING,
  Z_FULL_INDEX_SIZE,
  Z_MAP_HEADER_SIZE,
  Z_PCLUSTER_MAX_SIZE,
  ZAdvise,
  ZAlgorithm,
} from './format.ts';
import type { ErofsImage, ErofsInode } from './reader.ts';

/** What the map header and the inode say about a compressed file's indexes. */
interface CompressedLayout {
  compact: boolean;
  advise: number;
  /** Algorithm of HEAD1 and HEAD2 extents. */
  algorithms: readonly [number, number];
  lclusterBits: number;
  lclusterSize: number;
  /** Indexes the file has: one per lcluster. */
  lclusterCount: number;
  /** Full layout: the first index; compact layout: the first pack. */
  indexStart: number;
  /** Compact layout: 4-byte entries before the 2-byte ones (for 32-byte alignment), and 2-byte entries. */
  initial4B: number;
  compact2B: number;
  /** The tail-packed pcluster stored inline after the indexes, if any. */
  tail?: { headLcn: number; position: number; length: number };
}

/** One decoded lcluster index. */
interface Lcluster {
  lcn: number;
  type: number;
  /** HEAD/PLAIN: where the extent starts in this lcluster; NONHEAD: the lcluster size. */
  clusterOffset: number;
  /** NONHEAD: lclusters back to its HEAD, and forward to the next HEAD (0: not recorded). */
  lookback: number;
  lookahead: number;
  /** HEAD/PLAIN: the pcluster's first block. */
  block: number;
  /** First NONHEAD of a big pcluster: the pcluster's block count (0 otherwise). */
  pclusterBlocks: number;
  /** Byte position just after the index (compact: after its pack); tail-packed data starts there. */
  indexEnd: number;
}

/** An index entry before its type-specific fields are filled in. */
function emptyLcluster(lcn: number, type: number, layout: CompressedLayout, indexEnd: number): Lcluster {
  return {
    lcn,
    type,
    clusterOffset: layout.lclusterSize,
    lookback: 0,
    lookahead: 0,
    block: 0,
    pclusterBlocks: 0,
    indexEnd,
  };
}

interface Extent {
  /** Logical start and length of the decompressed extent. */
  start: number;
  length: number;
  /** Where its pcluster is in the image, and how long it is. */
  position: number;
  physicalLength: number;
  /** 'plain' for data stored as is, otherwise a Z_EROFS compression algorithm. */
  algorithm: 'plain' | number;
}

const layouts = new WeakMap<ErofsInode, CompressedLayout>();
/** The last extent decompressed per image: sequential reads cut extents at arbitrary offsets. */
const lastExtent = new WeakMap<ErofsImage, { nid: number; start: number; data: Buffer }>();

export function readCompressed(image: ErofsImage, inode: ErofsInode, offset: number, length: number): Buffer {
  const layout = compressedLayout(image, inode);
  const out = Buffer.alloc(length);
  const end = offset + length;
  for (let at = offset; at < end; ) {
    const extent = mapExtent(image, inode, layout, at);
    const extentEnd = extent.start + extent.length;
    if (at < extent.start || at >= extentEnd) {
      image.corrupt(
        `inode ${inode.nid}: offset ${at} maps to the extent at ${extent.start}+${extent.length}`,
      );
    }
    const n = Math.min(end, extentEnd) - at;
    const within = at - extent.start;
    if (extent.algorithm === 'plain') {
      image.read(extent.position + within, n).copy(out, at - offset);
    } else {
      decompressExtent(image, inode, extent).copy(out, at - offset, within, within + n);
    }
    at += n;
  }
  return out;
}

function compressedLayout(image: ErofsImage, inode: ErofsInode): CompressedLayout {
  const cached = layouts.get(inode);
  if (cached) return cached;
  const nid = inode.nid;
  const unsupported = (what: string): never => {
    throw new ErofsError(
      'EROFS_UNSUPPORTED',
      `${image.path}: inode ${nid} uses ${what}, which Seal does not read`,
      {
        subject: image.path,
      },
    );
  };
  const headerAt = Math.ceil((inode.position + inode.inodeSize + inode.xattrSize) / 8) * 8;
  const header = image.read(headerAt, Z_MAP_HEADER_SIZE);
  const advise = header.readUInt16LE(4);
  const clusterBits = header[7]!;
  if (clusterBits & Z_FRAGMENT_INODE_BIT || advise & ZAdvise.FRAGMENT_PCLUSTER)
    unsupported('fragments (data in the packed inode, mkfs.erofs -Efragments)');
  if (advise & ZAdvise.INTERLACED_PCLUSTER) unsupported('interlaced uncompressed pclusters');
  if (advise & ~0x3f) unsupported(`unknown compression advice 0x${advise.toString(16)}`);
  const big = advise & (ZAdvise.BIG_PCLUSTER_1 | ZAdvise.BIG_PCLUSTER_2);
  if (big && !(image.superblock.featureIncompat & BIG_PCLUSTER))
    image.corrupt(`inode ${nid} has big pclusters the superblock does not announce`);
  const compact = inode.layout === Layout.COMPRESSED_COMPACT;
  if (compact && big && big !== (ZAdvise.BIG_PCLUSTER_1 | ZAdvise.BIG_PCLUSTER_2))
    image.corrupt(`inode ${nid}: compact indexes need both or neither HEAD kind to have big pclusters`);
  const lclusterBits = image.superblock.blockBits + (clusterBits & 7);
  if (compact && lclusterBits > 14) unsupported(`compact indexes with 2^${lclusterBits}-byte lclusters`);
  const lclusterSize = 2 ** lclusterBits;
  const lclusterCount = Math.ceil(inode.size / lclusterSize);
  let initial4B = 0;
  let compact2B = 0;
  if (compact) {
    // Leading 4-byte entries bring the 2-byte packs to a 32-byte boundary; the kernel counts
    // the entries in blocks.
    const blocks = Math.ceil(inode.size / image.blockSize);
    const first = headerAt + Z_MAP_HEADER_SIZE;
    initial4B = ((32 - (first % 32)) / 4) & 7;
    if (advise & ZAdvise.COMPACTED_2B && initial4B < blocks)
      compact2B = Math.floor((blocks - initial4B) / 16) * 16;
    if (compact2B > 0 && lclusterBits > 12)
      image.corrupt(`inode ${nid}: 2-byte compact indexes with 2^${lclusterBits}-byte lclusters`);
  }
  const layout: CompressedLayout = {
    compact,
    advise,
    algorithms: [header[6]! & 15, header[6]! >> 4],
    lclusterBits,
    lclusterSize,
    lclusterCount,
    indexStart: headerAt + Z_MAP_HEADER_SIZE + (compact ? 0 : Z_FULL_INDEX_PADDING),
    initial4B,
    compact2B,
  };
  // Every lcluster has an index in the image, so an absurd size fails here, before any read.
  const last = loadLcluster(image, inode, layout, lclusterCount - 1);
  if (advise & ZAdvise.INLINE_PCLUSTER) {
    if (!(image.superblock.featureIncompat & FeatureIncompat.ZTAILPACKING))
      image.corrupt(`inode ${nid} has an inline pcluster the superblock does not announce`);
    // The tail extent's pcluster follows the index of the last lcluster.
    const head = findHead(image, inode, layout, last, inode.size - 1);
    const length = header.readUInt16LE(2);
    const bs = image.blockSize;
    if (length === 0 || (last.indexEnd % bs) + length > bs)
      image.corrupt(`inode ${nid}: inline pcluster of ${length} bytes does not fit its block`);
    layout.tail = { headLcn: head.lcn, position: last.indexEnd, length };
  }
  layouts.set(inode, layout);
  return layout;
}

function loadLcluster(image: ErofsImage, inode: ErofsInode, layout: CompressedLayout, lcn: number): Lcluster {
  if (!Number.isSafeInteger(lcn) || lcn < 0 || lcn >= layout.lclusterCount)
    image.corrupt(`inode ${inode.nid}: lcluster ${lcn} is outside the file`);
  return layout.compact
    ? loadCompactLcluster(image, inode, layout, lcn)
    : loadFullLcluster(image, inode, layout, lcn);
}

function loadFullLcluster(
  image: ErofsImage,
  inode: ErofsInode,
  layout: CompressedLayout,
  lcn: number,
): Lcluster {
  const position = layout.indexStart + lcn * Z_FULL_INDEX_SIZE;
  const b = image.read(position, Z_FULL_INDEX_SIZE);
  const type = b.readUInt16LE(0) & 3;
  const lcluster = emptyLcluster(lcn, type, layout, position + Z_FULL_INDEX_SIZE);
  if (type === LclusterType.NONHEAD) {
    const delta0 = b.readUInt16LE(4);
    lcluster.lookahead = b.readUInt16LE(6);
    if (delta0 & Z_D0_CBLKCNT) {
      if (!(layout.advise & (ZAdvise.BIG_PCLUSTER_1 | ZAdvise.BIG_PCLUSTER_2)))
        image.corrupt(`inode ${inode.nid}: block count at lcluster ${lcn} without big pclusters`);
      lcluster.pclusterBlocks = delta0 & ~Z_D0_CBLKCNT;
      lcluster.lookback = 1;
    } else {
      lcluster.lookback = delta0;
    }
  } else {
    lcluster.clusterOffset = b.readUInt16LE(2);
    lcluster.block = b.readUInt32LE(4);
  }
  return lcluster;
}

function loadCompactLcluster(
  image: ErofsImage,
  inode: ErofsInode,
  layout: CompressedLayout,
  lcn: number,
): Lcluster {
  // Entries come as 4-byte ones up to a 32-byte boundary, then 2-byte ones, then 4-byte ones.
  let position = layout.indexStart;
  let entrySize = 4;
  let rest = lcn;
  if (rest >= layout.initial4B) {
    position += layout.initial4B * 4;
    rest -= layout.initial4B;
    if (rest < layout.compact2B) {
      entrySize = 2;
    } else {
      position += layout.compact2B * 2;
      rest -= layout.compact2B;
    }
  }
  position += rest * entrySize;
  // A pack holds `count` entries as bit fields followed by the block address they count from.
  const count = entrySize === 4 ? 2 : 16;
  const packSize = count * entrySize;
  const packStart = position - (position % packSize);
  const pack = image.read(packStart, packSize);
  const bitsPerEntry = ((packSize - 4) * 8) / count;
  const valueBits = Math.max(layout.lclusterBits, 12);
  const valueMask = 2 ** valueBits - 1;
  const entry = (i: number): { type: number; value: number } => {
    const bit = i * bitsPerEntry;
    const v = pack.readUInt32LE(bit >> 3) >>> (bit & 7);
    return { type: (v >>> valueBits) & 3, value: v & valueMask };
  };
  const big = (layout.advise & ZAdvise.BIG_PCLUSTER_1) !== 0;
  const i = (position - packStart) / entrySize;
  const { type, value } = entry(i);
  const lcluster = emptyLcluster(lcn, type, layout, packStart + packSize);
  if (type === LclusterType.NONHEAD) {
    // Distance to the next HEAD: the NONHEADs left in this pack, and the last entry's own
    // value when it is a NONHEAD (the last entry of a pack stores its forward distance).
    let j = i;
    let last = entry(j);
    while (last.type === LclusterType.NONHEAD && j + 1 < count) last = entry(++j);
    if (last.type !== LclusterType.NONHEAD) lcluster.lookahead = j - i;
    else lcluster.lookahead = j - i + (last.value & Z_D0_CBLKCNT ? 1 : last.value);
    if (value & Z_D0_CBLKCNT) {
      if (!big) image.corrupt(`inode ${inode.nid}: block count at lcluster ${lcn} without big pclusters`);
      lcluster.pclusterBlocks = value & ~Z_D0_CBLKCNT;
      lcluster.lookback = 1;
    } else if (i + 1 < count) {
      lcluster.lookback = value;
    } else {
      // The last entry's own value is the forward distance; the one before tells the way back.
      const previous = entry(i - 1);
      if (previous.type !== LclusterType.NONHEAD) lcluster.lookback = 1;
      else lcluster.lookback = (previous.value & Z_D0_CBLKCNT ? 1 : previous.value) + 1;
    }
    return lcluster;
  }
  lcluster.clusterOffset = value;
  // HEADs store no address: count the blocks of the pclusters that start earlier in the pack.
  let blocks = big ? 0 : 1;
  for (let j = i; j > 0; ) {
    j--;
    const e = entry(j);
    if (!big) {
      if (e.type === LclusterType.NONHEAD) j -= e.value;
      if (j >= 0) blocks++;
    } else if (e.type !== LclusterType.NONHEAD) {
      blocks++;
    } else if (e.value & Z_D0_CBLKCNT) {
      blocks += e.value & ~Z_D0_CBLKCNT;
      j--; // its HEAD
    } else {
      // A big pcluster's first NONHEAD carries the block count, so this one is further on.
      if (e.value <= 1) image.corrupt(`inode ${inode.nid}: bad lookback at lcluster ${lcn - i + j}`);
      j -= e.value - 2;
    }
  }
  lcluster.block = pack.readUInt32LE(packSize - 4) + blocks;
  return lcluster;
}

/** The HEAD lcluster of the extent holding logical `offset`, starting from its own lcluster. */
function findHead(
  image: ErofsImage,
  inode: ErofsInode,
  layout: CompressedLayout,
  lcluster: Lcluster,
  offset: number,
): Lcluster {
  let current = lcluster;
  let distance: number;
  if (current.type !== LclusterType.NONHEAD) {
    if (offset % layout.lclusterSize >= current.clusterOffset) return current;
    distance = 1; // the part before this lcluster's HEAD ends the previous extent
  } else {
    distance = current.lookback;
  }
  for (;;) {
    if (distance === 0 || distance > current.lcn)
      image.corrupt(`inode ${inode.nid}: lcluster ${current.lcn} looks back ${distance} lclusters`);
    current = loadLcluster(image, inode, layout, current.lcn - distance);
    if (current.type !== LclusterType.NONHEAD) return current;
    distance = current.lookback;
  }
}

function mapExtent(image: ErofsImage, inode: ErofsInode, layout: CompressedLayout, offset: number): Extent {
  const { lclusterSize } = layout;
  const nid = inode.nid;
  const head = findHead(
    image,
    inode,
    layout,
    loadLcluster(image, inode, layout, Math.floor(offset / lclusterSize)),
    offset,
  );
  if (head.clusterOffset >= lclusterSize)
    image.corrupt(`inode ${nid}: lcluster ${head.lcn} starts past its end`);
  const start = head.lcn * lclusterSize + head.clusterOffset;

  // The extent runs to the next HEAD (skipping NONHEADs by their forward distance) or to EOF.
  let end = inode.size;
  for (let lcn = head.lcn + 1; lcn * lclusterSize < inode.size; ) {
    const next = loadLcluster(image, inode, layout, lcn);
    if (next.type !== LclusterType.NONHEAD) {
      end = Math.min(inode.size, lcn * lclusterSize + next.clusterOffset);
      break;
    }
    if (next.lookahead === 0) {
      end = Math.min(inode.size, (lcn + 1) * lclusterSize);
      break;
    }
    lcn += next.lookahead;
    if (lcn * lclusterSize - start > Z_EXTENT_MAX_SIZE) break; // refused just below
  }
  const length = end - start;
  if (length <= 0 || length > Z_EXTENT_MAX_SIZE)
    image.corrupt(`inode ${nid}: extent at ${start} decompresses to ${length} bytes`);

  const algorithm =
    head.type === LclusterType.PLAIN ? 'plain' : layout.algorithms[head.type === LclusterType.HEAD2 ? 1 : 0]!;
  let position: number;
  let physicalLength: number;
  if (layout.tail && head.lcn === layout.tail.headLcn) {
    ({ position, length: physicalLength } = layout.tail);
  } else {
    position = head.block * image.blockSize;
    physicalLength = pclusterLength(image, inode, layout, head);
  }
  if (algorithm === 'plain' && length > physicalLength)
    image.corrupt(
      `inode ${nid}: uncompressed extent of ${length} bytes in a ${physicalLength}-byte pcluster`,
    );
  return { start, length, position, physicalLength, algorithm };
}

function pclusterLength(
  image: ErofsImage,
  inode: ErofsInode,
  layout: CompressedLayout,
  head: Lcluster,
): number {
  const bigFor = head.type === LclusterType.HEAD2 ? ZAdvise.BIG_PCLUSTER_2 : ZAdvise.BIG_PCLUSTER_1;
  if (head.type === LclusterType.PLAIN || !(layout.advise & bigFor)) return layout.lclusterSize;
  // A big pcluster's size is on the first NONHEAD after its HEAD; a HEAD there means one lcluster.
  const next = loadLcluster(image, inode, layout, head.lcn + 1);
  if (next.type !== LclusterType.NONHEAD) return layout.lclusterSize;
  const length = next.pclusterBlocks * image.blockSize;
  if (next.lookback !== 1 || length === 0 || length > Z_PCLUSTER_MAX_SIZE)
    image.corrupt(`inode ${inode.nid}: bad pcluster block count after lcluster ${head.lcn}`);
  return length;
}

function decompressExtent(image: ErofsImage, inode: ErofsInode, extent: Extent): Buffer {
  const cached = lastExtent.get(image);
  if (
    cached &&
    cached.nid === inode.nid &&
    cached.start === extent.start &&
    cached.data.length === extent.length
  )
    return cached.data;
  if (extent.algorithm !== ZAlgorithm.LZ4) {
    const name = Z_ALGORITHM_NAMES[extent.algorithm as number] ?? `algorithm ${extent.algorithm}`;
    throw new ErofsError(
      'EROFS_UNSUPPORTED',
      `${image.path}: inode ${inode.nid} is compressed with ${name}; Seal reads lz4 and lz4hc only`,
      { subject: image.path },
    );
  }
  let input = image.read(extent.position, extent.physicalLength);
  // With 0-padding the compressed bytes end the pcluster and zeros lead up to them (an LZ4
  // block never starts with a zero byte); without it they start it and zeros follow.
  if (image.superblock.featureIncompat & FeatureIncompat.ZERO_PADDING) {
    let margin = 0;
    while (margin < input.length && input[margin] === 0) margin++;
    if (margin === input.length)
      image.corrupt(`inode ${inode.nid}: empty pcluster for the extent at ${extent.start}`);
    input = input.subarray(margin);
  }
  let data: Buffer;
  try {
    // Partial: a pcluster may decompress to more than the extent uses.
    data = decompressLz4Block(input, extent.length, { partial: true });
  } catch (error) {
    if (!(error instanceof Lz4Error)) throw error;
    throw new ErofsError(
      'EROFS_CORRUPT',
      `${image.path}: inode ${inode.nid}: the extent at ${extent.start} does not decompress (${error.message})`,
      { subject: image.path, cause: error },
    );
  }
  if (data.length !== extent.length)
    image.corrupt(
      `inode ${inode.nid}: the extent at ${extent.start} decompresses to ${data.length} of ${extent.length} bytes`,
    );
  lastExtent.set(image, { nid: inode.nid, start: extent.start, data });
  return data;
}
