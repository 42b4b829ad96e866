/**
 * Block hashing, the hot loop of both dm-verity and fs-verity. Pure functions of a file range,
 * so the worker pool can run them: each worker reads its range itself (no data crosses
 * threads) and returns the packed digests.
 */
import { hash } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { loadAddon } from '../util/native.ts';
import { readFullySync } from '../util/read.ts';

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

type NativeHashBlocks = (
  algorithm: string,
  data: Uint8Array,
  blockSize: number,
  prefix: Uint8Array,
  suffix: Uint8Array,
  out: Uint8Array,
  outOffset: number,
  stride: number,
) => void;

/**
 * The block-hashing addon (native/blockhash.c, built by scripts/setup.sh): one call hashes a
 * whole buffer of blocks with Node's own OpenSSL, where JavaScript pays a crypto call per block
 * (measured: 1.43 against 0.79 GB/s on one core for 4 KiB SHA-256 blocks). Without it (no
 * compiler where Seal was installed) the same digests come from node:crypto, more slowly.
 */
const nativeHashBlocks: NativeHashBlocks | undefined = (() => {
  const addon = loadAddon<{ hashBlocks: NativeHashBlocks }>('blockhash');
  return addon instanceof Error ? undefined : addon.hashBlocks;
})();

/** Whether block hashing runs in the native addon. */
export const nativeHashing = nativeHashBlocks !== undefined;

/**
 * Hashes whole blocks of `data` (a multiple of the block size) into `out` at `outOffset`.
 */
export function hashBlocksInto(
  h: BlockHashing,
  data: Uint8Array,
  out: Uint8Array,
  outOffset: number,
  stride: number,
): void {
  if (nativeHashBlocks)
    nativeHashBlocks(h.algorithm, data, h.blockSize, h.prefix, h.suffix, out, outOffset, stride);
  else hashBlocksWithNodeCrypto(h, data, out, outOffset, stride);
}

/**
 * The same with one-shot `crypto.hash` calls over a scratch buffer holding prefix ‖ block ‖
 * suffix: Node's per-call overhead dominates 4 KiB hashes, and this is its cheapest call.
 */
export function hashBlocksWithNodeCrypto(
  h: BlockHashing,
  data: Uint8Array,
  out: Uint8Array,
  outOffset: number,
  stride: number,
): void {
  const size = DIGEST_SIZE[h.algorithm];
  const plain = h.prefix.length === 0 && h.suffix.length === 0;
  const scratch = plain ? undefined : Buffer.alloc(h.prefix.length + h.blockSize + h.suffix.length);
  if (scratch) {
    scratch.set(h.prefix, 0);
    scratch.set(h.suffix, h.prefix.length + h.blockSize);
  }
  for (let i = 0, o = outOffset; i < data.length; i += h.blockSize, o += stride) {
    const block = data.subarray(i, i + h.blockSize);
    let input: Uint8Array = block;
    if (scratch) {
      scratch.set(block, h.prefix.length);
      input = scratch;
    }
    const digest = hash(h.algorithm, input, 'buffer');
    out.set(digest.length === size ? digest : digest.subarray(0, size), o);
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
      const got = readFullySync(fd, buffer.subarray(0, want), offset + done * h.blockSize);
      buffer.fill(0, got, want);
      hashBlocksInto(h, buffer.subarray(0, want), out, done * stride, stride);
    }
  } finally {
    closeSync(fd);
  }
  return out;
}
