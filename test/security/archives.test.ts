/**
 * Archives are read, never unpacked onto the host: docker-archive's manifest.json cannot name a
 * host file (`../`, absolute paths, symlinks out of the archive, /dev/zero), a member that is a
 * FIFO, a device or a directory is refused, garbage documents are typed errors; an oci-archive's
 * symlinks, devices, owners and capabilities never reach the disk.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { copyImage, openDestination, openSource, unpackImage } from '../../src/store/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { fileEntry, tarOf } from '../helpers/layout.ts';
import { assertTyped, makeCanary, type PyMember, pythonTar, scratch } from './helpers.ts';

const canary = makeCanary();
const work = scratch('archives');
// Seal's temporary directories of this process go here, where nothing else makes any.
const temporary = join(work, 'tmp');
mkdirSync(temporary);
process.env.SEAL_TMPDIR = temporary;
after(() => {
  rmSync(work, { recursive: true, force: true });
  rmSync(canary.dir, { recursive: true, force: true });
});

const layer = (await tarOf([fileEntry('hello', 'world')])).toString('latin1');
const config = JSON.stringify({
  architecture: 'amd64',
  os: 'linux',
  rootfs: { type: 'layers', diff_ids: [] },
});
const up = '../'.repeat(12);

/** A docker-save archive with the given manifest.json and extra members. */
function dockerArchive(manifest: unknown, members: PyMember[]): string {
  const file = join(work, `save-${Math.random().toString(36).slice(2)}.tar`);
  const text = typeof manifest === 'string' ? manifest : JSON.stringify(manifest);
  writeFileSync(file, pythonTar([{ name: 'manifest.json', data: text }, ...members], 'pax'));
  return `docker-archive:${file}`;
}

const good: PyMember[] = [
  { name: 'config.json', data: config },
  { name: 'l1/layer.tar', data: layer },
];

/** Attacks on the paths manifest.json names, each expected to be a typed refusal. */
const ATTACKS: [what: string, manifest: unknown, members: PyMember[], codes: string[]][] = [
  [
    'Config climbing out',
    [{ Config: `${up}${canary.victim.slice(1)}`, Layers: ['l1/layer.tar'] }],
    good,
    ['STORE_INVALID_DOCUMENT'],
  ],
  [
    'Config absolute',
    [{ Config: canary.victim, Layers: ['l1/layer.tar'] }],
    good,
    ['STORE_INVALID_DOCUMENT'],
  ],
  [
    'a layer climbing out',
    [{ Config: 'config.json', Layers: [`${up}${canary.victim.slice(1)}`] }],
    good,
    ['STORE_INVALID_DOCUMENT'],
  ],
  [
    'a layer at /dev/zero',
    [{ Config: 'config.json', Layers: ['/dev/zero'] }],
    good,
    ['STORE_INVALID_DOCUMENT'],
  ],
  [
    'a layer that is a symlink to a host file',
    [{ Config: 'config.json', Layers: ['evil.tar'] }],
    [...good, { name: 'evil.tar', type: 'symlink', linkname: canary.victim }],
    ['STORE_INVALID_DOCUMENT'],
  ],
  [
    'a layer that is a symlink to /dev/zero',
    [{ Config: 'config.json', Layers: ['zero.tar'] }],
    [...good, { name: 'zero.tar', type: 'symlink', linkname: '/dev/zero' }],
    ['STORE_INVALID_DOCUMENT'],
  ],
  [
    'a config that is a relative symlink climbing out',
    [{ Config: 'c.json', Layers: ['l1/layer.tar'] }],
    [...good, { name: 'c.json', type: 'symlink', linkname: `${up}${canary.victim.slice(1)}` }],
    ['STORE_INVALID_DOCUMENT'],
  ],
  [
    'a layer through a symlinked directory',
    [{ Config: 'config.json', Layers: ['d/victim'] }],
    [...good, { name: 'd', type: 'symlink', linkname: canary.dir }],
    ['STORE_INVALID_DOCUMENT'],
  ],
  [
    'a layer that is a FIFO',
    [{ Config: 'config.json', Layers: ['fifo'] }],
    [...good, { name: 'fifo', type: 'fifo' }],
    ['STORE_INVALID_DOCUMENT'],
  ],
  [
    'a layer that is a character device',
    [{ Config: 'config.json', Layers: ['dev'] }],
    [...good, { name: 'dev', type: 'char' }],
    ['STORE_INVALID_DOCUMENT'],
  ],
  [
    'a layer that is a directory',
    [{ Config: 'config.json', Layers: ['l1'] }],
    good,
    ['STORE_INVALID_DOCUMENT'],
  ],
  [
    'a symlink loop',
    [{ Config: 'config.json', Layers: ['a'] }],
    [...good, { name: 'a', type: 'symlink', linkname: 'b' }, { name: 'b', type: 'symlink', linkname: 'a' }],
    ['STORE_INVALID_DOCUMENT'],
  ],
  [
    'manifest.json that is not JSON',
    '[{"Config": "config.json", "Layers": [',
    good,
    ['STORE_INVALID_DOCUMENT'],
  ],
  ['manifest.json of the wrong shape', { Config: 'config.json' }, good, ['STORE_INVALID_DOCUMENT']],
  [
    'a Layers entry that is not a string',
    [{ Config: 'config.json', Layers: [{ path: 'x' }] }],
    good,
    ['STORE_INVALID_DOCUMENT'],
  ],
  [
    'a config of 17 MiB',
    [{ Config: 'big.json', Layers: [] }],
    [{ name: 'big.json', data: ' '.repeat(17 << 20) }],
    ['STORE_INVALID_DOCUMENT'],
  ],
];

test('docker-archive: manifest.json cannot reach host files, special files or loops; garbage is typed', async () => {
  for (const [what, manifest, members, codes] of ATTACKS) {
    const ref = dockerArchive(manifest, members);
    await assert.rejects(
      openSource(ref).then((s) => s.close()),
      (error) => {
        assertTyped(error, codes, what);
        return true;
      },
      `${what}: accepted`,
    );
    canary.assertUntouched();
  }
  // No temporary directory is left behind by a refused archive.
  assert.deepEqual(readdirSync(temporary), [], 'temporary archive directories left behind');
});

test('docker-archive: a layer shared through a symlink inside the archive (old docker save) is read', async () => {
  const diff = `sha256:${createHash('sha256').update(Buffer.from(layer, 'latin1')).digest('hex')}`;
  const twoLayers = JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [diff, diff] },
  });
  const ref = dockerArchive(
    [{ Config: 'config.json', RepoTags: ['x:1'], Layers: ['l1/layer.tar', 'l2/layer.tar'] }],
    [
      { name: 'config.json', data: twoLayers },
      { name: 'l1/layer.tar', data: layer },
      { name: 'l2/layer.tar', type: 'symlink', linkname: '../l1/layer.tar' },
    ],
  );
  const src = await openSource(ref);
  try {
    const dest = join(work, 'shared');
    const { manifest } = await unpackImage(src, dest);
    assert.equal(manifest.layers.length, 2);
    assert.equal(manifest.layers[0]!.digest, manifest.layers[1]!.digest);
    assert.equal(readFileSync(join(dest, 'hello'), 'utf8'), 'world');
  } finally {
    await src.close();
  }
});

/** An oci-archive whose layout holds extra hostile members beside a valid image. */
async function ociArchive(extra: PyMember[], blobAs?: 'symlink' | 'fifo'): Promise<string> {
  const layerBytes = Buffer.from(layer, 'latin1');
  const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
  const cfg = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: [`sha256:${sha(layerBytes)}`] },
    }),
  );
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: {
      mediaType: 'application/vnd.oci.image.config.v1+json',
      digest: `sha256:${sha(cfg)}`,
      size: cfg.length,
    },
    layers: [
      {
        mediaType: 'application/vnd.oci.image.layer.v1.tar',
        digest: `sha256:${sha(layerBytes)}`,
        size: layerBytes.length,
      },
    ],
  });
  const index = JSON.stringify({
    schemaVersion: 2,
    manifests: [
      {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        digest: `sha256:${sha(manifest)}`,
        size: manifest.length,
        annotations: { 'org.opencontainers.image.ref.name': 't' },
      },
    ],
  });
  const layerMember: PyMember =
    blobAs === 'symlink'
      ? { name: `blobs/sha256/${sha(layerBytes)}`, type: 'symlink', linkname: canary.victim }
      : blobAs === 'fifo'
        ? { name: `blobs/sha256/${sha(layerBytes)}`, type: 'fifo' }
        : { name: `blobs/sha256/${sha(layerBytes)}`, data: layer };
  const file = join(work, `layout-${Math.random().toString(36).slice(2)}.tar`);
  writeFileSync(
    file,
    pythonTar(
      [
        { name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' },
        { name: 'index.json', data: index },
        { name: `blobs/sha256/${sha(manifest)}`, data: manifest },
        { name: `blobs/sha256/${sha(cfg)}`, data: cfg.toString('latin1') },
        layerMember,
        ...extra,
      ],
      'pax',
    ),
  );
  return `oci-archive:${file}:t`;
}

test('oci-archive: symlinks, devices, setuid modes and capabilities of the archive never reach the disk', async () => {
  const ref = await ociArchive([
    { name: 'escape', type: 'symlink', linkname: canary.victim },
    { name: 'null', type: 'char' },
    { name: 'setuid', data: 'x', pax: { 'SCHILY.xattr.security.capability': 'AAAA' } },
  ]);
  const src = await openSource(ref);
  try {
    const dest = join(work, 'oci-archive-copy');
    const dst = await openDestination(`oci:${dest}:t`);
    try {
      await copyImage(src, dst, { tag: 't' });
      await dst.commit();
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
  canary.assertUntouched();
  for (const [what, blobAs] of [
    ['a symlinked blob', 'symlink'],
    ['a FIFO blob', 'fifo'],
  ] as const) {
    const bad = await ociArchive([], blobAs);
    const r = runSeal(['image', 'unpack', bad, join(work, `bad-${blobAs}`)]);
    assert.equal(r.status, 1, `${what}: ${r.stderr}`);
    assert.ok(r.stderr.includes('[STORE_NOT_FOUND]'), `${what}: ${r.stderr}`);
  }
  canary.assertUntouched();
});
