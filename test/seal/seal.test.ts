/**
 * Sealing as squashfs + dm-verity: the kernel mounts the sealed layers under overlayfs (as
 * atomfs does) into the tree `seal image unpack` gives for the original; veritysetup accepts
 * every layer; tampering is caught and named.
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

const work = await mkdtemp(join(tmpdir(), 'seal-seal-'));
const mounts: string[] = [];
after(async () => {
  for (const m of mounts.reverse()) execFileSync('umount', [m], { stdio: 'ignore' });
  await rm(work, { recursive: true, force: true });
});

function seal(...args: string[]) {
  const r = runSeal(args);
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const source = join(work, 'source');
await writeThreeLayerImage(source);

/** Mounts each sealed layer blob (squashfs) and overlays them as atomfs does; returns the mount point. */
function mountSealed(layout: string, tag: string, name: string): string {
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
  const desc = index.manifests.find(
    (m: { annotations?: Record<string, string> }) =>
      m.annotations?.['org.opencontainers.image.ref.name'] === tag,
  );
  const manifest = JSON.parse(readFileSync(join(layout, 'blobs/sha256', desc.digest.slice(7)), 'utf8'));
  const lowers: string[] = [];
  for (const [i, layer] of manifest.layers.entries()) {
    const blob = join(layout, 'blobs/sha256', layer.digest.slice(7));
    const dir = join(work, `${name}-layer-${i}`);
    execFileSync('mkdir', ['-p', dir]);
    execFileSync('mount', ['-t', 'squashfs', '-o', 'loop,ro', blob, dir]);
    mounts.push(dir);
    lowers.unshift(dir);
  }
  // overlayfs needs two lower layers without an upper one; a single layer is the root itself.
  if (lowers.length === 1) return lowers[0]!;
  const merged = join(work, `${name}-merged`);
  execFileSync('mkdir', ['-p', merged]);
  execFileSync('mount', [
    '-t',
    'overlay',
    'overlay',
    '-o',
    `ro,index=off,xino=on,userxattr,lowerdir=${lowers.join(':')}`,
    merged,
  ]);
  mounts.push(merged);
  return merged;
}

test('sealed layers mount under overlayfs into the unpacked tree, per layer and flattened', async () => {
  const sealed = join(work, 'sealed');
  seal('image', 'seal', `oci:${source}:test`, `oci:${sealed}:layers`);
  seal('image', 'seal', `oci:${source}:test`, `oci:${sealed}:flat`, '--flatten', '--compression', 'gzip');
  const unpacked = join(work, 'unpacked');
  seal('image', 'unpack', `oci:${source}:test`, unpacked);
  const expected = await treeFromDirectory(unpacked);
  for (const tag of ['layers', 'flat']) {
    const merged = mountSealed(sealed, tag, tag);
    // A hardlink into a lower layer cannot cross filesystems: per layer it is a copy with the
    // same content and attributes; flattened, it is one inode again.
    await assertTreesEqual(await treeFromDirectory(merged), expected, {
      root: false,
      hardlinks: tag === 'flat',
    });
    seal('image', 'verify', `oci:${sealed}:${tag}`);
  }
  // veritysetup accepts every sealed layer with its annotated root hash.
  const inspect = JSON.parse(seal('image', 'inspect', `oci:${sealed}:layers`, '--json'));
  assert.equal(inspect.manifest.layers.length, 3);
  for (const layer of inspect.manifest.layers) {
    assert.equal(layer.mediaType, 'application/vnd.stacker.image.layer.squashfs+zstd');
    const blob = join(sealed, 'blobs/sha256', layer.digest.slice(7));
    const bytesUsed = Number(readFileSync(blob).readBigUInt64LE(40));
    const offset = Math.ceil(bytesUsed / 4096) * 4096;
    execFileSync('veritysetup', [
      'verify',
      blob,
      blob,
      layer.annotations['io.stackeroci.stacker.atomfs_verity_root_hash'],
      '--hash-offset',
      String(offset),
    ]);
  }
  // Sealing again gives the same digests, and sealing a sealed image keeps its layers.
  const again = join(work, 'again');
  seal('image', 'seal', `oci:${source}:test`, `oci:${again}:layers`);
  assert.equal(
    JSON.parse(seal('image', 'inspect', `oci:${again}:layers`, '--json')).descriptor.digest,
    inspect.descriptor.digest,
  );
  const resealed = JSON.parse(
    seal('image', 'seal', `oci:${sealed}:layers`, `oci:${again}:resealed`, '--json'),
  );
  assert.ok(resealed.layers.every((l: { kept: boolean }) => l.kept));
  // skopeo carries the sealed image without loss.
  execFileSync('skopeo', ['copy', `oci:${sealed}:layers`, `oci:${join(work, 'skopeo')}:layers`], {
    stdio: 'pipe',
  });
  seal('image', 'verify', `oci:${join(work, 'skopeo')}:layers`);
});

test('tampering with a layer, the layer order, an annotation or the config is caught and named', async () => {
  const pristine = join(work, 'tamper-base');
  seal('image', 'seal', `oci:${source}:test`, `oci:${pristine}:t`);
  const inspect = JSON.parse(seal('image', 'inspect', `oci:${pristine}:t`, '--json'));
  const manifestPath = join(pristine, 'blobs/sha256', inspect.descriptor.digest.slice(7));
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));

  /** Rewrites the manifest (re-tagging it) as an attacker with write access to the store would. */
  const retag = (layout: string, m: unknown) => {
    const bytes = Buffer.from(JSON.stringify(m));
    const digest = digestOf(bytes);
    writeFileSync(join(layout, 'blobs/sha256', digest.slice(7)), bytes);
    const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
    index.manifests[0] = { ...index.manifests[0], digest, size: bytes.length };
    writeFileSync(join(layout, 'index.json'), JSON.stringify(index));
  };
  const copy = (name: string) => {
    const dir = join(work, name);
    execFileSync('cp', ['-a', pristine, dir]);
    return dir;
  };
  const expectFailure = (layout: string, pattern: RegExp) => {
    const r = runSeal(['image', 'verify', `oci:${layout}:t`]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, pattern);
  };

  // A flipped byte inside layer 2's filesystem (the blob digest is fixed up, as a full attacker would).
  const flipped = copy('flipped');
  const layer = manifest.layers[1];
  const blobPath = join(flipped, 'blobs/sha256', layer.digest.slice(7));
  const blob = readFileSync(blobPath);
  blob[100] ^= 0x01;
  const newDigest = digestOf(blob);
  writeFileSync(join(flipped, 'blobs/sha256', newDigest.slice(7)), blob);
  const m1 = structuredClone(manifest);
  m1.layers[1].digest = newDigest;
  retag(flipped, m1);
  expectFailure(flipped, /layer 2 .*(data block 0 is corrupt|config's layer 2)/);
  // The same flip without fixing anything up: the digest check names the blob.
  const raw = copy('raw-flip');
  writeFileSync(join(raw, 'blobs/sha256', layer.digest.slice(7)), blob);
  expectFailure(raw, /digest/);
  // Layers swapped.
  const swapped = copy('swapped');
  const m2 = structuredClone(manifest);
  [m2.layers[0], m2.layers[1]] = [m2.layers[1], m2.layers[0]];
  retag(swapped, m2);
  expectFailure(swapped, /layer 1 .*config's layer 1/);
  // An edited root-hash annotation.
  const annotated = copy('annotated');
  const m3 = structuredClone(manifest);
  m3.layers[2].annotations['io.stackeroci.stacker.atomfs_verity_root_hash'] = '0'.repeat(64);
  retag(annotated, m3);
  expectFailure(annotated, /layer 3 .*root hash/);
  // An edited config: its digest no longer matches the manifest.
  const edited = copy('config');
  const configPath = join(edited, 'blobs/sha256', manifest.config.digest.slice(7));
  writeFileSync(configPath, readFileSync(configPath, 'utf8').replace('"amd64"', '"arm64"'));
  expectFailure(edited, /digest/);
});

test('seal image mount verifies, mounts and unmounts without leftovers; a tampered image is refused', async () => {
  const sealed = join(work, 'to-mount');
  seal('image', 'seal', `oci:${source}:test`, `oci:${sealed}:m`);
  const unpacked = join(work, 'unpacked-for-mount');
  seal('image', 'unpack', `oci:${source}:test`, unpacked);
  const env = { SEAL_RUNTIME_DIR: join(work, 'runtime') };
  const target = join(work, 'mounted');
  const mounted = runSeal(['image', 'mount', `oci:${sealed}:m`, target], { env });
  assert.equal(mounted.status, 0, mounted.stderr);
  assert.match(mounted.stdout, /no device-mapper/);
  try {
    await assertTreesEqual(await treeFromDirectory(target), await treeFromDirectory(unpacked), {
      root: false,
      hardlinks: false,
    });
  } finally {
    assert.equal(runSeal(['image', 'umount', target], { env }).status, 0);
  }
  const table = readFileSync('/proc/self/mountinfo', 'utf8');
  assert.ok(!table.includes(target) && !table.includes(env.SEAL_RUNTIME_DIR), 'every mount is gone');
  assert.ok(
    !execFileSync('losetup', ['-a'], { encoding: 'utf8' }).includes(sealed),
    'every loop device is gone',
  );
  // One flipped byte in a layer (digest fixed up in a copy of the store) and mount refuses.
  const manifest = JSON.parse(seal('image', 'inspect', `oci:${sealed}:m`, '--json')).manifest;
  const blobPath = join(sealed, 'blobs/sha256', manifest.layers[0].digest.slice(7));
  const original = readFileSync(blobPath);
  const bytes = Buffer.from(original);
  bytes[200] ^= 0x10;
  writeFileSync(blobPath, bytes);
  try {
    const r = runSeal(['image', 'mount', `oci:${sealed}:m`, target], { env });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /digest|corrupt/);
    assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes(target));
  } finally {
    writeFileSync(blobPath, original);
  }
});
