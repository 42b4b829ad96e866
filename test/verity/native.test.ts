/**
 * The block-hashing addon: built by setup and in use, equal to node:crypto for every algorithm,
 * block size and prefix/suffix shape the verity formats use, and refusing bad arguments.
 * (The verity tests compare the resulting trees and digests with veritysetup and fsverity.)
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import {
  type BlockHashing,
  DIGEST_SIZE,
  type HashAlgorithm,
  hashBlocksInto,
  hashBlocksWithNodeCrypto,
  nativeHashing,
} from '../../src/verity/hashing.ts';

test('the addon is built by setup and used', () => {
  assert.equal(nativeHashing, true, 'build/Release/blockhash.node is missing: run scripts/setup.sh');
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
        const h: BlockHashing = {
          algorithm,
          blockSize,
          prefix: randomBytes(prefix),
          suffix: randomBytes(suffix),
        };
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
