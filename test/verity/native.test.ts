/**
 * The block-hashing addon: built by setup and in use, equal to node:crypto for every algorithm,
 * block size and prefix/suffix shape the verity formats use, and refusing bad arguments.
 * (The verity tests compare the resulting trees and digests with veritysetup and fsverity.)
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  type BlockHashing,
  DIGEST_SIZE,
  fileBlockDigests,
  type HashAlgorithm,
  hashBlocksInto,
  hashBlocksWithNodeCrypto,
  multiBufferEngine,
  nativeHashing,
} from '../../src/verity/hashing.ts';

/** Block hashing with a random prefix and suffix of these lengths. */
function salted(algorithm: HashAlgorithm, blockSize: number, prefix: number, suffix: number): BlockHashing {
  return { algorithm, blockSize, prefix: randomBytes(prefix), suffix: randomBytes(suffix) };
}

const work = mkdtempSync(join(tmpdir(), 'seal-blockhash-'));
after(() => rmSync(work, { recursive: true, force: true }));

test('the addon is built by setup and used', () => {
  assert.equal(nativeHashing(), true, 'build/Release/blockhash.node is missing: run scripts/setup.sh');
  // Setup installs Intel's multi-buffer library on x86-64 hosts; elsewhere there is none.
  if (process.arch === 'x64') assert.match(multiBufferEngine() ?? 'none', /^intel-ipsec-mb \d+\.\d+\.\d+ /);
  else assert.equal(multiBufferEngine(), undefined);
});

test('native block hashing equals node:crypto for every algorithm, block size and salt shape', () => {
  for (const algorithm of ['sha1', 'sha256', 'sha512'] as HashAlgorithm[]) {
    for (const blockSize of [512, 1024, 4096, 65536]) {
      for (const [prefix, suffix] of [
        [0, 0],
        [32, 0],
        [0, 32],
        [256, 0],
        [blockSize === 512 ? 5 : 64, 0],
      ] as const) {
        const h = salted(algorithm, blockSize, prefix, suffix);
        const blocks = blockSize === 65536 ? 3 : 17;
        const data = randomBytes(blocks * blockSize);
        const stride = DIGEST_SIZE[algorithm] + 12;
        const native = Buffer.alloc(8 + blocks * stride);
        const js = Buffer.alloc(8 + blocks * stride);
        hashBlocksInto(h, data, native, 8, stride);
        hashBlocksWithNodeCrypto(h, data, js, 8, stride);
        assert.ok(native.equals(js), `${algorithm} ${blockSize} prefix ${prefix} suffix ${suffix}`);
        assert.ok(native.subarray(0, 8).equals(Buffer.alloc(8)), 'nothing written before the offset');
      }
    }
  }
});

test('the addon refuses bad arguments instead of writing out of bounds', () => {
  const { hashBlocks } = createRequire(import.meta.url)('../../build/Release/blockhash.node');
  const none = new Uint8Array(0);
  const data = new Uint8Array(8192);
  assert.throws(() => hashBlocks('sha256', data, 4096, none, none, new Uint8Array(63), 0, 32), /too small/);
  assert.throws(() => hashBlocks('sha256', data, 4096, none, none, new Uint8Array(64), 1, 32), /too small/);
  assert.throws(() => hashBlocks('sha256', data, 4096, none, none, new Uint8Array(64), 0, 16), /too small/);
  assert.throws(
    () => hashBlocks('sha256', data, 3000, none, none, new Uint8Array(64), 0, 32),
    /whole blocks/,
  );
  assert.throws(
    () => hashBlocks('md-none', data, 4096, none, none, new Uint8Array(64), 0, 32),
    /unknown hash/,
  );
  assert.throws(() => hashBlocks('sha256', 'text', 4096, none, none, new Uint8Array(64), 0, 32), /argument/);
  assert.throws(() => hashBlocks('sha256', data), /8 arguments/);
});

/** Every run of fileBlockDigests, copied out (a run's memory is reused), as one buffer. */
async function allDigests(
  path: string,
  offset: number,
  first: number,
  count: number,
  h: BlockHashing,
  stride: number,
  options: Parameters<typeof fileBlockDigests>[6],
): Promise<Buffer> {
  const parts: Buffer[] = [];
  let expected = first;
  for await (const run of fileBlockDigests(path, offset, first, count, h, stride, options)) {
    assert.equal(run.first, expected, 'runs come in order');
    assert.equal(run.digests.length, run.count * stride);
    parts.push(Buffer.from(run.digests));
    expected += run.count;
  }
  assert.equal(expected, first + count);
  return Buffer.concat(parts);
}

test('file blocks: the addon threads, the worker pool and in-memory hashing agree', async () => {
  const file = join(work, 'blocks.bin');
  const data = randomBytes(4096 * 37 + 1000); // the last block is partial: zeros past the end
  writeFileSync(file, data);
  for (const [algorithm, blockSize, prefix, suffix] of [
    ['sha256', 4096, 32, 0],
    ['sha1', 512, 0, 7],
    ['sha512', 1024, 0, 0],
  ] as const) {
    const h = salted(algorithm, blockSize, prefix, suffix);
    const stride = DIGEST_SIZE[algorithm] + 4;
    const offset = 3 * blockSize;
    const count = Math.ceil((data.length - offset) / blockSize) + 2; // two blocks wholly past the end
    const first = 2;
    const padded = Buffer.alloc((first + count) * blockSize);
    data.copy(padded, 0, offset);
    const expected = Buffer.alloc(count * stride);
    hashBlocksWithNodeCrypto(h, padded.subarray(first * blockSize), expected, 0, stride);
    for (const options of [
      {},
      { chunkBytes: blockSize, window: 1 },
      { chunkBytes: blockSize * 5, window: 4 },
      { native: false, chunkBytes: blockSize * 3 },
      { multiBuffer: false },
      { multiBuffer: false, chunkBytes: blockSize * 5, window: 2 },
    ]) {
      const got = await allDigests(file, offset, first, count, h, stride, options);
      assert.ok(got.equals(expected), `${algorithm} ${blockSize} ${JSON.stringify(options)}`);
    }
  }
});

test('file blocks: the multi-buffer engine equals node:crypto for every algorithm, block size, salt shape and file end', async () => {
  for (const algorithm of ['sha1', 'sha256', 'sha512'] as HashAlgorithm[]) {
    for (const blockSize of [512, 4096, 65536]) {
      // Past a stretch of the engine (256 KiB, at least 16 blocks), with a partial last block.
      const blocks = Math.max(40, (600 << 10) / blockSize);
      const data = randomBytes(blocks * blockSize - 333);
      const file = join(work, `lanes-${algorithm}-${blockSize}.bin`);
      writeFileSync(file, data);
      for (const [prefix, suffix] of [
        [0, 0],
        [32, 0],
        [0, 32],
        [64, 0],
        [256, 0],
        [5, 3],
      ] as const) {
        const h = salted(algorithm, blockSize, prefix, suffix);
        const stride = DIGEST_SIZE[algorithm] + 8;
        const count = blocks + 3; // three blocks wholly past the end
        const padded = Buffer.alloc(count * blockSize);
        data.copy(padded);
        const expected = Buffer.alloc(count * stride);
        hashBlocksWithNodeCrypto(h, padded, expected, 0, stride);
        const got = await allDigests(file, 0, 0, count, h, stride, { multiBuffer: true });
        assert.ok(got.equals(expected), `${algorithm} ${blockSize} prefix ${prefix} suffix ${suffix}`);
      }
    }
  }
});

test('file blocks: a consumer that stops early leaves no read running and the file closed', async () => {
  const file = join(work, 'early.bin');
  writeFileSync(file, randomBytes(4096 * 64));
  const h: BlockHashing = {
    algorithm: 'sha256',
    blockSize: 4096,
    prefix: new Uint8Array(0),
    suffix: new Uint8Array(0),
  };
  const openFds = () => {
    const probe = openSync(file, 'r');
    closeSync(probe);
    return probe;
  };
  const before = openFds();
  for (let stopAfter = 0; stopAfter < 3; stopAfter++) {
    let seen = 0;
    await assert.rejects(async () => {
      for await (const _ of fileBlockDigests(file, 0, 0, 64, h, 32, { chunkBytes: 4096 * 4, window: 4 })) {
        if (seen++ === stopAfter) throw new Error('consumer gave up');
      }
    }, /consumer gave up/);
  }
  // The lowest free descriptor is the same again: every one the iterations opened was closed.
  assert.equal(openFds(), before);
});

test('file blocks: a read error rejects the iteration', async () => {
  const h: BlockHashing = {
    algorithm: 'sha256',
    blockSize: 4096,
    prefix: new Uint8Array(0),
    suffix: new Uint8Array(0),
  };
  await assert.rejects(async () => {
    for await (const _ of fileBlockDigests(work, 0, 0, 4, h, 32)) void _;
  }, /EISDIR|directory/i);
});

test('the file hashing call refuses bad arguments', async () => {
  const { hashFileBlocks } = createRequire(import.meta.url)('../../build/Release/blockhash.node');
  const none = new Uint8Array(0);
  assert.throws(
    () => hashFileBlocks(0, 0, 4096, 'sha256', none, none, 2, new Uint8Array(63), 32, true),
    /too small/,
  );
  assert.throws(
    () => hashFileBlocks(0, 0, 4096, 'sha256', none, none, 2, new Uint8Array(64), 16, true),
    /too small/,
  );
  assert.throws(
    () => hashFileBlocks(0, 0, 4096, 'sha256', none, none, 2 ** 32 - 1, new Uint8Array(64), 32, true),
    /too small/,
  );
  assert.throws(
    () => hashFileBlocks(0, 0, 0, 'sha256', none, none, 2, new Uint8Array(64), 32, true),
    /block size/,
  );
  assert.throws(
    () => hashFileBlocks(-1, 0, 4096, 'sha256', none, none, 2, new Uint8Array(64), 32, true),
    /bad file/,
  );
  assert.throws(
    () => hashFileBlocks(0, -5, 4096, 'sha256', none, none, 2, new Uint8Array(64), 32, true),
    /bad file/,
  );
  assert.throws(
    () => hashFileBlocks(0, 0, 4096, 'md-none', none, none, 2, new Uint8Array(64), 32, true),
    /unknown hash/,
  );
  assert.throws(
    () => hashFileBlocks(0, 0, 4096, 'sha256', none, none, 'two', new Uint8Array(64), 32, true),
    /argument/,
  );
  assert.throws(() => hashFileBlocks(0, 0), /10 arguments/);
  assert.throws(
    () => hashFileBlocks(0, 0, 4096, 'sha256', none, none, 2, new Uint8Array(64), 32, 'yes'),
    /argument/,
  );
  // A descriptor that is not open: the error comes back through the promise.
  await assert.rejects(
    hashFileBlocks(1 << 20, 0, 4096, 'sha256', none, none, 2, new Uint8Array(64), 32, true),
    /EBADF|bad file/i,
  );
});
