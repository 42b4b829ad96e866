/** Fuzzing the verity superblock parser and verification with mutated hash areas. */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { decodeSuperblock, formatVerity, VerityError, verifyVerity } from '../../src/verity/index.ts';
import { prng } from '../helpers/trees.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-verity-fuzz-'));
after(() => rm(work, { recursive: true, force: true }));

test('mutated superblocks and hash areas give VerityErrors, never anything else', async () => {
  const data = join(work, 'data.img');
  writeFileSync(data, Buffer.alloc(4096 * 200, 0x5a));
  const hash = join(work, 'data.hash');
  const r = await formatVerity(data, hash, { salt: Buffer.from('0102', 'hex') });
  const root = r.rootHash.toString('hex');
  const pristine = readFileSync(hash);
  const random = prng(99);
  let refused = 0;
  for (let i = 0; i < 3000; i++) {
    const bytes = Buffer.from(pristine);
    for (let k = 0, n = 1 + Math.floor(random() * 4); k < n; k++) {
      // Mostly the superblock's fields; some flips land in the tree.
      const at = random() < 0.8 ? Math.floor(random() * 96) : Math.floor(random() * bytes.length);
      bytes[at] = Math.floor(random() * 256);
    }
    try {
      decodeSuperblock(bytes.subarray(0, 512), 'fuzz');
    } catch (error) {
      assert.ok(error instanceof VerityError, `case ${i}: ${(error as Error).stack}`);
    }
    if (i % 10 === 0) {
      const mutant = random() < 0.2 ? bytes.subarray(0, Math.floor(random() * bytes.length)) : bytes;
      writeFileSync(hash, mutant);
      try {
        await verifyVerity(data, hash, root);
      } catch (error) {
        assert.ok(error instanceof VerityError, `case ${i}: ${(error as Error).stack}`);
        refused++;
      }
    }
  }
  assert.ok(refused > 100, `only ${refused} mutated hash areas were refused`);
});
