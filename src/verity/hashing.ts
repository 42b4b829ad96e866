/**
 * Block hashing, the hot loop of both dm-verity and fs-verity: the digests of a buffer's blocks,
 * and of a file's blocks streamed in order, a fixed window of steps in flight. With the addon,
 * reading and hashing run on libuv's threads (one step per core at a time, each thread reading
 * into a buffer of its own); without it, on the worker pool, which reads its ranges itself.
 * Either way the memory in use is fixed, whatever the size of the file.
 */
import { hash } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { loadAddon } from '../util/native.ts';
import { sourceUrl } from '../util/paths.ts';
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
  count: number,
  out: Uint8Array,
  stride: number,
  multiBuffer: boolean,
) => Promise<number>;

interface BlockhashAddon {
  hashBlocks: NativeHashBlocks;
  hashFileBlocks: NativeHashFileBlocks;
  adviseSequential: (fd: number) => void;
  multiBufferEngine: () => string | undefined;
}

// Loaded when first used, not when the module is evaluated: the agent's V8 startup snapshot is
// made on a build host, where the device's addon path does not exist.
let loaded: BlockhashAddon | null | undefined;
function blockhash(): BlockhashAddon | undefined {
  if (loaded === undefined) {
    const addon = loadAddon<BlockhashAddon>('blockhash');
    loaded = addon instanceof Error ? null : addon;
  }
  return loaded ?? undefined;
}

/** Whether block hashing runs in the native addon. */
export function nativeHashing(): boolean {
  return blockhash() !== undefined;
}

/**
 * The multi-buffer engine that hashes a file's blocks side by side (native/blockhash.c), e.g.
 * "intel-ipsec-mb 1.3.0 AVX512", or undefined where there is none (not x86-64, or the library
 * is not installed): then each thread hashes its blocks one by one with OpenSSL.
 */
export function multiBufferEngine(): string | undefined {
  return blockhash()?.multiBufferEngine();
}

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
  const nativeHashBlocks = blockhash()?.hashBlocks;
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

/**
 * Bytes of a file per step on the addon's threads: a quarter of each thread's share of what is
 * left, so that the steps shrink towards the end and the cores finish together, within bounds
 * that keep the steps few (each costs a round trip through the event loop and some JavaScript)
 * and the first ones quick. A thread reads a step 256 KiB at a time into a buffer of its own;
 * what a step holds in JavaScript is only its digests (1/128 of it for SHA-256).
 */
const MIN_STEP = 256 << 10;
const MAX_STEP = 32 << 20;
/** The same on the worker pool, whose every task costs a message each way. */
const POOL_STEP = 8 << 20;

export interface FileDigestOptions {
  /** Bytes per step, all alike (default: see MIN_STEP/MAX_STEP; 8 MiB on the worker pool). */
  chunkBytes?: number;
  /** Use the addon (default: when it is built); false hashes on the worker pool. */
  native?: boolean;
  /** Let the addon use its multi-buffer engine (default: where there is one). */
  multiBuffer?: boolean;
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
  const native = options.native === false ? undefined : blockhash();
  const threads = parallelism();
  const blocksOf = (bytes: number) => Math.max(1, Math.floor(bytes / h.blockSize));
  const minRun = blocksOf(options.chunkBytes ?? (native ? MIN_STEP : POOL_STEP));
  const maxRun = Math.min(count, blocksOf(options.chunkBytes ?? (native ? MAX_STEP : POOL_STEP)));
  const window = Math.min(Math.ceil(count / minRun), Math.max(1, options.window ?? threads + 1));
  const step = native
    ? nativeStep(native, path, h, stride, maxRun, options.multiBuffer ?? true)
    : poolStep(path, h, stride);
  const inFlight: { first: number; count: number; slot: number; done: Promise<Uint8Array> }[] = [];
  let next = first;
  const issue = (slot: number) => {
    const left = first + count - next;
    const n = Math.min(left, Math.max(minRun, Math.min(maxRun, Math.floor(left / (threads * 4)))));
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

/** Threads that hash at once: SEAL_THREADS, else one per core. */
function parallelism(): number {
  const env = Number(process.env.SEAL_THREADS);
  return Number.isInteger(env) && env > 0 ? env : availableParallelism();
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
  multiBuffer: boolean,
): Step {
  const fd = openSync(path, 'r');
  native.adviseSequential(fd);
  // Each slot's digests, allocated on first use and reused for every later step.
  const outs: Uint8Array[] = [];
  return {
    async run(slot, position, count) {
      const out = (outs[slot] ??= new Uint8Array(perRun * stride));
      await native.hashFileBlocks(
        fd,
        position,
        h.blockSize,
        h.algorithm,
        h.prefix,
        h.suffix,
        count,
        out,
        stride,
        multiBuffer,
      );
      return out.subarray(0, count * stride);
    },
    close: () => closeSync(fd),
  };
}

// Resolved from util/, which also holds for the device agent's bundle (util/paths.ts).
const HASHING = sourceUrl('verity/hashing.ts').href;

function poolStep(path: string, h: BlockHashing, stride: number): Step {
  // Loaded on use: with the addon, no worker thread is ever started.
  const pool = import('../util/pool.ts').then(({ sharedPool }) => sharedPool());
  return {
    run: async (_slot, position, count) =>
      (await pool).run<Uint8Array>(HASHING, 'hashFileRange', [path, position, count, h, stride]),
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
  const perRead = Math.max(1, Math.floor((1 << 20) / h.blockSize));
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
