/**
 * LZ4 block decompression (the format squashfs and EROFS store), every read bounds-checked.
 * Written here because Node has no LZ4 and the maintained bindings need platform binaries
 * that npm does not fetch on this machine; the block format is a few dozen lines.
 */
export class Lz4Error extends Error {}

export function decompressLz4Block(src: Uint8Array, limit: number): Buffer {
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
  while (ip < src.length) {
    const token = src[ip++]!;
    const literals = length(token >> 4);
    if (ip + literals > src.length) fail('literals past the end of the input');
    if (op + literals > limit) fail('output larger than a block');
    out.set(src.subarray(ip, ip + literals), op);
    ip += literals;
    op += literals;
    if (ip === src.length) break; // the last sequence has literals only
    if (ip + 2 > src.length) fail('truncated match offset');
    const offset = src[ip]! | (src[ip + 1]! << 8);
    ip += 2;
    if (offset === 0 || offset > op) fail('match offset outside the output');
    const match = length(token & 15) + 4;
    if (op + match > limit) fail('output larger than a block');
    // Matches may overlap their own output: copy forward byte by byte when they do.
    if (offset >= match) out.copy(out, op, op - offset, op - offset + match);
    else for (let i = 0; i < match; i++) out[op + i] = out[op - offset + i]!;
    op += match;
  }
  return out.subarray(0, op);
}
