/**
 * Block hashing, the hot loop of both dm-verity and fs-verity: the digests of a buffer's blocks,
 * and of a file's blocks streamed in order through a fixed window of reusable buffers. With the
 * addon, reading and hashing run on libuv's threads (one per core) straight into those buffers;
 * without it, on the worker pool, which reads its ranges itself. Either way the memory in use
 * is the window, whatever the size of the file.
 */
import { hash } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { loadAddon } from '../util/native.ts';
import { sharedPool } from '../util/pool.ts';
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
type NativeHashFileBlocks = (
  fd: number,
  position: number,
  blockSize: number,
  algorithm: string,
  prefix: Uint8Array,
  suffix: Uint8Array,
  buffer: Uint8Array,
  out: Uint8Array,
  stride: number,
) => Promise<number>;

interface BlockhashAddon {
  hashBlocks: NativeHashBlocks;
  hashFileBlocks: NativeHashFileBlocks;
  adviseSequential: (fd: number) => void;
}

const addon: BlockhashAddon | undefined = (() => {
  const loaded = loadAddon<BlockhashAddon>('blockhash');
  return loaded instanceof Error ? undefined : loaded;
})();
const nativeHashBlocks = addon?.hashBlocks;

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

/** Digests of `count` consecutive blocks from `first`, each in a `stride`-byte slot. */
export interface DigestRun {
  first: number;
  count: number;
  /** Valid until the iteration continues: its memory is reused for a later run. */
  digests: Uint8Array;
}

/** Bytes of a file read and hashed per step (rounded to whole blocks). */
const CHUNK_BYTES = 1 << 20;
/** The same for the worker pool, whose every task costs a message each way. */
const POOL_CHUNK_BYTES = 8 << 20;

export interface FileDigestOptions {
  /** Bytes per step (default 1 MiB, 8 MiB on the worker pool). */
  chunkBytes?: number;
  /** Use the addon (default: when it is built); false hashes on the worker pool. */
  native?: boolean;
  /** Steps in flight at once (default: one per core, plus one being consumed). */
  window?: number;
}

/**
 * The digests of blocks [first, first + count) of the file at `path` (block i at byte
 * `offset + i * blockSize`; past the end of the file, blocks read as zeros), in order, a run at a
 * time. At most `window` runs are read and hashed ahead of the consumer, each into buffers of
 * its own that are reused, so memory stays fixed and a slow consumer holds the readers back.
 */
export async function* fileBlockDigests(
  path: string,
  offset: number,
  first: number,
  count: number,
  h: BlockHashing,
  stride: number,
  options: FileDigestOptions = {},
): AsyncGenerator<DigestRun> {
  if (count <= 0) return;
  const native = options.native === false ? undefined : addon;
  const chunkBytes = options.chunkBytes ?? (native ? CHUNK_BYTES : POOL_CHUNK_BYTES);
  const perRun = Math.min(count, Math.max(1, Math.floor(chunkBytes / h.blockSize)));
  const runs = Math.ceil(count / perRun);
  const window = Math.min(runs, Math.max(1, options.window ?? defaultWindow()));
  const step = native ? nativeStep(native, path, h, stride, perRun) : poolStep(path, h, stride);
  const inFlight: { first: number; count: number; slot: number; done: Promise<Uint8Array> }[] = [];
  let next = first;
  const issue = (slot: number) => {
    const n = Math.min(perRun, first + count - next);
    const done = step.run(slot, offset + next * h.blockSize, n);
    // Settled later, in order; a failure is seen then, not reported as unhandled now.
    done.catch(() => {});
    inFlight.push({ first: next, count: n, slot, done });
    next += n;
  };
  try {
    for (let slot = 0; slot < window; slot++) issue(slot);
    while (inFlight.length > 0) {
      const run = inFlight[0]!;
      const digests = await run.done;
      yield { first: run.first, count: run.count, digests };
      inFlight.shift();
      if (next < first + count) issue(run.slot);
    }
  } finally {
    // Reads still running write into this window's buffers and use the file: let them end.
    await Promise.allSettled(inFlight.map((r) => r.done));
    step.close();
  }
}

function defaultWindow(): number {
  const env = Number(process.env.SEAL_THREADS);
  return (Number.isInteger(env) && env > 0 ? env : availableParallelism()) + 1;
}

interface Step {
  /** Reads and hashes `count` blocks at `position` with `slot`'s buffers; the digests. */
  run(slot: number, position: number, count: number): Promise<Uint8Array>;
  close(): void;
}

function nativeStep(
  native: BlockhashAddon,
  path: string,
  h: BlockHashing,
  stride: number,
  perRun: number,
): Step {
  const fd = openSync(path, 'r');
  native.adviseSequential(fd);
  const slots: { buffer: Uint8Array; out: Uint8Array }[] = [];
  return {
    async run(slot, position, count) {
      // Allocated once per slot, on first use, and reused for every later run.
      slots[slot] ??= {
        buffer: new Uint8Array(perRun * h.blockSize),
        out: new Uint8Array(perRun * stride),
      };
      const { buffer, out } = slots[slot]!;
      await native.hashFileBlocks(
        fd,
        position,
        h.blockSize,
        h.algorithm,
        h.prefix,
        h.suffix,
        buffer.subarray(0, count * h.blockSize),
        out,
        stride,
      );
      return out.subarray(0, count * stride);
    },
    close: () => closeSync(fd),
  };
}

const HASHING = new URL(import.meta.url).href;

function poolStep(path: string, h: BlockHashing, stride: number): Step {
  return {
    run: (_slot, position, count) =>
      sharedPool().run<Uint8Array>(HASHING, 'hashFileRange', [path, position, count, h, stride]),
    close: () => {},
  };
}

/** A worker's read buffer, kept for its next range. */
let rangeBuffer: Buffer | undefined;

/**
 * Hashes `count` blocks of the file at `path` from byte `position` (zeros past its end), for a
 * worker of the pool when the addon is missing. Returns the digests in `stride`-byte slots.
 */
export function hashFileRange(
  path: string,
  position: number,
  count: number,
  h: BlockHashing,
  stride: number,
): Uint8Array {
  const out = new Uint8Array(count * stride);
  const perRead = Math.max(1, Math.floor(CHUNK_BYTES / h.blockSize));
  if (!rangeBuffer || rangeBuffer.length < perRead * h.blockSize)
    rangeBuffer = Buffer.alloc(perRead * h.blockSize);
  const fd = openSync(path, 'r');
  try {
    for (let done = 0; done < count; done += perRead) {
      const n = Math.min(perRead, count - done);
      const want = n * h.blockSize;
      const buffer = rangeBuffer.subarray(0, want);
      const got = readFullySync(fd, buffer, position + done * h.blockSize);
      buffer.fill(0, got, want);
      hashBlocksInto(h, buffer, out, done * stride, stride);
    }
  } finally {
    closeSync(fd);
  }
  return out;
}
