/**
 * The device's side of `seal push`: a layout tar taken apart without trusting it. A pushed layout
 * arrives whole (every blob checked against its name) or not at all, and nothing in the stream
 * names a file outside the staging directory.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { receiveLayout } from '../../src/agent/push.ts';
import { SealError } from '../../src/errors.ts';
import { LayoutStore } from '../../src/store/index.ts';
import type { TarWriteEntry } from '../../src/tar/index.ts';
import { fileEntry, tarOf } from '../helpers/layout.ts';

const work = mkdtempSync(join(tmpdir(), 'seal-push-'));
after(() => rmSync(work, { recursive: true, force: true }));

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function* once(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes;
}

const layer = Buffer.from('a layer of the pushed system\n'.repeat(100));
const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
const manifest = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: {
      mediaType: 'application/vnd.oci.image.config.v1+json',
      digest: `sha256:${sha(config)}`,
      size: config.length,
    },
    layers: [
      {
        mediaType: 'application/vnd.oci.image.layer.v1.tar',
        digest: `sha256:${sha(layer)}`,
        size: layer.length,
      },
    ],
  }),
);
const index = JSON.stringify({
  schemaVersion: 2,
  manifests: [
    {
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: `sha256:${sha(manifest)}`,
      size: manifest.length,
      annotations: { 'org.opencontainers.image.ref.name': 'system' },
    },
  ],
});
const good = (): TarWriteEntry[] => [
  fileEntry('oci-layout', '{"imageLayoutVersion":"1.0.0"}'),
  fileEntry('index.json', index),
  ...[layer, config, manifest].map((b) => fileEntry(`blobs/sha256/${sha(b)}`, b)),
];

test('a pushed layout arrives whole: every blob, the index, the system resolvable by its tag', async () => {
  const dir = join(work, 'good');
  const got = await receiveLayout(once(await tarOf(good())), dir, 1 << 20);
  assert.deepEqual(got, { blobs: 3, bytes: layer.length + config.length + manifest.length });
  const store = await LayoutStore.open(dir);
  assert.equal((await store.resolve('system')).digest, `sha256:${sha(manifest)}`);
  assert.deepEqual((await store.fsck()).corrupt, []);
  assert.deepEqual(readFileSync(join(dir, 'blobs/sha256', sha(layer))), layer);
  // Leading ./ and directory entries, as tar writes them, are fine.
  const dotted = good().map((e) => ({ ...e, path: `./${e.path}` }));
  const withDirs = [
    fileEntry('./', '', { type: 'dir', size: 0 }),
    fileEntry('./blobs/', '', { type: 'dir', size: 0 }),
    fileEntry('./blobs/sha256/', '', { type: 'dir', size: 0 }),
    ...dotted,
  ];
  assert.equal((await receiveLayout(once(await tarOf(withDirs)), join(work, 'dotted'), 1 << 20)).blobs, 3);
});

test('anything but an OCI layout in the stream is refused, and the staging directory is gone', async () => {
  const outside = join(work, 'outside');
  const cases: [string, TarWriteEntry[], RegExp][] = [
    ['a path up', [...good(), fileEntry('../outside', 'x')], /not a file of an OCI layout/],
    ['an absolute path', [...good(), fileEntry('/tmp/x', 'x')], /not a file of an OCI layout/],
    [
      'a blob path up',
      [fileEntry(`blobs/sha256/../../outside`, 'x'), ...good()],
      /not a file of an OCI layout/,
    ],
    [
      'a symlink',
      [fileEntry('blobs/sha256/link', '', { type: 'symlink', linkname: '/etc/passwd', size: 0 })],
      /symlink/,
    ],
    [
      'a hardlink',
      [
        ...good(),
        fileEntry(`blobs/sha256/${'0'.repeat(64)}`, '', {
          type: 'hardlink',
          linkname: 'index.json',
          size: 0,
        }),
      ],
      /hardlink/,
    ],
    [
      'a device node',
      [fileEntry('blobs/sha256/dev', '', { type: 'char', devmajor: 1, devminor: 3, size: 0 })],
      /char/,
    ],
    [
      'another algorithm',
      [...good(), fileEntry(`blobs/sha512/${'a'.repeat(128)}`, 'x')],
      /not a file of an OCI layout/,
    ],
    [
      'an upper-case digest',
      [...good(), fileEntry(`blobs/sha256/${sha(layer).toUpperCase()}`, layer)],
      /not a file/,
    ],
    ['a second index.json', [...good(), fileEntry('index.json', index)], /not a file of an OCI layout/],
    ['no index.json', good().filter((e) => e.path !== 'index.json'), /no index\.json/],
    ['an index that is not JSON', [fileEntry('index.json', '{"schemaVersion":')], /not JSON/],
    ['an index of another shape', [fileEntry('index.json', '{"schemaVersion":2,"manifests":{}}')], /index/],
    [
      'a large oci-layout',
      [fileEntry('oci-layout', 'x'.repeat(2000)), ...good()],
      /not a file of an OCI layout/,
    ],
  ];
  for (const [what, entries, reason] of cases) {
    const dir = join(work, 'staged');
    await assert.rejects(receiveLayout(once(await tarOf(entries)), dir, 1 << 20), (e: unknown) => {
      assert.ok(e instanceof SealError, `${what}: ${String(e)}`);
      assert.match((e as Error).message, reason, what);
      return true;
    });
    assert.equal(existsSync(dir), false, `${what}: the staging directory is removed`);
    assert.equal(existsSync(outside), false, `${what}: nothing outside it`);
  }
});

test('a blob that is not what its name says, or more than the room the device has, is refused', async () => {
  const dir = join(work, 'staged');
  const lying = [
    ...good().slice(0, 2),
    fileEntry(`blobs/sha256/${sha(layer)}`, Buffer.from(layer).fill(1, 0, 1)),
  ];
  await assert.rejects(receiveLayout(once(await tarOf(lying)), dir, 1 << 20), SealError);
  assert.equal(existsSync(dir), false);
  await assert.rejects(receiveLayout(once(await tarOf(good())), dir, layer.length), /has room for/);
  assert.equal(existsSync(dir), false);
  // A stream cut short.
  const whole = await tarOf(good());
  await assert.rejects(receiveLayout(once(whole.subarray(0, 1500)), dir, 1 << 20), SealError);
  assert.equal(existsSync(dir), false);
});

test('fuzz: a pushed tar with bytes changed is taken whole or refused with a typed error, never written outside', async () => {
  const whole = await tarOf(good());
  let seed = 0x5eed;
  const random = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
  let refused = 0;
  for (let i = 0; i < 300; i++) {
    const bytes = Buffer.from(whole);
    for (let k = 0, n = 1 + Math.floor(random() * 4); k < n; k++)
      bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
    const dir = join(work, `fuzz-${i}`);
    try {
      await receiveLayout(once(bytes), dir, 1 << 20);
      // Whatever was taken verifies.
      assert.deepEqual((await (await LayoutStore.open(dir)).fsck()).corrupt, [], `case ${i}`);
    } catch (error) {
      assert.ok(error instanceof SealError, `case ${i}: ${String(error)}`);
      assert.equal(existsSync(dir), false, `case ${i}`);
      refused++;
    }
    rmSync(dir, { recursive: true, force: true });
  }
  assert.ok(refused > 100, `${refused} of 300 refused`);
  assert.deepEqual(
    readdirSync(work).filter((n) => !['good', 'dotted'].includes(n)),
    [],
    'nothing but what the tests staged',
  );
});
