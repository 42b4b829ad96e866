/** Copies through a misbehaving proxy either complete correctly or fail clearly, never leaving a bad blob behind. */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Descriptor } from '../../src/oci/types.ts';
import {
  mirror,
  openRegistryDestination,
  openRegistrySource,
  RegistryClient,
  type RegistryOptions,
} from '../../src/registry/index.ts';
import { openDestination } from '../../src/store/index.ts';
import { LayoutStore } from '../../src/store/layout.ts';
import { type Fault, type FaultProxy, startFaultProxy, startRegistry, type TestRegistry } from './harness.ts';
import { MemoryImages, makeImage } from './images.ts';

const options: RegistryOptions = { retryDelayMs: 5 };
let registry: TestRegistry;
let proxy: FaultProxy;
const source = new MemoryImages();
let root: Descriptor;
let layers: Descriptor[];

const blobGet = (method: string, path: string) => method === 'GET' && path.includes('/blobs/sha256:');

before(async () => {
  registry = await startRegistry('none');
  proxy = await startFaultProxy(registry.host);
  root = makeImage(source, 42, [300_000, 120_000]);
  layers = (JSON.parse((source.blobs.get(root.digest) as Buffer).toString()) as { layers: Descriptor[] })
    .layers;
  const dst = await openRegistryDestination(`docker://${registry.host}/faults/src:v1`, options);
  await mirror(source, dst, { tag: 'v1' });
  await dst.close();
});
after(async () => {
  await proxy.stop();
  await registry.stop();
});

async function pullThroughProxy(faults: Fault[]): Promise<MemoryImages> {
  proxy.faults = faults;
  proxy.fired.length = 0;
  proxy.log.length = 0;
  const src = await openRegistrySource(`docker://${proxy.host}/faults/src:v1`, options);
  const into = new MemoryImages();
  try {
    await mirror(src, into, {});
    return into;
  } finally {
    await src.close();
  }
}

function assertComplete(pulled: MemoryImages): void {
  assert.deepEqual([...pulled.blobs.keys()].sort(), [...source.blobs.keys()].sort());
  for (const [digest, bytes] of source.blobs) assert.ok(pulled.blobs.get(digest)?.equals(bytes), digest);
}

test('without faults the proxy forwards faithfully and counts the bytes it served', async () => {
  proxy.served.length = 0;
  const pulled = await pullThroughProxy([]);
  assertComplete(pulled);
  const blobs = proxy.served.filter((s) => blobGet(s.request.split(' ')[0]!, s.request.split(' ')[1]!));
  const sizes = new Map([...source.blobs].map(([digest, bytes]) => [digest, bytes.length]));
  assert.equal(
    blobs.reduce((n, s) => n + s.bytes, 0),
    blobs.reduce((n, s) => n + sizes.get(/sha256:[0-9a-f]{64}/.exec(s.request)![0])!, 0),
    'each blob GET counted at its size',
  );
  assert.ok(blobs.length >= layers.length, 'every layer was fetched through the proxy');
  assert.ok(blobs.every((s) => s.status === 200));
});

test('a connection reset mid-blob is resumed with Range', async () => {
  const pulled = await pullThroughProxy([{ kind: 'reset', match: blobGet, times: 2 }]);
  assertComplete(pulled);
  assert.deepEqual(proxy.fired, ['reset', 'reset']);
  assert.ok(
    proxy.log.some((l) => /bytes=\d+-$/.test(l)),
    'a Range request was made',
  );
});

test('a truncated body is resumed', async () => {
  const pulled = await pullThroughProxy([{ kind: 'truncate', match: blobGet, times: 1 }]);
  assertComplete(pulled);
  assert.deepEqual(proxy.fired, ['truncate']);
});

test('429 with Retry-After and 500s are retried', async () => {
  const pulled = await pullThroughProxy([
    { kind: '429', match: (m, p) => m === 'GET' && p.includes('/manifests/'), times: 1 },
    { kind: '500', match: blobGet, times: 2 },
  ]);
  assertComplete(pulled);
  assert.deepEqual(proxy.fired.sort(), ['429', '500', '500']);
});

test('a wrong digest fails clearly and nothing is stored', async () => {
  await assert.rejects(
    pullThroughProxy([
      {
        kind: 'corrupt',
        match: (m, p) => blobGet(m, p) && p.includes((layers[0] as Descriptor).digest),
        times: 1,
      },
    ]),
    (e: Error & { code?: string }) =>
      e.code === 'DIGEST_MISMATCH' && e.message.includes((layers[0] as Descriptor).digest),
  );
  // Copy registry-to-registry with the same fault: the destination registry must not hold the blob.
  proxy.faults = [
    {
      kind: 'corrupt',
      match: (m, p) => blobGet(m, p) && p.includes((layers[0] as Descriptor).digest),
      times: 5,
    },
  ];
  const src = await openRegistrySource(`docker://${proxy.host}/faults/src:v1`, options);
  // Named `localhost` so that no cross-repository mount from faults/src bypasses the download.
  const dst = await openRegistryDestination(
    `docker://${registry.host.replace('127.0.0.1', 'localhost')}/faults/corrupt:v1`,
    options,
  );
  await assert.rejects(
    mirror(src, dst, { tag: 'v1' }),
    (e: Error & { code?: string }) => e.code === 'DIGEST_MISMATCH',
  );
  const client = new RegistryClient(registry.host, options);
  assert.equal(await client.hasBlob('faults/corrupt', (layers[0] as Descriptor).digest), false);
  assert.equal(await client.headManifest('faults/corrupt', 'v1'), undefined);
  client.close();
  await src.close();
  await dst.close();
});

test('persistent 500s fail with a SERVER error', async () => {
  await assert.rejects(
    pullThroughProxy([{ kind: '500', match: blobGet, times: 1000 }]),
    (e: Error & { code?: string }) => e.code === 'SERVER',
  );
});

test('pushes survive resets and 500s on uploads, chunked and monolithic, following every new Location', async () => {
  for (const chunkSize of [undefined, 64 * 1024]) {
    proxy.faults = [
      { kind: '500', match: (m) => m === 'PUT', times: 1 },
      { kind: 'reset', match: (m) => m === 'PATCH', times: 1 },
      { kind: '500', match: (m) => m === 'POST', times: 1 },
    ];
    proxy.fired.length = 0;
    proxy.log.length = 0;
    const repo = `faults/push-${chunkSize ?? 'mono'}`;
    const dst = await openRegistryDestination(`docker://${proxy.host}/${repo}:v1`, {
      ...options,
      chunkSize,
      mount: false,
    });
    await mirror(source, dst, { tag: 'v1' });
    await dst.close();
    if (chunkSize)
      assert.ok(proxy.log.filter((l) => l.startsWith('PATCH')).length >= 5, 'uploaded in chunks');
    assert.ok(proxy.fired.length >= 2);
    const src = await openRegistrySource(`docker://${registry.host}/${repo}:v1`, options);
    const into = new MemoryImages();
    await mirror(src, into, {});
    await src.close();
    assertComplete(into);
  }
});

test('into an OCI layout: a corrupt blob is never stored, an interrupted one is resumed, fsck stays clean', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'seal-faults-layout-'));
  const layer = (layers[0] as Descriptor).digest;
  const copyInto = async (layout: string, faults: Fault[]) => {
    proxy.faults = faults;
    proxy.fired.length = 0;
    const src = await openRegistrySource(`docker://${proxy.host}/faults/src:v1`, options);
    const dst = await openDestination(`oci:${layout}:v1`);
    try {
      await mirror(src, dst, { tag: 'v1' });
      await dst.commit();
    } finally {
      await dst.close();
      await src.close();
    }
  };
  const files = (layout: string) => readdirSync(join(layout, 'blobs', 'sha256')).sort();
  try {
    const bad = join(dir, 'corrupt');
    await assert.rejects(
      copyInto(bad, [{ kind: 'corrupt', match: (m, p) => blobGet(m, p) && p.includes(layer), times: 5 }]),
      (e: Error & { code?: string }) => e.code === 'DIGEST_MISMATCH',
    );
    assert.equal(proxy.fired[0], 'corrupt');
    // Neither under its name nor as a leftover temporary file.
    assert.ok(!files(bad).includes(layer.slice(7)), 'the corrupt blob is not stored');
    assert.deepEqual(
      files(bad).filter((f) => f.startsWith('.')),
      [],
    );
    const badStore = await LayoutStore.open(bad);
    assert.deepEqual(await badStore.fsck(), { blobs: files(bad).length, corrupt: [], missing: [] });

    const good = join(dir, 'resumed');
    await copyInto(good, [
      { kind: 'reset', match: blobGet, times: 1 },
      { kind: 'truncate', match: blobGet, times: 1 },
    ]);
    assert.deepEqual(proxy.fired, ['reset', 'truncate']);
    assert.deepEqual(files(good), [...source.blobs.keys()].map((d) => d.slice(7)).sort());
    const store = await LayoutStore.open(good);
    assert.deepEqual(await store.fsck(), { blobs: source.blobs.size, corrupt: [], missing: [] });
    for (const [digest, bytes] of source.blobs) {
      assert.ok((await store.readBlob({ digest, size: bytes.length })).equals(bytes), digest);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
