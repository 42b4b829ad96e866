/**
 * Block hashing, the hot loop of both dm-verity and fs-verity. Pure functions of a file range,
 * so the worker pool can run them: each worker reads its range itself (no data crosses
 * threads) and returns the packed digests.
 */
import { createHash, type Hash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';

export type HashAlgorithm = 'sha1' | 'sha256' | 'sha512';

export const DIGEST_SIZE: Record<HashAlgorithm, number> = { sha1: 20, sha256: 32, sha512: 64 };

export interface BlockHashing {
  algorithm: HashAlgorithm;
  blockSize: number;
  /** Bytes hashed before each block (dm-verity v1, fs-verity) — already padded as the format wants. */
  prefix: Uint8Array;
  /** Bytes hashed after each block (dm-verity v0). */
  suffix: Uint8Array;
}

function seeded(h: BlockHashing): Hash {
  const base = createHash(h.algorithm);
  if (h.prefix.length) base.update(h.prefix);
  return base;
}

/** Hashes whole blocks of `data` (a multiple of the block size) into `out` at `outOffset`. */
export function hashBlocksInto(
  h: BlockHashing,
  data: Uint8Array,
  out: Uint8Array,
  outOffset: number,
  stride: number,
): void {
  const base = seeded(h);
  const size = DIGEST_SIZE[h.algorithm];
  for (let i = 0, o = outOffset; i < data.length; i += h.blockSize, o += stride) {
    const hash = base.copy();
    hash.update(data.subarray(i, i + h.blockSize));
    if (h.suffix.length) hash.update(h.suffix);
    const digest = hash.digest();
    out.set(size === stride ? digest : digest.subarray(0, size), o);
  }
}

/**
 * Hashes `count` blocks of the file at `path` starting at byte `offset`, the last one
 * zero-padded if the file ends inside it. Returns the digests, each in a `stride`-byte slot.
 */
export function hashFileBlocks(
  path: string,
  offset: number,
  count: number,
  h: BlockHashing,
  stride: number,
): Uint8Array {
  const out = new Uint8Array(count * stride);
  const perRead = Math.max(1, Math.floor((4 << 20) / h.blockSize));
  const buffer = Buffer.alloc(perRead * h.blockSize);
  const fd = openSync(path, 'r');
  try {
    for (let done = 0; done < count; done += perRead) {
      const n = Math.min(perRead, count - done);
      const want = n * h.blockSize;
      let got = 0;
      while (got < want) {
        const r = readSync(fd, buffer, got, want - got, offset + done * h.blockSize + got);
        if (r === 0) break;
        got += r;
      }
      buffer.fill(0, got, want);
      hashBlocksInto(h, buffer.subarray(0, want), out, done * stride, stride);
    }
  } finally {
    closeSync(fd);
  }
  return out;
}
