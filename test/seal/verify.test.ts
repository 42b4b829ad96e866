/**
 * verifyImage on both of its paths: layers an OCI layout keeps as files are checked where they
 * are; layers of any other transport are streamed to a temporary file first. Both accept the
 * same image with the same report, refuse the same tampering the same way, and leave no
 * temporary file behind.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { DigestError, digestOf } from '../../src/oci/index.ts';
import type { ImageSource } from '../../src/oci/transport.ts';
import { ImageVerifyError, verifyImage } from '../../src/seal/index.ts';
import { openSource } from '../../src/store/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { writeThreeLayerImage } from '../helpers/layout.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-verify-'));
after(() => rm(work, { recursive: true, force: true }));

const layout = join(work, 'layout');
await writeThreeLayerImage(layout);
{
  const r = runSeal(['image', 'seal', `oci:${layout}:test`, `oci:${layout}:sealed`, '--format', 'erofs']);
  assert.equal(r.status, 0, r.stderr);
}

/** The same source without blobFile: what a registry or an archive offers. */
function streamOnly(src: ImageSource): ImageSource {
  return {
    name: src.name,
    resolve: () => src.resolve(),
    getManifest: (d) => src.getManifest(d),
    getBlob: (d) => src.getBlob(d),
    close: () => src.close(),
  };
}

/** Runs `fn` on both paths with SEAL_TMPDIR pointing at an empty directory, checked empty after. */
async function bothPaths(ref: string, fn: (src: ImageSource, path: string) => Promise<void>): Promise<void> {
  const temp = join(work, `tmp-${Math.random().toString(36).slice(2)}`);
  await mkdir(temp);
  const before = process.env.SEAL_TMPDIR;
  process.env.SEAL_TMPDIR = temp;
  try {
    for (const [path, wrap] of [
      ['in place', (s: ImageSource) => s],
      ['streamed', streamOnly],
    ] as const) {
      const src = await openSource(ref);
      try {
        assert.equal(path === 'in place', typeof wrap(src).blobFile === 'function');
        await fn(wrap(src), path);
      } finally {
        await src.close();
      }
      assert.deepEqual(readdirSync(temp), [], `${path}: no temporary file is left`);
    }
  } finally {
    if (before === undefined) delete process.env.SEAL_TMPDIR;
    else process.env.SEAL_TMPDIR = before;
  }
}

test('layers in place and streamed: the same verdict, the same report', async () => {
  const reports: unknown[] = [];
  await bothPaths(`oci:${layout}:sealed`, async (src) => {
    reports.push(await verifyImage(src));
  });
  assert.equal((reports[0] as unknown[]).length, 3);
  assert.deepEqual(reports[0], reports[1]);
});

test('layers in place and streamed: a changed blob and a fixed-up corrupt layer are refused alike', async () => {
  const src = await openSource(`oci:${layout}:sealed`);
  const layer = (await verifyImage(src))[1]!;
  await src.close();
  const blobPath = join(layout, 'blobs/sha256', layer.digest.slice(7));
  const pristine = readFileSync(blobPath);
  const flipped = Buffer.from(pristine);
  flipped[1500]! ^= 0x40; // in the filesystem's first block
  try {
    // The bytes changed under the same name: the digest check names the blob.
    writeFileSync(blobPath, flipped);
    await bothPaths(`oci:${layout}:sealed`, async (s, path) => {
      await assert.rejects(verifyImage(s), (e: unknown) => {
        assert.ok(e instanceof DigestError, `${path}: ${String(e)}`);
        assert.match(e.message, new RegExp(`${layer.digest}.*(has digest|has \\d+ bytes)`));
        return true;
      });
    });
    // One byte fewer: the size is wrong.
    writeFileSync(blobPath, pristine.subarray(0, pristine.length - 1));
    await bothPaths(`oci:${layout}:sealed`, async (s, path) => {
      await assert.rejects(verifyImage(s), DigestError, path);
    });
  } finally {
    writeFileSync(blobPath, pristine);
  }
  // The same flip in a copy whose digest, manifest and config are fixed up, as a full attacker
  // would: the dm-verity check names the layer and the block.
  const forged = join(work, 'forged');
  await mkdir(join(forged, 'blobs/sha256'), { recursive: true });
  for (const name of ['oci-layout', 'index.json'])
    writeFileSync(join(forged, name), readFileSync(join(layout, name)));
  for (const blob of readdirSync(join(layout, 'blobs/sha256')))
    writeFileSync(join(forged, 'blobs/sha256', blob), readFileSync(join(layout, 'blobs/sha256', blob)));
  const index = JSON.parse(readFileSync(join(forged, 'index.json'), 'utf8'));
  const entry = index.manifests.find(
    (m: { annotations?: Record<string, string> }) =>
      m.annotations?.['org.opencontainers.image.ref.name'] === 'sealed',
  );
  const manifest = JSON.parse(readFileSync(join(forged, 'blobs/sha256', entry.digest.slice(7)), 'utf8'));
  const config = JSON.parse(
    readFileSync(join(forged, 'blobs/sha256', manifest.config.digest.slice(7)), 'utf8'),
  );
  const put = (bytes: Buffer) => {
    const digest = digestOf(bytes);
    writeFileSync(join(forged, 'blobs/sha256', digest.slice(7)), bytes);
    return { digest, size: bytes.length };
  };
  const newLayer = put(flipped);
  manifest.layers[1] = { ...manifest.layers[1], ...newLayer };
  config.rootfs.diff_ids[1] = newLayer.digest;
  manifest.config = { ...manifest.config, ...put(Buffer.from(JSON.stringify(config))) };
  Object.assign(entry, put(Buffer.from(JSON.stringify(manifest))));
  writeFileSync(join(forged, 'index.json'), JSON.stringify(index));
  await bothPaths(`oci:${forged}:sealed`, async (s, path) => {
    await assert.rejects(verifyImage(s), (e: unknown) => {
      assert.ok(e instanceof ImageVerifyError, `${path}: ${String(e)}`);
      assert.equal(e.code, 'IMAGE_LAYER_CORRUPT');
      assert.match(e.message, /layer 2 .*data block 0 (is corrupt|does not match the root hash)/);
      return true;
    });
  });
});
