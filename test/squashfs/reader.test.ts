/**
 * The squashfs reader against mksquashfs-made images (every compressor squashfs-tools offers
 * here), its listing against `unsquashfs -lln`, and a fuzz test of mutated images.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { isSealError } from '../../src/errors.ts';
import { SquashfsError, SquashfsImage, writeSquashfs } from '../../src/squashfs/index.ts';
import {
  listLines,
  readContent,
  treeFromDirectory,
  walk,
  writeTreeToDirectory,
} from '../../src/tree/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { assertTreesEqual, generateEdgeCaseTree, prng } from '../helpers/trees.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-squashfs-read-'));
after(() => rm(work, { recursive: true, force: true }));

const source = join(work, 'source');
await writeTreeToDirectory(generateEdgeCaseTree(13, { sockets: true, files: 30 }), source);
const expected = await treeFromDirectory(source);

function mksquashfs(out: string, ...args: string[]) {
  execFileSync('mksquashfs', [source, out, '-noappend', '-quiet', '-no-progress', ...args]);
}

for (const [compressor, extra] of [
  ['gzip', []],
  ['zstd', ['-Xcompression-level', '3']],
  ['gzip', ['-b', '4096', '-always-use-fragments']],
  ['gzip', ['-noI', '-noD', '-noF', '-noX']],
  ['zstd', ['-no-fragments', '-no-duplicates']],
  ['lz4', []],
  ['lz4', ['-Xhc', '-b', '1M']],
  ['xz', []],
  ['xz', ['-Xbcj', 'x86,arm', '-Xdict-size', '50%', '-b', '64K']],
  ['lzo', []],
  ['lzo', ['-Xalgorithm', 'lzo1x_1', '-always-use-fragments']],
] as const) {
  test(`reads mksquashfs -comp ${compressor} ${extra.join(' ')} like unsquashfs`, async () => {
    const image = join(work, `mk-${compressor}-${extra.join('')}.sqfs`);
    mksquashfs(image, '-comp', compressor, ...extra);
    const sq = SquashfsImage.open(image);
    try {
      await assertTreesEqual(sq.toTree(), expected, { root: false });
      assert.deepEqual(
        [...listLines(sq.walk())].join('\n'),
        execFileSync('unsquashfs', ['-lln', image], { encoding: 'latin1' }).trimEnd(),
      );
    } finally {
      sq.close();
    }
  });
}

test('any byte range of a file reads as the same bytes of the source', async () => {
  const bs = 4096;
  for (const extra of [['-always-use-fragments'], ['-no-fragments']]) {
    const image = join(work, `ranges${extra.join('')}.sqfs`);
    mksquashfs(image, '-comp', 'zstd', '-b', String(bs), ...extra);
    const sq = SquashfsImage.open(image);
    try {
      const random = prng(7);
      let checked = 0;
      for (const { path, inode } of sq.walk()) {
        if (inode.type !== 'file') continue;
        const whole = readFileSync(Buffer.from(`${source}/${path}`, 'latin1'));
        const size = whole.length;
        const ranges: [number, number][] = [
          [0, size],
          [size, 0],
          [Math.min(size, bs - 1), Math.min(2, size - Math.min(size, bs - 1))],
          [Math.min(size, bs), Math.max(0, size - bs)],
          [Math.floor(size / bs) * bs, size - Math.floor(size / bs) * bs],
        ];
        for (let k = 0; k < 3; k++) {
          const offset = Math.floor(random() * (size + 1));
          ranges.push([offset, Math.floor(random() * (size - offset + 1))]);
        }
        for (const [offset, length] of ranges) {
          const chunks: Uint8Array[] = [];
          for await (const chunk of sq.readFile(inode, offset, length)) chunks.push(chunk);
          assert.deepEqual(
            Buffer.concat(chunks),
            whole.subarray(offset, offset + length),
            `${path} ${offset}+${length}`,
          );
          checked++;
        }
        await assert.rejects(
          async () => {
            for await (const _ of sq.readFile(inode, size, 1));
          },
          (e: unknown) => e instanceof SquashfsError && e.code === 'SQUASHFS_INVALID_OPTION',
        );
      }
      assert.ok(checked > 100, `${checked} ranges checked`);
    } finally {
      sq.close();
    }
  }
});

test('the only file of an image, large and incompressible: its long block list in a tiny inode table reads whole', async () => {
  // 48 MiB of random bytes in 128 KiB blocks: 384 block sizes of 4 bytes, which compress to a
  // few dozen bytes of inode table.
  const dir = join(work, 'one-big-file');
  execFileSync('mkdir', ['-p', dir]);
  const data = Buffer.alloc(48 << 20);
  const random = prng(11);
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(Math.floor(random() * 2 ** 32), i);
  writeFileSync(join(dir, 'big.bin'), data);
  for (const comp of ['zstd', 'gzip']) {
    const image = join(work, `one-big-file-${comp}.sqfs`);
    execFileSync('mksquashfs', [dir, image, '-noappend', '-quiet', '-no-progress', '-comp', comp]);
    const sq = SquashfsImage.open(image);
    try {
      const inode = sq.lookup('big.bin');
      const chunks: Uint8Array[] = [];
      for await (const chunk of sq.readFile(inode)) chunks.push(chunk);
      assert.ok(Buffer.concat(chunks).equals(data), comp);
    } finally {
      sq.close();
    }
  }
});

test('a compressor squashfs-tools no longer offers (lzma) or an unknown one is refused with a typed error', () => {
  const image = join(work, 'mk-gzip-relabelled.sqfs');
  mksquashfs(image, '-comp', 'gzip');
  for (const [id, name] of [
    [2, 'lzma'],
    [9, 'compressor 9'],
  ] as const) {
    const bytes = readFileSync(image);
    bytes.writeUInt16LE(id, 20);
    const relabelled = join(work, `relabelled-${id}.sqfs`);
    writeFileSync(relabelled, bytes);
    assert.throws(
      () => SquashfsImage.open(relabelled),
      (e: unknown) =>
        e instanceof SquashfsError && e.code === 'SQUASHFS_UNSUPPORTED' && e.message.includes(name),
    );
  }
});

test('seal squashfs ls and extract agree with unsquashfs', async () => {
  const image = join(work, 'cli.sqfs');
  mksquashfs(image, '-comp', 'gzip');
  const r = runSeal(['squashfs', 'ls', image]);
  assert.equal(r.status, 0, r.stderr);
  const ours = runSeal(['squashfs', 'ls', image]).stdout;
  assert.equal(ours, execFileSync('unsquashfs', ['-lln', image], { encoding: 'utf8' }));
  const out = join(work, 'extracted');
  assert.equal(runSeal(['squashfs', 'extract', image, out]).status, 0);
  await assertTreesEqual(await treeFromDirectory(out), expected, { root: false });

  // cat: a whole file and byte ranges of the largest one; typed one-line errors otherwise.
  const sq = SquashfsImage.open(image);
  const files = [...sq.walk()].filter((e) => e.inode.type === 'file' && /^[\x20-\x7e]+$/.test(e.path));
  sq.close();
  const largest = files.sort((a, b) => b.inode.size - a.inode.size)[0]!;
  const bytes = readFileSync(join(source, largest.path));
  assert.ok(bytes.length > 140_000, `${largest.path} spans several blocks`);
  const cat = (...args: string[]) => runSeal(['squashfs', 'cat', image, ...args], { encoding: 'latin1' });
  assert.equal(cat(`/${largest.path}`).stdout, bytes.toString('latin1'));
  for (const [offset, length] of [
    [131_071, 2],
    [131_072, 5000],
    [bytes.length - 10, 10],
    [bytes.length, 0],
  ]) {
    const r = cat(largest.path, '--offset', String(offset), '--length', String(length));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, bytes.subarray(offset, offset + length).toString('latin1'), `${offset}+${length}`);
  }
  assert.equal(cat(largest.path, '--offset', '100').stdout, bytes.subarray(100).toString('latin1'));
  for (const [args, code] of [
    [['no/such/file'], 'SQUASHFS_NOT_FOUND'],
    [['/'], 'SQUASHFS_INVALID_OPTION'],
    [[largest.path, '--offset', String(bytes.length + 1)], 'SQUASHFS_INVALID_OPTION'],
  ] as const) {
    const r = cat(...args);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^seal: .*\\[${code}\\]\n$`));
  }
});

test('mutated images give typed errors, never a crash or a hang', async () => {
  const small = generateEdgeCaseTree(2, { files: 5, maxFileSize: 10_000 });
  const image = join(work, 'fuzz-base.sqfs');
  await writeSquashfs(small, image, { compression: 'gzip', blockSize: 4096 });
  // Bases made by mksquashfs with lz4, xz and LZO, so their decoders (util/lz4.ts, and liblzma
  // and liblzo2 in the codecs addon) see mutated blocks too and must refuse them, not crash.
  const smallSource = join(work, 'fuzz-source');
  await writeTreeToDirectory(small, smallSource);
  const made = (name: string, ...args: string[]) => {
    const out = join(work, `fuzz-${name}.sqfs`);
    execFileSync('mksquashfs', [
      smallSource,
      out,
      '-noappend',
      '-quiet',
      '-no-progress',
      '-b',
      '4096',
      ...args,
    ]);
    return out;
  };
  const lz4 = made('lz4', '-comp', 'lz4');
  const xz = made('xz', '-comp', 'xz', '-Xbcj', 'x86');
  const lzo = made('lzo', '-comp', 'lzo');
  const bases = [readFileSync(image), readFileSync(lz4), readFileSync(xz), readFileSync(lzo)];
  const random = prng(42);
  const mutant = join(work, 'fuzz.sqfs');
  let refused = 0;
  for (let i = 0; i < 2000; i++) {
    const base = bases[i % bases.length]!;
    const data = Buffer.from(base);
    const r = random();
    if (r < 0.1) {
      writeFileSync(mutant, data.subarray(0, Math.floor(random() * data.length)));
    } else {
      // Bias towards the superblock and the metadata tables at the end.
      for (let k = 0, n = 1 + Math.floor(random() * 6); k < n; k++) {
        const at =
          random() < 0.3
            ? Math.floor(random() * 96)
            : data.length - 1 - Math.floor(random() * Math.min(data.length, 20_000));
        data[at] = Math.floor(random() * 256);
      }
      writeFileSync(mutant, data);
    }
    try {
      const sq = SquashfsImage.open(mutant);
      try {
        for (const { inode } of walk(sq.toTree()))
          if (inode.type === 'file') await readContent(inode.content);
        // Ranged reads start from a block found by summing stored sizes: mutated ones too.
        for (const { inode } of sq.walk()) {
          if (inode.type !== 'file' || inode.size === 0) continue;
          const offset = Math.floor(random() * inode.size);
          for await (const _ of sq.readFile(inode, offset, Math.floor(random() * (inode.size - offset + 1))));
        }
        [...listLines(sq.walk())];
      } finally {
        sq.close();
      }
    } catch (error) {
      assert.ok(isSealError(error), `case ${i}: ${(error as Error).stack}`);
      refused++;
    }
  }
  assert.ok(refused > 400, `only ${refused} mutants were refused`);
});
