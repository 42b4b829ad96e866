/**
 * Fuzzing the tar reader, the decompressor and the layer semantics with mutated archives:
 * every outcome must be a tree or one of Seal's typed errors — never a crash or another error.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { isSealError } from '../../src/errors.ts';
import { decompress } from '../../src/tar/index.ts';
import { mergeLayers, Spool, treeToTar } from '../../src/tree/index.ts';
import { generateEdgeCaseTree, prng } from '../helpers/trees.ts';

async function collect(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const c of stream) chunks.push(c);
  return Buffer.concat(chunks);
}

function mutate(data: Buffer, random: () => number): Buffer {
  const out = Buffer.from(data);
  const kind = random();
  if (kind < 0.5) {
    // Flip a few bytes, biased towards headers (the first bytes of 512-byte blocks).
    for (let i = 0, n = 1 + Math.floor(random() * 8); i < n; i++) {
      const block = Math.floor(random() * (out.length / 512));
      const pos =
        random() < 0.7 ? block * 512 + Math.floor(random() * 512) : Math.floor(random() * out.length);
      out[Math.min(pos, out.length - 1)] = Math.floor(random() * 256);
    }
    return out;
  }
  if (kind < 0.7) return out.subarray(0, Math.floor(random() * out.length));
  if (kind < 0.85) {
    // Write an octal number of random magnitude into a numeric header field.
    const block = Math.floor(random() * (out.length / 512)) * 512;
    const field = [100, 108, 116, 124, 136, 329, 337][Math.floor(random() * 7)]!;
    out.write(`${Math.floor(random() ** 4 * 8 ** 11).toString(8)}\0`.slice(0, 12), block + field, 'latin1');
    return out;
  }
  const at = Math.floor(random() * out.length);
  return Buffer.concat([
    out.subarray(0, at),
    Buffer.from(out.subarray(at, at + Math.floor(random() * 2048))),
    out.subarray(at),
  ]);
}

async function* once(data: Uint8Array) {
  yield data;
}

test('mutated tar and gzip layers give typed errors or a tree, never anything else', async () => {
  const tree = generateEdgeCaseTree(11, { files: 10, maxFileSize: 20_000 });
  const tar = await collect(treeToTar(tree));
  const gz = gzipSync(tar);
  const random = prng(20251122);
  const spool = await Spool.create();
  let typed = 0;
  let ok = 0;
  try {
    for (let i = 0; i < 2000; i++) {
      const input = i % 4 === 3 ? mutate(gz, random) : mutate(tar, random);
      try {
        await mergeLayers([decompress(once(input))], spool);
        ok++;
      } catch (error) {
        assert.ok(isSealError(error), `case ${i}: untyped error ${(error as Error)?.stack ?? error}`);
        typed++;
      }
    }
  } finally {
    await spool.close();
  }
  assert.ok(typed > 700, `only ${typed} mutations were refused`);
  assert.ok(ok > 0);
});
