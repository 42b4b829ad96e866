/**
 * The squashfs writer against the kernel (loop mounts) and squashfs-tools (unsquashfs).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { SquashfsError, SquashfsImage, writeSquashfs, type XzFilter } from '../../src/squashfs/index.ts';
import { bufferContent, emptyDir, type Inode, type Tree, treeFromDirectory } from '../../src/tree/index.ts';
import { withMount } from '../helpers/mount.ts';
import { assertTreesEqual, generateEdgeCaseTree } from '../helpers/trees.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-squashfs-'));
after(() => rm(work, { recursive: true, force: true }));

const edge = generateEdgeCaseTree(5, { sockets: true });

for (const [compression, blockSize] of [
  ['gzip', 131072],
  ['zstd', 4096],
  ['xz', 65536],
  ['none', 1 << 20],
] as const) {
  test(`${compression} image with ${blockSize}-byte blocks mounts as the source tree`, async () => {
    const image = join(work, `edge-${compression}.sqfs`);
    await writeSquashfs(edge, image, { compression, blockSize });
    await withMount('squashfs', image, join(work, `mnt-${compression}`), async (dir) => {
      await assertTreesEqual(await treeFromDirectory(dir), edge, { root: false });
    });
    // unsquashfs extracts the same tree too.
    const out = join(work, `unsquashfs-${compression}`);
    execFileSync('unsquashfs', ['-quiet', '-no-progress', '-d', out, image]);
    await assertTreesEqual(await treeFromDirectory(out), edge, { root: false });
  });
}

test('non-default compressor settings are stored in an options block byte-identical to mksquashfs', async () => {
  const source = join(work, 'options-src');
  execFileSync('mkdir', ['-p', source]);
  execFileSync('cp', ['/bin/sh', '/etc/os-release', source]);
  const tree = await treeFromDirectory(source);
  for (const [options, mkArgs, shown] of [
    [
      { compression: 'xz', xzFilters: ['arm', 'x86'] },
      ['-comp', 'xz', '-Xbcj', 'x86,arm'],
      /Filters selected: x86, arm/,
    ],
    [{ compression: 'gzip', level: 6 }, ['-comp', 'gzip', '-Xcompression-level', '6'], /compression-level 6/],
    [{ compression: 'zstd', level: 3 }, ['-comp', 'zstd', '-Xcompression-level', '3'], /compression-level 3/],
  ] as const) {
    const image = join(work, `options-${options.compression}.sqfs`);
    const reference = join(work, `options-${options.compression}-mk.sqfs`);
    await writeSquashfs(tree, image, options);
    execFileSync('mksquashfs', [source, reference, '-noappend', '-quiet', '-no-progress', ...mkArgs]);
    const block = (path: string) => {
      const bytes = readFileSync(path);
      const flags = bytes.readUInt16LE(24);
      assert.ok(flags & 0x400, `${path}: the compressor options flag is set`);
      return bytes.subarray(96, 96 + 2 + (bytes.readUInt16LE(96) & 0x7fff));
    };
    assert.deepEqual(block(image), block(reference));
    assert.match(execFileSync('unsquashfs', ['-s', image], { encoding: 'utf8' }), shown);
    // Data starts after the options block: the kernel, unsquashfs and Seal all read the files.
    await withMount('squashfs', image, join(work, `mnt-options-${options.compression}`), async (dir) => {
      await assertTreesEqual(await treeFromDirectory(dir), tree, { root: false });
    });
    const seal = SquashfsImage.open(image);
    try {
      await assertTreesEqual(seal.toTree(), tree, { root: false });
    } finally {
      seal.close();
    }
  }
});

test('tail ends packed into fragments still read back', async () => {
  const image = join(work, 'tails.sqfs');
  await writeSquashfs(edge, image, { compression: 'gzip', blockSize: 4096, tailEnds: true });
  await withMount('squashfs', image, join(work, 'mnt-tails'), async (dir) => {
    await assertTreesEqual(await treeFromDirectory(dir), edge, { root: false });
  });
});

test('duplicate files are stored once, small and large, and still read back', async () => {
  const source = join(work, 'dups-src');
  const pattern = (size: number, seed: number) =>
    Buffer.from(Array.from({ length: size }, (_, i) => (i * 7 + seed) & 0xff));
  const files: Record<string, Buffer> = {
    'a-small': pattern(1000, 1),
    'b-small-copy': pattern(1000, 1),
    'c-small-other': pattern(1000, 2), // same size, other bytes
    'd-block': pattern(4096, 3),
    'e-block-copy': pattern(4096, 3),
    'f-large': pattern(3 * 4096 + 100, 4),
    'g-large-copy': pattern(3 * 4096 + 100, 4),
    'h-large-other': pattern(3 * 4096 + 100, 5),
    'i-empty': Buffer.alloc(0),
    'j-empty': Buffer.alloc(0),
  };
  execFileSync('mkdir', ['-p', source]);
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(source, name), bytes);
  const tree = await treeFromDirectory(source);
  const placement = (image: string) => {
    const squashfs = SquashfsImage.open(image);
    try {
      const root = squashfs.inode(squashfs.rootRef);
      return new Map(
        squashfs.readDir(root).map((e) => {
          const { blocksStart, blockSizes, fragment, fragmentOffset } = squashfs.inode(e.ref);
          return [e.name, JSON.stringify({ blocksStart, blockSizes, fragment, fragmentOffset })];
        }),
      );
    } finally {
      squashfs.close();
    }
  };
  for (const [compression, fragments] of [
    ['none', true],
    ['gzip', true],
    ['none', false],
  ] as const) {
    const image = join(work, `dups-${compression}-${fragments}.sqfs`);
    const plain = join(work, `no-dups-${compression}-${fragments}.sqfs`);
    const options = { compression, blockSize: 4096, fragments } as const;
    const { bytesUsed } = await writeSquashfs(tree, image, options);
    const without = await writeSquashfs(tree, plain, { ...options, duplicates: false });
    const at = placement(image);
    for (const [first, copy] of [
      ['a-small', 'b-small-copy'],
      ['d-block', 'e-block-copy'],
      ['f-large', 'g-large-copy'],
    ])
      assert.equal(at.get(copy), at.get(first), `${copy} shares the data of ${first}`);
    for (const [first, other] of [
      ['a-small', 'c-small-other'],
      ['f-large', 'h-large-other'],
    ])
      assert.notEqual(at.get(other), at.get(first), `${other} has data of its own`);
    const apart = placement(plain);
    assert.notEqual(apart.get('b-small-copy'), apart.get('a-small'));
    if (compression === 'none') {
      // Uncompressed, the saving is exactly the bytes of the three copies.
      assert.equal(without.bytesUsed - bytesUsed, 1000 + 4096 + 3 * 4096 + 100);
    }
    await withMount('squashfs', image, join(work, `mnt-dups-${compression}-${fragments}`), async (dir) => {
      await assertTreesEqual(await treeFromDirectory(dir), tree, { root: false });
    });
  }
});

test('the same tree gives the same bytes', async () => {
  const a = join(work, 'det-a.sqfs');
  const b = join(work, 'det-b.sqfs');
  await writeSquashfs(edge, a, { compression: 'zstd', level: 3, mkfsTime: 1 });
  await writeSquashfs(edge, b, { compression: 'zstd', level: 3, mkfsTime: 1 });
  assert.ok(readFileSync(a).equals(readFileSync(b)));
});

test('a directory of 100 000 entries: directory index and header splitting', async () => {
  const root = emptyDir();
  const big = emptyDir();
  root.children.set('big', big);
  const attrs = { mode: 0o644, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 }, xattrs: new Map() };
  for (let i = 0; i < 100_000; i++) {
    big.children.set(`entry-${i.toString().padStart(6, '0')}`, {
      ...attrs,
      type: 'file',
      content: bufferContent(new Uint8Array(0)),
    } as Inode);
  }
  const tree: Tree = { root };
  const image = join(work, 'big.sqfs');
  await writeSquashfs(tree, image, { compression: 'gzip', exportable: false });
  await withMount('squashfs', image, join(work, 'mnt-big'), async (dir) => {
    const names = execFileSync('ls', ['-f', join(dir, 'big')], { encoding: 'utf8', maxBuffer: 1 << 26 })
      .split('\n')
      .filter((n) => n.startsWith('entry-'));
    assert.equal(names.length, 100_000);
    // Lookups by name go through the directory index.
    for (const i of [0, 1, 4095, 50_000, 99_999]) {
      execFileSync('stat', [join(dir, 'big', `entry-${i.toString().padStart(6, '0')}`)]);
    }
  });
});

test('options out of range and unrepresentable xattrs are refused with typed errors', async () => {
  const bad = [
    { blockSize: 3000 },
    { blockSize: 1 << 21 },
    { compression: 'gzip' as const, level: 10 },
    { compression: 'xz' as const, level: 10 },
    { compression: 'gzip' as const, xzFilters: ['x86' as const] },
    { compression: 'xz' as const, xzFilters: ['mips' as XzFilter] },
  ];
  for (const options of bad) {
    await assert.rejects(writeSquashfs(edge, join(work, 'bad.sqfs'), options), (e: unknown) => {
      assert.ok(e instanceof SquashfsError);
      assert.equal(e.code, 'SQUASHFS_INVALID_OPTION');
      return true;
    });
  }
  const root = emptyDir();
  root.xattrs.set('system.posix_acl_access', Buffer.from([2, 0, 0, 0]));
  await assert.rejects(writeSquashfs({ root }, join(work, 'bad.sqfs')), { code: 'SQUASHFS_UNREPRESENTABLE' });
});

test('a file over 4 GiB (sparse) gets an extended inode the kernel reads', async () => {
  const size = 2 ** 32 + 12345;
  const zeros = new Uint8Array(1 << 20);
  const tail = Buffer.from('the end');
  const root = emptyDir();
  root.children.set('huge', {
    type: 'file',
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: { sec: 0, nsec: 0 },
    xattrs: new Map(),
    content: {
      size,
      async *read() {
        let left = size - tail.length;
        while (left > 0) {
          const n = Math.min(left, zeros.length);
          yield zeros.subarray(0, n);
          left -= n;
        }
        yield tail;
      },
    },
  });
  const image = join(work, 'huge.sqfs');
  const { bytesUsed } = await writeSquashfs({ root }, image, { compression: 'gzip' });
  assert.ok(bytesUsed < 1 << 20, 'all-zero blocks take no room');
  await withMount('squashfs', image, join(work, 'mnt-huge'), async (dir) => {
    assert.equal(
      execFileSync('stat', ['-c', '%s', join(dir, 'huge')], { encoding: 'utf8' }).trim(),
      String(size),
    );
    const end = execFileSync('tail', ['-c', String(tail.length), join(dir, 'huge')]);
    assert.equal(end.toString(), 'the end');
  });
});
