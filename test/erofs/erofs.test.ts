/**
 * EROFS writer and reader against the kernel (mounts), fsck.erofs and mkfs.erofs, on generated
 * edge cases and on the real Debian root filesystem.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ErofsError, ErofsImage, writeErofs, xxh32 } from '../../src/erofs/index.ts';
import {
  bufferContent,
  emptyDir,
  listLines,
  treeFromDirectory,
  writeTreeToDirectory,
} from '../../src/tree/index.ts';
import { corpusPath } from '../helpers/corpus.ts';
import { withMount } from '../helpers/mount.ts';
import { assertTreesEqual, generateEdgeCaseTree } from '../helpers/trees.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-erofs-'));
after(() => rm(work, { recursive: true, force: true }));

const edge = generateEdgeCaseTree(11, { sockets: true });

test('xxh32 matches the published test values', () => {
  assert.equal(xxh32(Buffer.alloc(0), 0), 0x02cc5d05);
  assert.equal(xxh32(Buffer.from('abc'), 0), 0x32d153ff);
  assert.equal(xxh32(Buffer.from('Nobody inspects the spammish repetition'), 0), 0xe2293b2f);
});

for (const chunkSize of [undefined, 4096, 1 << 16]) {
  const label = chunkSize ? `chunk-based (${chunkSize}-byte chunks)` : 'flat (plain and tail-packed)';
  test(`${label} images pass fsck.erofs, mount as the source tree and read back`, async () => {
    const image = join(work, `edge-${chunkSize ?? 'flat'}.erofs`);
    await writeErofs(edge, image, { chunkSize });
    // --extract without a directory decodes every file's data too.
    execFileSync('fsck.erofs', ['--extract', image], { stdio: 'pipe' });
    await withMount('erofs', image, join(work, 'mnt'), async (dir) => {
      await assertTreesEqual(await treeFromDirectory(dir), edge, { root: false });
    });
    const reader = ErofsImage.open(image);
    try {
      await assertTreesEqual(reader.toTree(), edge, { mtime: 'nsec' });
    } finally {
      reader.close();
    }
  });
}

test('all-zero chunks become holes', async () => {
  const root = emptyDir();
  const attrs = { mode: 0o644, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 }, xattrs: new Map() };
  const data = Buffer.alloc(1 << 20);
  data.fill(7, 300_000, 300_010);
  root.children.set('sparse', { ...attrs, type: 'file', content: bufferContent(data) });
  const image = join(work, 'sparse.erofs');
  const { size } = await writeErofs({ root }, image, { chunkSize: 65536 });
  assert.ok(size < 3 * 65536, `image of ${size} bytes should hold one data chunk`);
  await withMount('erofs', image, join(work, 'mnt'), async (dir) => {
    assert.ok(readFileSync(join(dir, 'sparse')).equals(data));
  });
});

test('the same tree gives the same bytes', async () => {
  const a = join(work, 'det-a.erofs');
  const b = join(work, 'det-b.erofs');
  await writeErofs(edge, a);
  await writeErofs(edge, b);
  assert.ok(readFileSync(a).equals(readFileSync(b)));
});

test('--mtime and --all-root as mkfs.erofs -T and --all-root', async () => {
  const image = join(work, 'fixed.erofs');
  await writeErofs(edge, image, { mtime: 1234, allRoot: true });
  const reader = ErofsImage.open(image);
  try {
    for (const { inode } of reader.walk()) {
      assert.equal(inode.mtime.sec, 1234);
      assert.equal(inode.uid, 0);
      assert.ok(inode.compact || inode.nlink > 0xffff);
    }
  } finally {
    reader.close();
  }
});

test("Seal's reader reads mkfs.erofs images like the kernel does", async () => {
  const source = join(work, 'source');
  await writeTreeToDirectory(edge, source);
  // mkfs.erofs 1.5 cannot add 255-byte names; leave those out of its input.
  execFileSync('find', [source, '-name', `${'n'.repeat(100)}*`, '-delete']);
  const expected = await treeFromDirectory(source);
  for (const options of [[], ['--chunksize=4096'], ['-Eforce-inode-extended'], ['-T0', '--all-root']]) {
    const image = join(work, 'mkfs.erofs');
    execFileSync('mkfs.erofs', ['--quiet', ...options, image, source]);
    const reader = ErofsImage.open(image);
    try {
      await withMount('erofs', image, join(work, 'mnt'), async (dir) => {
        await assertTreesEqual(reader.toTree(), await treeFromDirectory(dir), { mtime: 'nsec' });
      });
      if (options.length === 0) await assertTreesEqual(reader.toTree(), expected, { root: false });
    } finally {
      reader.close();
    }
  }
});

test('the Debian root filesystem: Seal writes it, the kernel and fsck.erofs agree, Seal reads mkfs.erofs', async () => {
  const corpus = corpusPath();
  const tree = await treeFromDirectory(corpus);
  const image = join(work, 'debian.erofs');
  await writeErofs(tree, image);
  execFileSync('fsck.erofs', [image], { stdio: 'pipe' });
  await withMount('erofs', image, join(work, 'mnt'), async (dir) => {
    await assertTreesEqual(await treeFromDirectory(dir), tree, { root: false });
  });
  const theirs = join(work, 'debian-mkfs.erofs');
  execFileSync('mkfs.erofs', ['--quiet', theirs, corpus]);
  const reader = ErofsImage.open(theirs);
  try {
    await assertTreesEqual(reader.toTree(), tree, { root: false });
    assert.equal(
      [
        ...listLines(
          [...reader.walk()].map(({ path, inode }) => ({
            path,
            inode: { ...inode, mtime: inode.mtime.sec },
          })),
        ),
      ].length,
      [...reader.walk()].length,
    );
  } finally {
    reader.close();
  }
  rmSync(theirs);
});

test('xattrs EROFS cannot name are refused with a typed error', async () => {
  const root = emptyDir({ xattrs: new Map([['system.other', new Uint8Array([1])]]) });
  await assert.rejects(writeErofs({ root }, join(work, 'bad.erofs')), (e: unknown) => {
    assert.ok(e instanceof ErofsError);
    assert.equal(e.code, 'EROFS_UNREPRESENTABLE');
    return true;
  });
});
