/**
 * Seal's EROFS and composefs writers against the reference tools on the Debian corpus root
 * filesystem, in one run (median of three, warm page cache):
 * - plain uncompressed EROFS: `seal erofs create` vs `mkfs.erofs`;
 * - composefs (metadata image + object store + fs-verity digest of every object) vs what the
 *   same costs with the reference tools: `mkfs.erofs` + `fsverity digest` of every file (on
 *   every core).
 *   node bench/erofs.ts [DIR]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { composefsTree, writeComposefsImage } from '../src/composefs/index.ts';
import { writeErofs } from '../src/erofs/index.ts';
import { treeFromDirectory } from '../src/tree/index.ts';

const dir = process.argv[2] ?? execFileSync('bash', ['scripts/corpus.sh'], { encoding: 'utf8' }).trim();
const work = mkdtempSync(join(tmpdir(), 'bench-erofs-'));
const cores = availableParallelism();

async function median(run: () => Promise<void> | void): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const start = process.hrtime.bigint();
    await run();
    times.push(Number(process.hrtime.bigint() - start) / 1e9);
  }
  return times.sort((a, b) => a - b)[1]!;
}

function row(name: string, seal: number, reference: number): void {
  console.log(
    `${name.padEnd(22)} ${seal.toFixed(2).padStart(7)} ${reference.toFixed(2).padStart(12)} ${(seal / reference).toFixed(2).padStart(8)}`,
  );
}

console.log(`input: ${dir}; ${cores} cores`);
console.log('case                    seal s  reference s    ratio');
try {
  const image = join(work, 'seal.erofs');
  const reference = join(work, 'mkfs.erofs');
  const sealErofs = await median(async () => {
    await writeErofs(await treeFromDirectory(dir), image);
  });
  const mkfs = await median(() => {
    execFileSync('mkfs.erofs', ['--quiet', reference, dir]);
  });
  row('erofs (uncompressed)', sealErofs, mkfs);

  // Each run fills a fresh object store; the stores are removed after timing (creating files
  // right after deleting thousands costs this machine's ext4 several times more, which no real
  // store sees: objects accumulate).
  let run = 0;
  const sealComposefs = await median(async () => {
    const objects = join(work, `objects-${run++}`);
    const result = await writeComposefsImage(await composefsTree(await treeFromDirectory(dir), { objects }));
    writeFileSync(join(work, 'seal.cfs'), result.image);
  });
  const digests = await median(() => {
    execFileSync('mkfs.erofs', ['--quiet', reference, dir]);
    execFileSync('bash', [
      '-c',
      `find "$1" -type f -print0 | xargs -0 -n 256 -P ${cores} fsverity digest > /dev/null`,
      'bench',
      dir,
    ]);
  });
  row('composefs + objects', sealComposefs, digests);
} finally {
  rmSync(work, { recursive: true, force: true });
}
