/**
 * LZ4 block decompression (the format squashfs and EROFS store), every read bounds-checked.
 * Written here because Node has no LZ4 and the maintained bindings need platform binaries
 * that npm does not fetch on this machine; the block format is a few dozen lines.
 */
export class Lz4Error extends Error {}

export interface Lz4Options {
  /**
   * Stop as soon as `limit` bytes are out instead of refusing a stream that would produce
   * more. EROFS needs this: a pcluster may hold more than the extent being read, and images
   * without 0-padding follow their compressed data with zeros up to the block end.
   */
  partial?: boolean;
}

/** Matches at least this long that overlap their own output are copied in doubling chunks. */
const CHUNKED_OVERLAP = 32;

export function decompressLz4Block(src: Uint8Array, limit: number, options: Lz4Options = {}): Buffer {
  const partial = options.partial === true;
  const out = Buffer.allocUnsafe(limit);
  let ip = 0;
  let op = 0;
  const fail = (why: string): never => {
    throw new Lz4Error(`lz4: ${why}`);
  };
  const length = (base: number): number => {
    let n = base;
    if (base === 15) {
      for (;;) {
        if (ip >= src.length) fail('truncated length');
        const b = src[ip++]!;
        n += b;
        if (b !== 255) break;
      }
    }
    return n;
  };
  while (ip < src.length && !(partial && op === limit)) {
    const token = src[ip++]!;
    let literals = length(token >> 4);
    if (partial) literals = Math.min(literals, limit - op);
    if (ip + literals > src.length) fail('literals past the end of the input');
    if (op + literals > limit) fail('output larger than a block');
    out.set(src.subarray(ip, ip + literals), op);
    ip += literals;
    op += literals;
    if (ip === src.length) break; // the last sequence has literals only
    if (partial && op === limit) break;
    if (ip + 2 > src.length) fail('truncated match offset');
    const offset = src[ip]! | (src[ip + 1]! << 8);
    ip += 2;
    if (offset === 0 || offset > op) fail('match offset outside the output');
    let match = length(token & 15) + 4;
    if (op + match > limit) {
      if (!partial) fail('output larger than a block');
      match = limit - op;
    }
    if (offset >= match) out.copy(out, op, op - offset, op - offset + match);
    else if (match < CHUNKED_OVERLAP) for (let i = 0; i < match; i++) out[op + i] = out[op - offset + i]!;
    else {
      // The output repeats with period `offset`: copy what is already there, which doubles
      // the available pattern each time, instead of going byte by byte.
      const from = op - offset;
      for (let at = op, end = op + match; at < end; ) {
        const n = Math.min(at - from, end - at);
        out.copyWithin(at, from, from + n);
        at += n;
      }
    }
    op += match;
  }
  return out.subarray(0, op);
}
