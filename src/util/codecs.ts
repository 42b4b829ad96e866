/**
 * The codecs addon (native/codecs.c): raw deflate with libdeflate, xz with liblzma (squashfs
 * blocks, kernel modules), LZO with liblzo2. Loaded once, on first use.
 */
import { loadAddon } from './native.ts';

export interface Codecs {
  deflateCompress(data: Uint8Array, level: number): Buffer | undefined;
  xzCompress(data: Uint8Array, preset: number, dictSize: number, filters: number[]): Buffer | undefined;
  /** Decodes a whole .xz stream of at most `limit` bytes. */
  xzDecompress(data: Uint8Array, limit: number): Buffer;
  lzoDecompress(data: Uint8Array, limit: number): Buffer;
}

let codecs: Codecs | Error | undefined;

/** The addon, or the Error that says why it did not load. */
export function loadCodecs(): Codecs | Error {
  codecs ??= loadAddon<Codecs>('codecs');
  return codecs;
}
