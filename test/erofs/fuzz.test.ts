/** Mutated and truncated EROFS images give typed errors, never a crash or a hang. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ErofsError, ErofsImage, writeErofs } from '../../src/erofs/index.ts';
import { writeTreeToDirectory } from '../../src/tree/index.ts';
import { generateEdgeCaseTree, prng } from '../helpers/trees.ts';

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
