/** Mutated and truncated EROFS images give typed errors, never a crash or a hang. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ErofsError, ErofsImage, writeErofs } from '../../src/erofs/index.ts';
import { bufferContent, emptyDir, type Tree, writeTreeToDirectory } from '../../src/tree/index.ts';
import { generateEdgeCaseTree, prng, randomBytes } from '../helpers/trees.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-erofs-fuzz-'));
after(() => rm(work, { recursive: true, force: true }));

test('mutated images give typed errors, never a crash or a hang', async () => {
  const tree = generateEdgeCaseTree(3, { files: 5, maxFileSize: 10_000 });
  const ours = join(work, 'ours.erofs');
  const chunked = join(work, 'chunked.erofs');
  await writeErofs(tree, ours);
  await writeErofs(tree, chunked, { chunkSize: 4096 });
  const source = join(work, 'source');
  await writeTreeToDirectory(tree, source);
  execFileSync('find', [source, '-name', `${'n'.repeat(100)}*`, '-delete']);
  const theirs = join(work, 'theirs.erofs');
  execFileSync('mkfs.erofs', ['--quiet', theirs, source]);
  const bases = [ours, chunked, theirs].map((f) => readFileSync(f));
  const random = prng(7);
  const mutant = join(work, 'mutant.erofs');
  let refused = 0;
  for (let i = 0; i < 1500; i++) {
    const base = bases[i % bases.length]!;
    const data = Buffer.from(base);
    if (random() < 0.1) {
      writeFileSync(mutant, data.subarray(0, Math.floor(random() * data.length)));
    } else {
      // Metadata lives in the first blocks: the superblock, inodes, directories and xattrs.
      const metadataEnd = Math.min(data.length, 24_576);
      for (let k = 0, n = 1 + Math.floor(random() * 6); k < n; k++) {
        const at = random() < 0.2 ? 1024 + Math.floor(random() * 128) : Math.floor(random() * metadataEnd);
        data[at] = Math.floor(random() * 256);
      }
      writeFileSync(mutant, data);
    }
    try {
      const image = ErofsImage.open(mutant);
      try {
        for (const { inode } of image.walk()) {
          image.xattrs(inode);
          if (inode.type === 'file') image.readData(inode, 0, Math.min(inode.size, 1 << 20));
        }
      } finally {
        image.close();
      }
    } catch (error) {
      assert.ok(error instanceof ErofsError, `case ${i}: ${(error as Error).stack}`);
      refused++;
    }
  }
  assert.ok(refused > 400, `only ${refused} mutants were refused`);
});

test('mutated compressed images give typed errors, never a crash or a hang', async () => {
  const random = prng(11);
  const root = emptyDir();
  const attrs = { mode: 0o644, uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 }, xattrs: new Map() };
  for (const size of [1, 3000, 4096, 5000, 9000, 20_000, 40_000, 70_000, 150_000]) {
    // Runs of text, zeros and random bytes: compressed, plain and inline extents side by side.
    const data = Buffer.alloc(size);
    for (let at = 0; at < size; ) {
      const n = Math.min(size - at, 1 + Math.floor(random() * 9000));
      const kind = random();
      if (kind < 0.3) randomBytes(random, n).copy(data, at);
      else if (kind < 0.7)
        data.write(`line ${at} of ${size} `.repeat(Math.ceil(n / 16)).slice(0, n), at, 'latin1');
      at += n;
    }
    root.children.set(`f${size}`, { ...attrs, type: 'file', content: bufferContent(data) });
  }
  const tree: Tree = { root };
  const source = join(work, 'zsource');
  await writeTreeToDirectory(tree, source);
  const variants = [
    ['-zlz4'],
    ['-zlz4hc', '-C16384', '-Eztailpacking'],
    ['-zlz4', '-Elegacy-compress'],
    ['-zlz4hc', '-Elegacy-compress', '-C16384', '-Eztailpacking'],
  ];
  const bases = variants.map((options, i) => {
    const file = join(work, `z${i}.erofs`);
    execFileSync('mkfs.erofs', ['--quiet', ...options, file, source]);
    // Where the compressed inodes and their indexes are: the most interesting bytes to flip.
    const image = ErofsImage.open(file);
    const hot: [number, number][] = [];
    try {
      for (const { inode } of image.walk()) {
        if (inode.layout !== 1 && inode.layout !== 3) continue;
        const indexes = 32 + Math.ceil(inode.size / 4096) * 8;
        hot.push([inode.position, inode.position + inode.inodeSize + inode.xattrSize + indexes]);
      }
    } finally {
      image.close();
    }
    assert.ok(hot.length >= 6, `variant ${i} has ${hot.length} compressed inodes`);
    return { data: readFileSync(file), hot };
  });
  const mutant = join(work, 'zmutant.erofs');
  let refused = 0;
  let read = 0;
  for (let i = 0; i < 2400; i++) {
    const base = bases[i % bases.length]!;
    const data = Buffer.from(base.data);
    if (random() < 0.08) {
      writeFileSync(mutant, data.subarray(0, Math.floor(random() * data.length)));
    } else {
      for (let k = 0, n = 1 + Math.floor(random() * 4); k < n; k++) {
        const where = random();
        let at: number;
        if (where < 0.7) {
          const [from, to] = base.hot[Math.floor(random() * base.hot.length)]!;
          at = from + Math.floor(random() * (to - from));
        } else {
          at = Math.floor(random() * data.length); // pclusters, directories, anything
        }
        data[at] = random() < 0.5 ? Math.floor(random() * 256) : data[at]! ^ (1 << Math.floor(random() * 8));
      }
      writeFileSync(mutant, data);
    }
    try {
      const image = ErofsImage.open(mutant);
      try {
        for (const { inode } of image.walk()) {
          if (inode.type !== 'file') continue;
          const size = Math.min(inode.size, 1 << 20);
          image.readData(inode, 0, size);
          const offset = Math.floor(random() * size);
          image.readData(inode, offset, Math.min(size - offset, 1 + Math.floor(random() * 20_000)));
        }
        read++;
      } finally {
        image.close();
      }
    } catch (error) {
      assert.ok(error instanceof ErofsError, `case ${i}: ${(error as Error).stack}`);
      refused++;
    }
  }
  assert.ok(refused > 600, `only ${refused} mutants were refused`);
  assert.ok(read > 200, `only ${read} mutants read through`);
});
