/**
 * Block compressors. zstd and the gzip decoder come from node:zlib, lz4 from util/lz4.ts; the
 * codecs addon (native/codecs.c) encodes gzip with libdeflate (zlib streams, as the kernel's
 * squashfs zlib decompressor expects: smaller than zlib's -9 and made 2-4x faster) and provides
 * xz and LZO from liblzma and liblzo2, the libraries squashfs-tools uses. There is deliberately no
 * fallback encoder: the same tree and options must give the same bytes on every installation.
 * These functions are pure so they run in workers.
 */
import { constants, inflateSync, zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { type Codecs, loadCodecs } from '../util/codecs.ts';
import { decompressLz4Block } from '../util/lz4.ts';
import { Compressor, type CompressorName, METADATA_SIZE, SquashfsError } from './format.ts';

export type WriteCompression = 'none' | 'gzip' | 'zstd' | 'xz';

/** mksquashfs defaults: gzip level 9, zstd level 15, xz preset 6 (liblzma's default). */
export const DEFAULT_LEVEL: Record<WriteCompression, number> = { none: 0, gzip: 9, zstd: 15, xz: 6 };
export const LEVEL_RANGE: Record<WriteCompression, [number, number]> = {
  none: [0, 0],
  gzip: [1, 9],
  zstd: [1, 22],
  xz: [0, 9],
};

/**
 * The branch/call/jump filters xz can run before LZMA2 to make machine code compress better,
 * with their .xz filter ids, in the order of the bits of squashfs's xz compressor options.
 */
export const XZ_FILTERS = {
  x86: 0x04,
  powerpc: 0x05,
  ia64: 0x06,
  arm: 0x07,
  armthumb: 0x08,
  sparc: 0x09,
  arm64: 0x0a,
  riscv: 0x0b,
} as const;
export type XzFilter = keyof typeof XZ_FILTERS;

/** How blocks of one kind (data or metadata) are compressed; plain data, so workers get it. */
export interface BlockCodec {
  kind: WriteCompression;
  level: number;
  /** xz: the LZMA2 dictionary, the block size for data and 8 KiB for metadata as mksquashfs. */
  dictSize: number;
  /** xz: filter ids tried in front of LZMA2 (the smallest result wins), data blocks only. */
  filters: number[];
}

/** The codecs addon, or a typed error saying why xz/LZO are unavailable. */
function nativeCodecs(what: string, subject?: string): Codecs {
  const codecs = loadCodecs();
  if (codecs instanceof Error) {
    throw new SquashfsError(
      'SQUASHFS_UNSUPPORTED',
      `${subject ? `${subject}: ` : ''}${what} needs the codecs addon, which did not load (run scripts/setup.sh): ${codecs.message}`,
      { subject, cause: codecs },
    );
  }
  return codecs;
}

/** Compresses one block; returns undefined when compression does not make it smaller. */
export function compressBlock(codec: BlockCodec, data: Uint8Array): Uint8Array | undefined {
  let out: Uint8Array | undefined;
  switch (codec.kind) {
    case 'none':
      return undefined;
    case 'gzip':
      out = nativeCodecs('gzip').deflateCompress(data, codec.level);
      break;
    case 'zstd':
      out = zstdCompressSync(data, { params: { [constants.ZSTD_c_compressionLevel]: codec.level } });
      break;
    case 'xz':
      out = nativeCodecs('xz').xzCompress(data, codec.level, codec.dictSize, codec.filters);
      break;
  }
  return out && out.length < data.length ? out : undefined;
}

/** The codecs for data blocks and for metadata blocks, as mksquashfs sets them up. */
export function blockCodecs(
  kind: WriteCompression,
  level: number,
  blockSize: number,
  filters: readonly XzFilter[],
): { data: BlockCodec; metadata: BlockCodec } {
  return {
    data: { kind, level, dictSize: blockSize, filters: filters.map((f) => XZ_FILTERS[f]) },
    metadata: { kind, level, dictSize: METADATA_SIZE, filters: [] },
  };
}

/**
 * The compressor options block mksquashfs stores after the superblock when its settings are
 * not the compressor's defaults (readers such as `unsquashfs -s` show them); undefined if none.
 */
export function compressorOptions(
  kind: WriteCompression,
  level: number,
  blockSize: number,
  filters: readonly XzFilter[],
): Buffer | undefined {
  if (kind === 'gzip' && level !== DEFAULT_LEVEL.gzip) {
    const options = Buffer.alloc(8);
    options.writeInt32LE(level, 0);
    options.writeInt16LE(15, 4); // window bits
    options.writeInt16LE(0, 6); // no strategies
    return options;
  }
  if (kind === 'zstd' && level !== DEFAULT_LEVEL.zstd) {
    const options = Buffer.alloc(4);
    options.writeInt32LE(level, 0);
    return options;
  }
  // The dictionary is always the block size here, so only chosen filters make xz options.
  if (kind === 'xz' && filters.length > 0) {
    const names = Object.keys(XZ_FILTERS) as XzFilter[];
    const options = Buffer.alloc(8);
    options.writeInt32LE(blockSize, 0); // the dictionary
    options.writeInt32LE(
      filters.reduce((bits, f) => bits | (1 << names.indexOf(f)), 0),
      4,
    );
    return options;
  }
  return undefined;
}

export function compressorId(kind: WriteCompression): number {
  return kind === 'none' ? Compressor.gzip : Compressor[kind];
}

export function compressorName(id: number): CompressorName | undefined {
  return (Object.keys(Compressor) as CompressorName[]).find((k) => Compressor[k] === id);
}

/**
 * The decoder of a compressor id: decompresses a block of at most `limit` bytes, with typed
 * errors for corrupt data. An unsupported compressor is refused here, before any block is read.
 */
export function blockDecoder(id: number, subject: string): (data: Uint8Array, limit: number) => Buffer {
  const decode = decoder(id, subject);
  return (data, limit) => {
    try {
      return decode(data, limit);
    } catch (error) {
      throw new SquashfsError(
        'SQUASHFS_CORRUPT',
        `${subject}: a compressed block is corrupt (${(error as Error).message})`,
        { subject, cause: error },
      );
    }
  };
}

function decoder(id: number, subject: string): (data: Uint8Array, limit: number) => Buffer {
  switch (id) {
    case Compressor.gzip:
      return (data, limit) => inflateSync(data, { maxOutputLength: limit });
    case Compressor.zstd:
      return (data, limit) => zstdDecompressSync(data, { maxOutputLength: limit });
    case Compressor.lz4:
      return decompressLz4Block;
    case Compressor.xz: {
      const native = nativeCodecs('xz', subject);
      return (data, limit) => native.xzDecompress(data, limit);
    }
    case Compressor.lzo: {
      const native = nativeCodecs('lzo', subject);
      return (data, limit) => native.lzoDecompress(data, limit);
    }
  }
  throw new SquashfsError(
    'SQUASHFS_UNSUPPORTED',
    `${subject}: ${compressorName(id) ?? `compressor ${id}`} compression is not supported (gzip, zstd, xz, lzo and lz4 are)`,
    { subject },
  );
}
