/**
 * The files of an OCI layout are data, never a way into the host: a blob that is a FIFO, a
 * device, a directory, or a symlink (to /dev/zero with a huge declared size, or to a host file
 * whose content matches the digest), a blob directory that is a symlink, and an index.json that
 * is a symlink are refused with typed errors — without hanging, without reading the target, and
 * without gc or a copy touching anything outside the layout.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  cpSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { copyImage, LayoutStore, openDestination, openSource, unpackImage } from '../../src/store/index.ts';
import { makeNode } from '../../src/util/fsops.ts';
import { runSeal } from '../helpers/cli.ts';
import { fileEntry, tarOf, writeLayout } from '../helpers/layout.ts';
import { assertTyped, makeCanary, scratch, watchDirectory } from './helpers.ts';

const canary = makeCanary();
const work = scratch('blobs');
after(() => {
  rmSync(work, { recursive: true, force: true });
  rmSync(canary.dir, { recursive: true, force: true });
});

const layer = await tarOf([fileEntry('f', 'hello')]);

/** A valid layout and the path of its (only) layer blob. */
function layout(name: string): { dir: string; blob: string; hex: string } {
  const dir = join(work, name);
  writeLayout(dir, [layer], 't');
  const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8'));
  const manifest = JSON.parse(
    readFileSync(join(dir, 'blobs/sha256', index.manifests[0].digest.slice(7)), 'utf8'),
  );
  const hex = manifest.layers[0].digest.slice(7);
  return { dir, blob: join(dir, 'blobs/sha256', hex), hex };
}

/** Ways to replace a layer blob by something that is not a regular file of the layout. */
const SPECIAL: [what: string, plant: (blob: string) => void][] = [
  ['a FIFO (a synchronous read would wait forever)', (blob) => makeNode(Buffer.from(blob), 0o010644)],
  ['a character device like /dev/zero', (blob) => makeNode(Buffer.from(blob), 0o020644, 1, 5)],
  ['a symlink to /dev/zero', (blob) => symlinkSync('/dev/zero', blob)],
  ['a directory', (blob) => mkdirSync(blob)],
  ['a symlink to a FIFO outside', (blob) => symlinkSync(join(work, 'outside-fifo'), blob)],
];

test('a layer blob that is not a regular file of the layout is refused by unpack, copy, fsck and gc', async () => {
  makeNode(Buffer.from(join(work, 'outside-fifo')), 0o010644);
  for (const [what, plant] of SPECIAL) {
    const { dir, blob } = layout(`special-${SPECIAL.findIndex(([w]) => w === what)}`);
    rmSync(blob);
    plant(blob);
    const ref = `oci:${dir}:t`;
    await assert.rejects(
      (async () => {
        const src = await openSource(ref);
        try {
          await unpackImage(src, join(dir, '..', `${what.length}-out`));
        } finally {
          await src.close();
        }
      })(),
      (error) => {
        assertTyped(error, ['STORE_UNSAFE_PATH'], `unpack, ${what}`);
        return true;
      },
    );
    const copyDest = join(work, `copy-${what.length}`);
    const r = runSeal(['copy', ref, `oci:${copyDest}:t`]);
    assert.equal(r.status, 1, `copy, ${what}: ${r.stderr}`);
    assert.ok(r.stderr.includes('[STORE_UNSAFE_PATH]'), r.stderr);
    assert.deepEqual(readdirSync(join(copyDest, 'blobs/sha256')), [], `copy, ${what}: blobs left behind`);
    const fsck = await (await LayoutStore.open(dir)).fsck();
    assert.equal(fsck.corrupt.length, 1, `fsck, ${what}`);
    canary.assertUntouched();
  }
});

test('a symlinked blob whose target matches its digest (probing a host file) is refused', async () => {
  // A "layer" that is the victim file itself: its digest is known to whoever wrote it.
  const { dir } = layout('probe');
  const bytes = readFileSync(canary.victim);
  const hex = createHash('sha256').update(bytes).digest('hex');
  symlinkSync(canary.victim, join(dir, 'blobs/sha256', hex));
  const store = await LayoutStore.open(dir);
  await assert.rejects(store.readBlob({ digest: `sha256:${hex}`, size: bytes.length }), (error) => {
    assertTyped(error, ['STORE_UNSAFE_PATH'], 'readBlob');
    return true;
  });
  await assert.rejects(
    (async () => {
      for await (const _ of store.getBlob({ digest: `sha256:${hex}`, size: bytes.length })) void _;
    })(),
    (error) => {
      assertTyped(error, ['STORE_UNSAFE_PATH'], 'getBlob');
      return true;
    },
  );
  assert.equal(await store.hasBlob(`sha256:${hex}`), false, 'a symlink is not a blob of the layout');
  canary.assertUntouched();
});

test('a huge declared size on a symlink to /dev/zero ends at once with a typed error', async () => {
  const { dir } = layout('zero');
  const hex = 'ab'.repeat(32);
  symlinkSync('/dev/zero', join(dir, 'blobs/sha256', hex));
  const store = await LayoutStore.open(dir);
  let bytes = 0;
  await assert.rejects(
    (async () => {
      for await (const chunk of store.getBlob({ digest: `sha256:${hex}`, size: 2 ** 50 }))
        bytes += chunk.length;
    })(),
    (error) => {
      assertTyped(error, ['STORE_UNSAFE_PATH'], 'getBlob');
      return true;
    },
  );
  assert.equal(bytes, 0, 'nothing was read from /dev/zero');
});

test('a blob directory or index.json that is a symlink is refused; gc and fsck never act outside the layout', async () => {
  // blobs/sha256 pointing at the canary: gc would delete every file there it does not know.
  const moved = layout('dirlink');
  const elsewhere = join(work, 'real-blobs');
  renameSync(join(moved.dir, 'blobs/sha256'), elsewhere);
  // What the symlink points at: the layout's real blobs, and a host file named like a blob.
  const target = join(work, 'symlink-target');
  cpSync(elsewhere, target, { recursive: true });
  cpSync(canary.victim, join(target, 'ab'.repeat(32)));
  const targetUntouched = watchDirectory(target);
  symlinkSync(target, join(moved.dir, 'blobs/sha256'));
  for (const args of [
    ['store', 'gc', '--store', moved.dir],
    ['store', 'fsck', '--store', moved.dir],
    ['image', 'unpack', `oci:${moved.dir}:t`, join(work, 'dirlink-out')],
  ]) {
    const r = runSeal(args);
    assert.notEqual(r.status, 0, `${args.join(' ')}: ${r.stdout}`);
    assert.ok(r.stderr.includes('[STORE_UNSAFE_PATH]'), `${args.join(' ')}: ${r.stderr}`);
  }
  targetUntouched();

  const linked = layout('indexlink');
  renameSync(join(linked.dir, 'index.json'), join(work, 'index-elsewhere.json'));
  symlinkSync(join(work, 'index-elsewhere.json'), join(linked.dir, 'index.json'));
  await assert.rejects(
    LayoutStore.open(linked.dir).then((s) => s.index()),
    (error) => {
      assertTyped(error, ['STORE_UNSAFE_PATH'], 'index.json symlink');
      return true;
    },
  );
  const blobsLink = layout('blobslink');
  renameSync(join(blobsLink.dir, 'blobs'), join(work, 'blobs-elsewhere'));
  symlinkSync(join(work, 'blobs-elsewhere'), join(blobsLink.dir, 'blobs'));
  await assert.rejects(LayoutStore.open(blobsLink.dir), (error) => {
    assertTyped(error, ['STORE_UNSAFE_PATH'], 'blobs symlink');
    return true;
  });
  canary.assertUntouched();
});

test('a copy into a layout replaces a planted symlink by the real blob, never writing through it', async () => {
  const source = layout('good');
  const dest = layout('planted');
  rmSync(dest.blob);
  symlinkSync(canary.victim, dest.blob);
  const src = await openSource(`oci:${source.dir}:t`);
  const dst = await openDestination(`oci:${dest.dir}:t`);
  try {
    await copyImage(src, dst, { tag: 't' });
    await dst.commit();
  } finally {
    await src.close();
    await dst.close();
  }
  assert.ok(lstatSync(dest.blob).isFile(), 'the symlink was replaced by a file');
  assert.equal(createHash('sha256').update(readFileSync(dest.blob)).digest('hex'), dest.hex);
  canary.assertUntouched();
});
