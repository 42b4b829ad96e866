/**
 * Layer semantics (whiteouts, opaque directories, replacements, hardlinks across layers)
 * checked against umoci's unpacking of the same layers, and hostile layers refused.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { compress, decompress } from '../../src/tar/index.ts';
import {
  layerTree,
  mergeLayers,
  Spool,
  type Tree,
  TreeError,
  treeFromDirectory,
  writeTreeToDirectory,
} from '../../src/tree/index.ts';
import {
  dirEntry as dir,
  linkEntry as entry,
  fileEntry as file,
  tarOf as tarBytes,
  writeLayout,
} from '../helpers/layout.ts';
import { assertTreesEqual } from '../helpers/trees.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-overlay-'));
after(() => rm(work, { recursive: true, force: true }));

async function* once(data: Uint8Array) {
  yield data;
}

const layers = async () => [
  await tarBytes([
    dir('etc/'),
    file('etc/keep', 'kept'),
    file('etc/gone', 'to be deleted'),
    dir('opaque/'),
    file('opaque/old', 'hidden by the opaque marker'),
    dir('opaque/sub/'),
    file('opaque/sub/deep', 'also hidden'),
    dir('replaced-dir/'),
    file('replaced-dir/child', 'dir becomes a file'),
    file('becomes-dir', 'file becomes a dir'),
    file('lower-target', 'a file hardlinked from an upper layer', { uid: 7, gid: 8, mode: 0o600 }),
    dir('attrs/', { mode: 0o700 }),
    file('attrs/inside', 'kept under a directory whose attributes change'),
  ]),
  await tarBytes([
    file('etc/.wh.gone', ''),
    dir('opaque/'),
    file('opaque/new', 'added in the layer that made the directory opaque'),
    file('opaque/.wh..wh..opq', ''),
    file('replaced-dir', 'now a file'),
    dir('becomes-dir/'),
    file('becomes-dir/child', 'inside'),
    entry('upper-link', 'hardlink', 'lower-target'),
    dir('attrs/', { mode: 0o751, uid: 5 }),
    file('.wh.never-existed', ''),
  ]),
  await tarBytes([file('etc/gone', 'recreated after deletion'), entry('sym', 'symlink', 'etc/keep')]),
];

async function umociUnpack(blobs: Buffer[]): Promise<Tree> {
  const layout = join(work, 'layout');
  writeLayout(layout, blobs, 'test');
  const bundle = join(work, 'bundle');
  execFileSync('umoci', ['unpack', '--image', `${layout}:test`, bundle], { stdio: 'pipe' });
  return treeFromDirectory(join(bundle, 'rootfs'));
}

test('merged layers equal umoci unpack of the same image', async () => {
  const blobs = await layers();
  const spool = await Spool.create(work);
  try {
    // Feed one layer compressed, to go through the same decompression path as images.
    const merged = await mergeLayers(
      [once(blobs[0]!), decompress(compress(once(blobs[1]!), 'zstd')), once(blobs[2]!)],
      spool,
    );
    const reference = await umociUnpack(blobs);
    await assertTreesEqual(merged, reference, { root: false });
    const paths = (tree: Tree) => [...tree.root.children.keys()].sort();
    assert.deepEqual(paths(merged), [
      'attrs',
      'becomes-dir',
      'etc',
      'lower-target',
      'opaque',
      'replaced-dir',
      'sym',
      'upper-link',
    ]);
    assert.equal(merged.root.children.get('upper-link'), merged.root.children.get('lower-target'));
  } finally {
    await spool.close();
  }
});

test('a single layer keeps its whiteouts in overlayfs form', async () => {
  const blobs = await layers();
  const spool = await Spool.create(work);
  try {
    const lower = await mergeLayers([once(blobs[0]!)], spool);
    const tree = await layerTree(once(blobs[1]!), spool, {
      whiteouts: 'overlayfs',
      xattrPrefix: 'user.overlay.',
      lower,
    });
    const etc = tree.root.children.get('etc');
    assert.equal(etc?.type, 'dir');
    const gone = etc.type === 'dir' ? etc.children.get('gone') : undefined;
    assert.deepEqual(gone?.type === 'char' ? gone.rdev : undefined, { major: 0, minor: 0 });
    const opaque = tree.root.children.get('opaque');
    assert.equal(Buffer.from(opaque?.xattrs.get('user.overlay.opaque') ?? []).toString(), 'y');
    assert.equal(
      tree.root.children.get('upper-link')?.type,
      'file',
      'a hardlink into a lower layer becomes a copy',
    );
    const oci = await layerTree(once(blobs[1]!), spool, { whiteouts: 'oci', lower });
    const ociEtc = oci.root.children.get('etc');
    assert.ok(ociEtc?.type === 'dir' && ociEtc.children.has('.wh.gone'));
  } finally {
    await spool.close();
  }
});

const hostile: [string, () => Promise<Buffer>, string][] = [
  ['a ".." component', () => tarBytes([file('../escape', 'x')]), 'TREE_UNSAFE_PATH'],
  ['a ".." in the middle', () => tarBytes([dir('a/'), file('a/../../escape', 'x')]), 'TREE_UNSAFE_PATH'],
  [
    'an entry below a symlink to outside',
    () => tarBytes([entry('link', 'symlink', '/tmp'), file('link/escape', 'x')]),
    'TREE_SYMLINK_ESCAPE',
  ],
  [
    'an entry below a relative symlink',
    () => tarBytes([dir('a/'), entry('a/up', 'symlink', '../..'), file('a/up/escape', 'x')]),
    'TREE_SYMLINK_ESCAPE',
  ],
  [
    'a hardlink to a missing file',
    () => tarBytes([entry('h', 'hardlink', 'missing')]),
    'TREE_HARDLINK_TARGET',
  ],
  [
    'a hardlink that escapes',
    () => tarBytes([entry('h', 'hardlink', '../../etc/passwd')]),
    'TREE_UNSAFE_PATH',
  ],
  [
    'a hardlink through a symlink',
    () => tarBytes([entry('l', 'symlink', '/etc'), entry('h', 'hardlink', 'l/passwd')]),
    'TREE_SYMLINK_ESCAPE',
  ],
  ['conflicting duplicates', () => tarBytes([file('a', 'one'), dir('a/')]), 'TREE_DUPLICATE_ENTRY'],
  ['a symlink replacing the root', () => tarBytes([entry('./', 'symlink', '/')]), 'TREE_UNSAFE_PATH'],
];

for (const [name, make, code] of hostile) {
  test(`refuses a layer with ${name}, writing nothing outside the target`, async () => {
    const spool = await Spool.create(work);
    try {
      await assert.rejects(mergeLayers([once(await make())], spool), (e: unknown) => {
        assert.ok(e instanceof TreeError, `expected a TreeError, got ${e}`);
        assert.equal(e.code, code);
        return true;
      });
    } finally {
      await spool.close();
    }
  });
}

test('absolute paths are taken relative to the root, as container runtimes do', async () => {
  const spool = await Spool.create(work);
  try {
    const tree = await mergeLayers([once(await tarBytes([file('/etc-abs', 'x')]))], spool);
    assert.ok(tree.root.children.has('etc-abs'));
    const target = join(work, 'abs-out');
    await writeTreeToDirectory(tree, target);
    assert.deepEqual(readdirSync(target), ['etc-abs']);
    assert.ok(!existsSync('/etc-abs'));
  } finally {
    await spool.close();
  }
});

test('truncated and corrupt layers give typed errors', async () => {
  const blob = await tarBytes([file('a', 'x'.repeat(5000)), file('b', 'y')]);
  const gz = gzipSync(blob);
  const cases: [Uint8Array, string][] = [
    [blob.subarray(0, 700), 'TAR_TRUNCATED'],
    [gz.subarray(0, gz.length - 10), 'COMPRESSION_TRUNCATED'],
    [Buffer.concat([gz.subarray(0, 20), Buffer.alloc(50, 0x55), gz.subarray(70)]), 'COMPRESSION_CORRUPT'],
    [Buffer.concat([blob.subarray(0, 100), Buffer.from('garbage!'), blob.subarray(108)]), 'TAR_CHECKSUM'],
  ];
  for (const [data, code] of cases) {
    const spool = await Spool.create(work);
    try {
      await assert.rejects(mergeLayers([decompress(once(data))], spool), (e: unknown) => {
        assert.equal((e as { code?: string }).code, code, String(e));
        return true;
      });
    } finally {
      await spool.close();
    }
  }
});
