/**
 * xxHash32, the hash EROFS uses for its per-inode xattr name bloom filter. Written from the
 * published algorithm description (four 32-bit lanes, five primes, final avalanche).
 */
const P1 = 2654435761;
const P2 = 2246822519;
const P3 = 3266489917;
const P4 = 668265263;
const P5 = 374761393;

const rotl = (x: number, r: number) => ((x << r) | (x >>> (32 - r))) >>> 0;
const mul = (a: number, b: number) => Math.imul(a, b) >>> 0;
const round = (acc: number, lane: number) => mul(rotl((acc + mul(lane, P2)) >>> 0, 13), P1);

export function xxh32(input: Uint8Array, seed: number): number {
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  const length = input.length;
  let p = 0;
  let h: number;
  if (length >= 16) {
    let v1 = (seed + P1 + P2) >>> 0;
    let v2 = (seed + P2) >>> 0;
    let v3 = seed >>> 0;
    let v4 = (seed - P1) >>> 0;
    for (; p + 16 <= length; p += 16) {
      v1 = round(v1, view.getUint32(p, true));
      v2 = round(v2, view.getUint32(p + 4, true));
      v3 = round(v3, view.getUint32(p + 8, true));
      v4 = round(v4, view.getUint32(p + 12, true));
    }
    h = (rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)) >>> 0;
  } else {
    h = (seed + P5) >>> 0;
  }
  h = (h + length) >>> 0;
  for (; p + 4 <= length; p += 4) h = mul(rotl((h + mul(view.getUint32(p, true), P3)) >>> 0, 17), P4);
  for (; p < length; p++) h = mul(rotl((h + mul(input[p]!, P5)) >>> 0, 11), P1);
  h = mul(h ^ (h >>> 15), P2);
  h = mul(h ^ (h >>> 13), P3);
  return (h ^ (h >>> 16)) >>> 0;
}
