/**
 * The store and its transports against skopeo and umoci, and bad input leaving stores unchanged.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { isSealError } from '../../src/errors.ts';
import { type TarWriteEntry, writeTar } from '../../src/tar/index.ts';
import { treeFromDirectory, writeTreeToDirectory } from '../../src/tree/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { assertTreesEqual, generateEdgeCaseTree } from '../helpers/trees.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-store-'));
after(() => rm(work, { recursive: true, force: true }));
const env = { SEAL_STORE: join(work, 'default-store') };

const rootfs = join(work, 'rootfs');
await writeTreeToDirectory(generateEdgeCaseTree(9, { files: 20 }), rootfs);
const source = await treeFromDirectory(rootfs);

function seal(...args: string[]) {
  const r = runSeal(args, { env });
  assert.equal(r.status, 0, `seal ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/** A listing of every file under `dir` with its content hash: equal listings mean nothing changed. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const visit = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) visit(p);
      else out.push(`${p} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`);
    }
  };
  visit(dir);
  return out;
}

test('a directory imported by Seal is unpacked by umoci and inspected and copied by skopeo', async () => {
  const layout = join(work, 'seal-layout');
  seal('image', 'import', `dir:${rootfs}`, `oci:${layout}:v1`);
  const bundle = join(work, 'umoci-bundle');
  execFileSync('umoci', ['unpack', '--image', `${layout}:v1`, bundle], { stdio: 'pipe' });
  // umoci drops xattrs whose value is empty; everything else must match.
  await assertTreesEqual(await treeFromDirectory(join(bundle, 'rootfs')), source, {
    root: false,
    mtime: 'nsec',
    xattrs: (name) => name !== 'user.empty',
  });
  const inspected = JSON.parse(execFileSync('skopeo', ['inspect', `oci:${layout}:v1`], { encoding: 'utf8' }));
  assert.equal(inspected.Layers.length, 1);
  execFileSync('skopeo', ['copy', `oci:${layout}:v1`, `oci:${join(work, 'skopeo-copy')}:v1`], {
    stdio: 'pipe',
  });
  // Seal unpacks what skopeo copied, into the same tree.
  const out = join(work, 'seal-unpacked');
  seal('image', 'unpack', `oci:${join(work, 'skopeo-copy')}:v1`, out);
  await assertTreesEqual(await treeFromDirectory(out), source, { root: false, mtime: 'nsec' });
});

test('layouts and archives made by umoci and skopeo are read; the default store round-trips', async () => {
  const layout = join(work, 'umoci-layout');
  execFileSync('umoci', ['init', '--layout', layout]);
  execFileSync('umoci', ['new', '--image', `${layout}:base`]);
  execFileSync('umoci', ['insert', '--image', `${layout}:base`, join(rootfs, 'files'), '/files']);
  execFileSync('skopeo', ['copy', `oci:${layout}:base`, `oci-archive:${join(work, 'umoci.tar')}:base`], {
    stdio: 'pipe',
  });
  seal('image', 'import', `oci-archive:${join(work, 'umoci.tar')}:base`, 'from-umoci:base');
  const listed = JSON.parse(seal('image', 'ls', '--json'));
  assert.ok(listed.some((i: { name: string }) => i.name === 'from-umoci:base'));
  const ours = join(work, 'from-umoci-seal');
  seal('image', 'unpack', 'from-umoci:base', ours);
  const bundle = join(work, 'from-umoci-umoci');
  execFileSync('umoci', ['unpack', '--image', `${layout}:base`, bundle], { stdio: 'pipe' });
  await assertTreesEqual(await treeFromDirectory(ours), await treeFromDirectory(join(bundle, 'rootfs')), {
    root: false,
  });
  // Seal writes an oci-archive that skopeo reads.
  seal('image', 'import', 'from-umoci:base', `oci-archive:${join(work, 'seal.tar')}:base`);
  execFileSync('skopeo', ['inspect', `oci-archive:${join(work, 'seal.tar')}:base`], { stdio: 'pipe' });
});

test('docker-archive (docker save format) is read', async () => {
  const dir = join(work, 'docker-save');
  mkdirSync(dir);
  const chunks: Uint8Array[] = [];
  const entry: TarWriteEntry = {
    path: 'hello.txt',
    type: 'file',
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: { sec: 0, nsec: 0 },
    size: 5,
    body: (async function* () {
      yield Buffer.from('hello');
    })(),
  };
  for await (const c of writeTar([entry])) chunks.push(c);
  const layer = Buffer.concat(chunks);
  const diffId = `sha256:${createHash('sha256').update(layer).digest('hex')}`;
  writeFileSync(join(dir, 'layer.tar'), layer);
  const config = { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [diffId] } };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  writeFileSync(
    join(dir, 'manifest.json'),
    JSON.stringify([{ Config: 'config.json', RepoTags: ['hello:1'], Layers: ['layer.tar'] }]),
  );
  execFileSync('tar', ['-cf', join(work, 'docker.tar'), '-C', dir, '.']);
  const out = join(work, 'docker-unpacked');
  seal('image', 'unpack', `docker-archive:${join(work, 'docker.tar')}:hello:1`, out);
  assert.equal(readFileSync(join(out, 'hello.txt'), 'utf8'), 'hello');
});

test('gc removes only unreferenced blobs; fsck finds corruption', async () => {
  const store = join(work, 'gc-store');
  seal('image', 'import', `dir:${join(rootfs, 'links')}`, `oci:${store}:a`);
  seal('image', 'import', `dir:${join(rootfs, 'dev')}`, `oci:${store}:b`);
  const before = readdirSync(join(store, 'blobs/sha256')).length;
  execFileSync('umoci', ['rm', '--image', `${store}:b`]);
  const gc = JSON.parse(seal('store', 'gc', '--store', store, '--json'));
  assert.equal(gc.removed.length, 3);
  assert.equal(readdirSync(join(store, 'blobs/sha256')).length, before - 3);
  assert.equal(JSON.parse(seal('store', 'fsck', '--store', store, '--json')).corrupt.length, 0);
  const blob = readdirSync(join(store, 'blobs/sha256'))[0]!;
  const path = join(store, 'blobs/sha256', blob);
  const bytes = readFileSync(path);
  bytes[0]! ^= 1;
  writeFileSync(path, bytes);
  const r = runSeal(['store', 'fsck', '--store', store, '--json'], { env });
  assert.equal(r.status, 1);
  assert.deepEqual(JSON.parse(r.stdout).corrupt, [`sha256:${blob}`]);
});

/** Builds a layout whose manifest points at `layers` (raw blobs), with sizes possibly lying. */
function handLayout(name: string, layers: Buffer[], lie?: 'size' | 'digest'): string {
  const layout = join(work, name);
  mkdirSync(join(layout, 'blobs/sha256'), { recursive: true });
  const put = (data: Buffer) => {
    const hex = createHash('sha256').update(data).digest('hex');
    writeFileSync(join(layout, 'blobs/sha256', hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: layers.map(() => `sha256:${'0'.repeat(64)}`) },
    }),
  );
  const layerDescs = layers.map((l) => ({
    mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
    ...put(l),
  }));
  if (lie === 'size') layerDescs[0]!.size += 10;
  if (lie === 'digest') {
    const path = join(layout, 'blobs/sha256', layerDescs[0]!.digest.slice(7));
    const bytes = readFileSync(path);
    bytes[bytes.length - 1]! ^= 0xff;
    writeFileSync(path, bytes);
  }
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...put(config) },
      layers: layerDescs,
    }),
  );
  writeFileSync(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...put(manifest),
          annotations: { 'org.opencontainers.image.ref.name': 't' },
        },
      ],
    }),
  );
  return layout;
}

async function tarOf(entries: TarWriteEntry[]): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const c of writeTar(entries)) chunks.push(c);
  return Buffer.concat(chunks);
}

test('bad input gives one clear line and leaves the store unchanged', async () => {
  const good = gzipSync(
    await tarOf([
      {
        path: 'ok',
        type: 'file',
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: { sec: 0, nsec: 0 },
        size: 2,
        body: (async function* () {
          yield Buffer.from('ok');
        })(),
      },
    ]),
  );
  const dotdot = gzipSync(
    await tarOf([
      { path: '../escape', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 }, size: 0 },
    ]),
  );
  const symlinkEscape = gzipSync(
    await tarOf([
      {
        path: 'l',
        type: 'symlink',
        linkname: '/tmp',
        mode: 0o777,
        uid: 0,
        gid: 0,
        mtime: { sec: 0, nsec: 0 },
      },
      { path: 'l/x', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 }, size: 0 },
    ]),
  );
  const store = join(work, 'guarded-store');
  seal('image', 'import', `dir:${join(rootfs, 'links')}`, `oci:${store}:keep`);
  const cases: [string, string[], RegExp][] = [
    [
      'digest mismatch',
      ['image', 'import', `oci:${handLayout('bad-digest', [good], 'digest')}:t`, `oci:${store}:x`],
      /digest/,
    ],
    [
      'lying size',
      ['image', 'import', `oci:${handLayout('bad-size', [good], 'size')}:t`, `oci:${store}:x`],
      /bytes/,
    ],
    [
      'truncated gzip',
      [
        'image',
        'unpack',
        `oci:${handLayout('truncated', [good.subarray(0, good.length - 8)])}:t`,
        join(work, 'u1'),
      ],
      /truncated/,
    ],
    [
      '.. in a layer',
      ['image', 'unpack', `oci:${handLayout('dotdot', [dotdot])}:t`, join(work, 'u2')],
      /\.\./,
    ],
    [
      'symlink escape',
      ['image', 'unpack', `oci:${handLayout('symlink', [symlinkEscape])}:t`, join(work, 'u3')],
      /symlink/,
    ],
    ['not a layout', ['image', 'import', `oci:${work}/nowhere:t`, `oci:${store}:x`], /layout/],
    ['bad reference', ['image', 'import', 'Not_A_Name', `oci:${store}:x`], /reference/],
  ];
  for (const [name, args, pattern] of cases) {
    const before = snapshot(store);
    const r = runSeal(args, { env });
    assert.notEqual(r.status, 0, `${name}: expected a failure`);
    assert.equal(r.stderr.trim().split('\n').length, 1, `${name}: one line expected, got ${r.stderr}`);
    assert.match(r.stderr, pattern, name);
    assert.deepEqual(snapshot(store), before, `${name}: the store changed`);
  }
  assert.ok(isSealError(new (await import('../../src/store/index.ts')).StoreError('STORE_NOT_FOUND', 'x')));
});

test('seal image unpack of a multi-layer image with whiteouts, opaque dirs and hardlinks equals umoci unpack', async () => {
  const {
    dirEntry,
    fileEntry,
    linkEntry,
    tarOf: layerOf,
    writeLayout,
  } = await import('../helpers/layout.ts');
  const layout = join(work, 'multi-layer');
  writeLayout(layout, [
    await layerOf([
      dirEntry('etc/'),
      fileEntry('etc/gone', 'x'),
      dirEntry('opaque/'),
      fileEntry('opaque/old', 'old'),
      fileEntry('target', 'hardlinked', { uid: 5, mode: 0o600 }),
      {
        path: 'dev-null',
        type: 'char',
        devmajor: 1,
        devminor: 3,
        mode: 0o666,
        uid: 0,
        gid: 0,
        mtime: { sec: 1, nsec: 0 },
      },
    ]),
    await layerOf([
      fileEntry('etc/.wh.gone', ''),
      fileEntry('opaque/.wh..wh..opq', ''),
      fileEntry('opaque/new', 'new', { xattrs: new Map([['user.note', Buffer.from('kept')]]) }),
      linkEntry('link', 'hardlink', 'target'),
      linkEntry('sym', 'symlink', '../target'),
    ]),
  ]);
  const ours = join(work, 'multi-seal');
  seal('image', 'unpack', `oci:${layout}:test`, ours);
  const bundle = join(work, 'multi-umoci');
  execFileSync('umoci', ['unpack', '--image', `${layout}:test`, bundle], { stdio: 'pipe' });
  await assertTreesEqual(await treeFromDirectory(ours), await treeFromDirectory(join(bundle, 'rootfs')), {
    root: false,
    mtime: 'nsec',
  });
});
