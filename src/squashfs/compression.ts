/**
 * Block compressors. gzip (zlib stream format, as the kernel's squashfs zlib decompressor
 * expects) and zstd come from node:zlib; these functions are pure so they run in workers.
 */
import { constants, deflateSync, inflateSync, zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { Compressor, type CompressorName, SquashfsError } from './format.ts';
import { decompressLz4Block } from '../util/lz4.ts';

export type WriteCompression = 'none' | 'gzip' | 'zstd';

/** mksquashfs defaults: gzip level 9, zstd level 15. */
export const DEFAULT_LEVEL: Record<WriteCompression, number> = { none: 0, gzip: 9, zstd: 15 };
export const LEVEL_RANGE: Record<WriteCompression, [number, number]> = {
  none: [0, 0],
  gzip: [1, 9],
  zstd: [1, 22],
};

/** Compresses one block; returns undefined when compression does not make it smaller. */
export function compressBlock(
  kind: WriteCompression,
  level: number,
  data: Uint8Array,
): Uint8Array | undefined {
  if (kind === 'none') return undefined;
  const out =
    kind === 'gzip'
      ? deflateSync(data, { level, windowBits: 15 })
      : zstdCompressSync(data, { params: { [constants.ZSTD_c_compressionLevel]: level } });
  return out.length < data.length ? out : undefined;
}

/** Compresses a batch of blocks in one worker call (fewer messages between threads). */
export function compressBlocks(
  kind: WriteCompression,
  level: number,
  blocks: Uint8Array[],
): (Uint8Array | undefined)[] {
  return blocks.map((b) => compressBlock(kind, level, b));
}

export function compressorId(kind: WriteCompression): number {
  return kind === 'zstd' ? Compressor.zstd : Compressor.gzip;
}

export function compressorName(id: number): CompressorName | undefined {
  return (Object.keys(Compressor) as CompressorName[]).find((k) => Compressor[k] === id);
}

/** Decompresses a block of at most `limit` bytes, with typed errors for corrupt data. */
export function decompressBlock(id: number, data: Uint8Array, limit: number, subject: string): Buffer {
  try {
    switch (id) {
      case Compressor.gzip:
        return inflateSync(data, { maxOutputLength: limit });
      case Compressor.zstd:
        return zstdDecompressSync(data, { maxOutputLength: limit });
      case Compressor.lz4:
        return decompressLz4Block(data, limit);
    }
  } catch (error) {
    throw new SquashfsError(
      'SQUASHFS_CORRUPT',
      `${subject}: a compressed block is corrupt (${(error as Error).message})`,
      {
        subject,
        cause: error,
      },
    );
  }
  throw new SquashfsError(
    'SQUASHFS_UNSUPPORTED',
    `${subject}: ${compressorName(id) ?? `compressor ${id}`} compression is not supported (gzip, zstd and lz4 are)`,
    { subject },
  );
}
