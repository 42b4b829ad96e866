/**
 * The layout store's whole-blob reads: a stored blob comes back as written; a missing, shorter,
 * longer or altered file gives a typed error and never its bytes.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { LayoutStore } from '../../src/store/index.ts';

let dir: string;
let store: LayoutStore;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'seal-layout-'));
  store = await LayoutStore.open(join(dir, 'store'), { create: true });
});
after(() => rmSync(dir, { recursive: true, force: true }));

const describe = (bytes: Buffer) => ({
  digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`,
  size: bytes.length,
});

async function stored(bytes: Buffer) {
  const desc = describe(bytes);
  await store.putBlob(
    (async function* () {
      yield bytes;
    })(),
    desc,
  );
  return desc;
}

const code = (expected: string) => (error: Error & { code?: string }) => {
  assert.equal(error.code, expected, error.message);
  return true;
};

test('readBlob returns what was stored, empty blobs included, and hasBlob sees it', async () => {
  for (const bytes of [Buffer.from('{"schemaVersion":2}'), Buffer.alloc(0), Buffer.alloc(300_000, 7)]) {
    const desc = await stored(bytes);
    assert.equal(await store.hasBlob(desc.digest), true);
    assert.ok((await store.readBlob(desc)).equals(bytes));
  }
});

test('readBlob of a missing blob is STORE_NOT_FOUND; one over the limit is refused before reading', async () => {
  const absent = describe(Buffer.from('never stored'));
  assert.equal(await store.hasBlob(absent.digest), false);
  await assert.rejects(store.readBlob(absent), code('STORE_NOT_FOUND'));
  const big = await stored(Buffer.alloc(2048, 1));
  await assert.rejects(store.readBlob(big, 1024), code('STORE_INVALID_DOCUMENT'));
});

test('a blob file that is shorter, longer or altered is a DIGEST_MISMATCH, never returned', async () => {
  const damages: [string, (path: string) => void][] = [
    ['shorter', (path) => truncateSync(path, 10)],
    ['longer', (path) => appendFileSync(path, 'x')],
    [
      'altered',
      (path) => {
        const bytes = readFileSync(path);
        bytes[5] = (bytes[5] as number) ^ 1;
        writeFileSync(path, bytes);
      },
    ],
  ];
  for (const [what, damage] of damages) {
    const desc = await stored(Buffer.from(`{"a":"bcdefghijklmnopqrstuvwxyz"}${what}`));
    damage(store.blobPath(desc.digest));
    await assert.rejects(store.readBlob(desc), code('DIGEST_MISMATCH'), what);
  }
});

test('a descriptor declaring the wrong size for the right bytes is refused', async () => {
  const desc = await stored(Buffer.from('{"size":"declared wrongly"}'));
  for (const size of [desc.size - 1, desc.size + 1, desc.size + 100])
    await assert.rejects(store.readBlob({ ...desc, size }), code('DIGEST_MISMATCH'), String(size));
});
