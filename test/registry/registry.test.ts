/** Push, pull, mount, chunked upload, referrers and sync against Debian's docker-registry in its three auth setups. */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { MediaType } from '../../src/oci/mediatypes.ts';
import type { Descriptor } from '../../src/oci/types.ts';
import {
  mirror,
  openRegistryDestination,
  openRegistrySource,
  RegistryClient,
  type RegistryOptions,
  referrersTag,
} from '../../src/registry/index.ts';
import { type AuthSetup, startRegistry, type TestRegistry } from './harness.ts';
import { MemoryImages, makeImage, makeIndex, makeReferrer } from './images.ts';

async function pullAll(
  ref: string,
  options: RegistryOptions,
  referrers = false,
): Promise<{ images: MemoryImages; root: Descriptor }> {
  const src = await openRegistrySource(ref, options);
  const images = new MemoryImages();
  try {
    const { root } = await mirror(src, images, { all: true, referrers });
    return { images, root };
  } finally {
    await src.close();
  }
}

function assertSameBlobs(actual: MemoryImages, expected: MemoryImages, digests: Iterable<string>): void {
  for (const digest of digests) {
    assert.ok(
      actual.blobs.get(digest)?.equals(expected.blobs.get(digest) as Buffer),
      `blob ${digest} differs or is missing`,
    );
  }
}

for (const setup of ['none', 'basic', 'token'] as AuthSetup[]) {
  describe(`docker-registry with auth=${setup}`, () => {
    let registry: TestRegistry;
    let options: RegistryOptions;
    before(async () => {
      registry = await startRegistry(setup);
      options = {
        credentials:
          setup === 'none' ? undefined : { username: registry.username, password: registry.password },
        retryDelayMs: 10,
      };
    });
    after(() => registry.stop());

    test('push then pull is byte-identical, monolithic and chunked', async () => {
      const source = new MemoryImages();
      const root = makeImage(source, 1, [0, 100_000, 300_000]);
      for (const [repo, chunkSize] of [
        ['seal/mono', undefined],
        ['seal/chunked', 64 * 1024],
      ] as const) {
        const dst = await openRegistryDestination(`docker://${registry.host}/${repo}:v1`, {
          ...options,
          chunkSize,
        });
        const result = await mirror(source, dst, { tag: 'v1' });
        await dst.close();
        assert.equal(result.root.digest, root.digest);
        assert.equal(result.blobs.copied, 4);
        const pulled = await pullAll(`docker://${registry.host}/${repo}:v1`, options);
        assert.equal(pulled.root.digest, root.digest);
        assert.deepEqual([...pulled.images.blobs.keys()].sort(), [...source.blobs.keys()].sort());
        assertSameBlobs(pulled.images, source, source.blobs.keys());
      }
    });

    test('an index with --all, a second copy skips everything, the tag moves', async () => {
      const source = new MemoryImages();
      const a = makeImage(source, 2, [5000]);
      const b = makeImage(source, 3, [7000]);
      const index = makeIndex(source, [
        { ...a, platform: { os: 'linux', architecture: 'amd64' } },
        { ...b, platform: { os: 'linux', architecture: 'arm64' } },
      ]);
      const ref = `docker://${registry.host}/seal/multi:latest`;
      const dst = await openRegistryDestination(ref, options);
      await mirror(source, dst, { all: true, tag: 'latest' });
      const again = await mirror(source, dst, { all: true });
      await dst.close();
      assert.equal(again.blobs.copied + again.manifests.copied, 0);
      assert.equal(again.manifests.skipped, 1);
      const pulled = await pullAll(ref, options);
      assert.equal(pulled.root.digest, index.digest);
      assertSameBlobs(pulled.images, source, source.blobs.keys());
    });

    test('cross-repository mount instead of upload', async () => {
      const source = new MemoryImages();
      makeImage(source, 4, [50_000, 60_000]);
      const first = await openRegistryDestination(`docker://${registry.host}/seal/mount-from:v1`, options);
      await mirror(source, first, { tag: 'v1' });
      await first.close();
      const src = await openRegistrySource(`docker://${registry.host}/seal/mount-from:v1`, options);
      const client = new RegistryClient(registry.host, options);
      const manifest = JSON.parse(Buffer.from(await src.getManifest(await src.resolve())).toString()) as {
        layers: Descriptor[];
      };
      const layer = manifest.layers[0] as Descriptor;
      const outcome = await client.putBlob('seal/mount-to', layer, src.getBlob(layer), ['seal/mount-from']);
      assert.equal(outcome, 'mounted');
      assert.ok(await client.hasBlob('seal/mount-to', layer.digest));
      if (setup === 'token') {
        assert.ok(
          registry.tokenRequests.some(
            (s) =>
              s.includes('repository:seal/mount-to:pull,push') &&
              s.includes('repository:seal/mount-from:pull'),
          ),
          'one token for both repositories',
        );
      }
      client.close();
      await src.close();
    });

    test('referrers through the sha256-<hex> tag fallback, and a sync that carries them', async () => {
      const source = new MemoryImages();
      const image = makeImage(source, 5, [4096]);
      const sig = makeReferrer(source, image, 'application/vnd.example.signature', 'signature one');
      const sbom = makeReferrer(source, image, 'application/vnd.example.sbom', 'sbom');
      const dst = await openRegistryDestination(`docker://${registry.host}/seal/signed:v1`, options);
      await mirror(source, dst, { tag: 'v1', referrers: true });
      await dst.close();
      const src = await openRegistrySource(`docker://${registry.host}/seal/signed:v1`, options);
      const found = await src.referrers(image);
      assert.deepEqual(found.map((d) => d.digest).sort(), [sig.digest, sbom.digest].sort());
      assert.deepEqual(
        (await src.referrers(image, 'application/vnd.example.sbom')).map((d) => d.digest),
        [sbom.digest],
      );
      assert.ok(await src.client.headManifest('seal/signed', referrersTag(image.digest)));
      // Mirror to another repository, incrementally: the second run copies nothing.
      const target = await openRegistryDestination(`docker://${registry.host}/seal/mirror:v1`, options);
      const first = await mirror(src, target, { tag: 'v1', referrers: true, all: true });
      assert.equal(first.manifests.copied, 3);
      const second = await mirror(src, target, { referrers: true, all: true });
      assert.equal(second.manifests.copied + second.blobs.copied, 0);
      await target.close();
      const mirrored = await pullAll(`docker://${registry.host}/seal/mirror:v1`, options, true);
      assert.ok(mirrored.images.blobs.has(sig.digest) && mirrored.images.blobs.has(sbom.digest));
      assertSameBlobs(mirrored.images, source, source.blobs.keys());
      await src.close();
    });

    test('tags are listed sorted', async () => {
      const source = new MemoryImages();
      const root = makeImage(source, 6, [10]);
      const client = new RegistryClient(registry.host, options);
      const dst = await openRegistryDestination(`docker://${registry.host}/seal/tags:x`, options);
      await mirror(source, dst, { tag: 'b' });
      const bytes = source.blobs.get(root.digest) as Buffer;
      for (const tag of ['c', 'a', '10', '9'])
        await client.putManifest('seal/tags', tag, bytes, MediaType.ImageManifest);
      assert.deepEqual(await client.listTags('seal/tags'), ['10', '9', 'a', 'b', 'c']);
      await dst.close();
      client.close();
    });

    if (setup !== 'none') {
      test('wrong credentials give a clear UNAUTHORIZED error', async () => {
        const client = new RegistryClient(registry.host, {
          credentials: { username: registry.username, password: 'wrong' },
          retryDelayMs: 1,
        });
        await assert.rejects(
          client.getManifest('seal/mono', 'v1'),
          (e: Error & { code?: string }) => e.code === 'UNAUTHORIZED',
        );
        client.close();
      });
    }
  });
}
