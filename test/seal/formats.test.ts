/**
 * The other sealed formats: EROFS layers with dm-verity (veritysetup accepts them, the kernel
 * mounts them into the unpacked tree) and composefs (tar layers kept, composefs image digests
 * annotated, mounted over the store's object store); tampering is caught and named.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { digestOf } from '../../src/oci/index.ts';
import { treeFromDirectory } from '../../src/tree/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { writeThreeLayerImage } from '../helpers/layout.ts';
import { assertTreesEqual } from '../helpers/trees.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-formats-'));
after(() => rm(work, { recursive: true, force: true }));

function seal(...args: string[]) {
  const r = runSeal(args);
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const source = join(work, 'source');
await writeThreeLayerImage(source);
const unpacked = join(work, 'unpacked');
seal('image', 'unpack', `oci:${source}:test`, unpacked);
const expected = await treeFromDirectory(unpacked);
const env = { SEAL_RUNTIME_DIR: join(work, 'runtime') };

/** Rewrites an image's manifest in place (re-tagging it), as an attacker with store access would. */
interface EditableManifest {
  layers: { digest: string; annotations: Record<string, string> }[];
  config: { annotations: Record<string, string> };
  annotations: Record<string, string>;
}

function retag(layout: string, edit: (manifest: EditableManifest) => void): void {
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
  const manifest = JSON.parse(
    readFileSync(join(layout, 'blobs/sha256', index.manifests[0].digest.slice(7)), 'utf8'),
  );
  edit(manifest);
  const bytes = Buffer.from(JSON.stringify(manifest));
  const digest = digestOf(bytes);
  writeFileSync(join(layout, 'blobs/sha256', digest.slice(7)), bytes);
  index.manifests[0] = { ...index.manifests[0], digest, size: bytes.length };
  writeFileSync(join(layout, 'index.json'), JSON.stringify(index));
}

function copyOf(layout: string, name: string): string {
  const dir = join(work, name);
  execFileSync('cp', ['-a', layout, dir]);
  return dir;
}

function refused(layout: string, pattern: RegExp): void {
  const r = runSeal(['image', 'verify', `oci:${layout}:s`]);
  assert.notEqual(r.status, 0, 'verify should fail');
  assert.match(r.stderr, pattern);
  const target = join(work, 'refused-mount');
  const m = runSeal(['image', 'mount', `oci:${layout}:s`, target], { env });
  assert.notEqual(m.status, 0, 'mount should refuse');
  assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes(target));
}

async function mountsAsUnpacked(layout: string, hardlinks: boolean): Promise<void> {
  const target = join(work, `mounted-${Math.random().toString(36).slice(2)}`);
  const r = runSeal(['image', 'mount', `oci:${layout}:s`, target], { env });
  assert.equal(r.status, 0, r.stderr);
  try {
    await assertTreesEqual(await treeFromDirectory(target), expected, { root: false, hardlinks });
  } finally {
    assert.equal(runSeal(['image', 'umount', target], { env }).status, 0);
  }
  assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes(target), 'every mount is gone');
}

test('EROFS layers with dm-verity: veritysetup accepts them, they mount into the unpacked tree', async () => {
  const sealed = join(work, 'erofs');
  seal('image', 'seal', `oci:${source}:test`, `oci:${sealed}:s`, '--format', 'erofs');
  const manifest = JSON.parse(seal('image', 'inspect', `oci:${sealed}:s`, '--json')).manifest;
  assert.equal(manifest.layers.length, 3);
  for (const layer of manifest.layers) {
    assert.equal(layer.mediaType, 'application/vnd.stacker.image.layer.erofs');
    const blob = join(sealed, 'blobs/sha256', layer.digest.slice(7));
    const head = readFileSync(blob).subarray(1024, 1024 + 128);
    const hashOffset = head.readUInt32LE(36) * 2 ** head[12]!;
    execFileSync('veritysetup', [
      'verify',
      blob,
      blob,
      layer.annotations['io.stackeroci.stacker.atomfs_verity_root_hash'],
      '--hash-offset',
      String(hashOffset),
    ]);
    execFileSync('fsck.erofs', [blob], { stdio: 'pipe' });
  }
  seal('image', 'verify', `oci:${sealed}:s`);
  // Hardlinks into a lower layer are copies per layer (different filesystems).
  await mountsAsUnpacked(sealed, false);
  // skopeo and umoci carry sealed layers (opaque to them) without loss.
  const copied = join(work, 'erofs-skopeo');
  execFileSync('skopeo', ['copy', `oci:${sealed}:s`, `oci:${copied}:s`], { stdio: 'pipe' });
  execFileSync('umoci', ['tag', '--image', `${copied}:s`, 'again'], { stdio: 'pipe' });
  execFileSync('umoci', ['gc', '--layout', copied], { stdio: 'pipe' });
  assert.match(execFileSync('umoci', ['ls', '--layout', copied], { encoding: 'utf8' }), /again/);
  seal('image', 'verify', `oci:${copied}:again`);
  const flat = join(work, 'erofs-flat');
  seal('image', 'seal', `oci:${source}:test`, `oci:${flat}:s`, '--format', 'erofs', '--flatten');
  await mountsAsUnpacked(flat, true);
  // Reproducible.
  const again = join(work, 'erofs-again');
  seal('image', 'seal', `oci:${source}:test`, `oci:${again}:s`, '--format', 'erofs');
  assert.deepEqual(JSON.parse(seal('image', 'inspect', `oci:${again}:s`, '--json')).manifest, manifest);

  // One flipped byte in a layer's filesystem, its digest fixed up as a full attacker would.
  const flipped = copyOf(sealed, 'erofs-flipped');
  const blobPath = join(flipped, 'blobs/sha256', manifest.layers[1].digest.slice(7));
  const blob = readFileSync(blobPath);
  blob[4096 + 10] ^= 0x01;
  const digest = digestOf(blob);
  writeFileSync(join(flipped, 'blobs/sha256', digest.slice(7)), blob);
  retag(flipped, (m) => {
    m.layers[1]!.digest = digest;
  });
  refused(flipped, /layer 2 /);
});

test('composefs: digests annotated, verified by regeneration, mounted over the object store', async () => {
  const sealed = join(work, 'composefs');
  const out = JSON.parse(
    seal('image', 'seal', `oci:${source}:test`, `oci:${sealed}:s`, '--format', 'composefs', '--json'),
  );
  const manifest = JSON.parse(seal('image', 'inspect', `oci:${sealed}:s`, '--json')).manifest;
  const merged = manifest.annotations['composefs.merged.erofs.v1.fsverity-sha256-12'];
  assert.match(merged, /^[0-9a-f]{64}$/);
  assert.match(manifest.config.annotations['composefs.config.fsverity-sha256-12'], /^[0-9a-f]{64}$/);
  // The config digest is the fs-verity digest of its bytes, as the reference tool computes it.
  const configPath = join(sealed, 'blobs/sha256', manifest.config.digest.slice(7));
  assert.equal(
    execFileSync('fsverity', ['digest', configPath], { encoding: 'utf8' }).split(' ')[0],
    `sha256:${manifest.config.annotations['composefs.config.fsverity-sha256-12']}`,
  );
  assert.equal(out.layers.length, 3);
  for (const layer of manifest.layers) {
    assert.equal(layer.mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
    assert.match(layer.annotations['composefs.layer.erofs.v1.fsverity-sha256-12'], /^[0-9a-f]{64}$/);
  }
  // The merged digest is that of the composefs image of the unpacked tree.
  const created = runSeal(['composefs', 'create', unpacked, join(work, 'unpacked.cfs'), '--print-digest']);
  assert.equal(created.status, 0, created.stderr);
  assert.equal(created.stdout.trim(), merged);
  seal('image', 'verify', `oci:${sealed}:s`);
  await mountsAsUnpacked(sealed, true);
  // skopeo carries the annotations along.
  execFileSync('skopeo', ['copy', `oci:${sealed}:s`, `oci:${join(work, 'skopeo')}:s`], { stdio: 'pipe' });
  seal('image', 'verify', `oci:${join(work, 'skopeo')}:s`);

  const annotated = copyOf(sealed, 'composefs-annotation');
  retag(annotated, (m) => {
    m.annotations['composefs.merged.erofs.v1.fsverity-sha256-12'] = '0'.repeat(64);
  });
  refused(annotated, /merged composefs image digest/);
  const swapped = copyOf(sealed, 'composefs-swapped');
  retag(swapped, (m) => {
    [m.layers[0], m.layers[1]] = [m.layers[1]!, m.layers[0]!];
  });
  refused(swapped, /layer|digest/);
  const config = copyOf(sealed, 'composefs-config');
  retag(config, (m) => {
    m.config.annotations['composefs.config.fsverity-sha256-12'] = 'f'.repeat(64);
  });
  refused(config, /config's fs-verity digest/);
});
