/** Interoperability with skopeo: it pulls what Seal pushed and Seal pulls what it pushed, byte for byte. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { mirror, openRegistryDestination, openRegistrySource } from '../../src/registry/index.ts';
import { startRegistry, type TestRegistry } from './harness.ts';
import { MemoryImages, makeImage, makeIndex, readLayout, writeLayout } from './images.ts';

let registry: TestRegistry;
let dir: string;
const creds = () => ({ username: registry.username, password: registry.password });

before(async () => {
  registry = await startRegistry('token');
  dir = mkdtempSync(join(tmpdir(), 'seal-skopeo-'));
});
after(async () => {
  await registry.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Asynchronous, since the token server answering skopeo lives in this process. */
async function skopeo(...args: string[]): Promise<void> {
  await promisify(execFile)('skopeo', ['--insecure-policy', 'copy', '--quiet', ...args], {
    timeout: 120_000,
  });
}

test('skopeo pulls what Seal pushed, byte-identical', async () => {
  const source = new MemoryImages();
  const root = makeImage(source, 11, [150_000, 0, 70_000]);
  const dst = await openRegistryDestination(`docker://${registry.host}/interop/from-seal:v1`, {
    credentials: creds(),
    chunkSize: 50_000,
  });
  await mirror(source, dst, { tag: 'v1' });
  await dst.close();
  const layout = join(dir, 'pulled-by-skopeo');
  await skopeo(
    '--preserve-digests',
    '--src-tls-verify=false',
    '--src-creds',
    `${registry.username}:${registry.password}`,
    `docker://${registry.host}/interop/from-seal:v1`,
    `oci:${layout}:v1`,
  );
  const pulled = new MemoryImages();
  assert.equal(readLayout(layout, pulled).digest, root.digest);
  for (const [digest, bytes] of source.blobs) assert.ok(pulled.blobs.get(digest)?.equals(bytes), digest);
});

test('Seal pulls what skopeo pushed, byte-identical, index included', async () => {
  const source = new MemoryImages();
  const a = makeImage(source, 12, [40_000]);
  const b = makeImage(source, 13, [90_000]);
  const index = makeIndex(source, [
    { ...a, platform: { os: 'linux', architecture: 'amd64' } },
    { ...b, platform: { os: 'linux', architecture: 'arm64' } },
  ]);
  const layout = join(dir, 'pushed-by-skopeo');
  writeLayout(source, layout, index, 'v1');
  await skopeo(
    '--all',
    '--preserve-digests',
    '--dest-tls-verify=false',
    '--dest-creds',
    `${registry.username}:${registry.password}`,
    `oci:${layout}:v1`,
    `docker://${registry.host}/interop/from-skopeo:v1`,
  );
  const src = await openRegistrySource(`docker://${registry.host}/interop/from-skopeo:v1`, {
    credentials: creds(),
  });
  const pulled = new MemoryImages();
  const result = await mirror(src, pulled, { all: true });
  await src.close();
  assert.equal(result.root.digest, index.digest);
  assert.deepEqual([...pulled.blobs.keys()].sort(), [...source.blobs.keys()].sort());
  for (const [digest, bytes] of source.blobs) assert.ok(pulled.blobs.get(digest)?.equals(bytes), digest);
});
