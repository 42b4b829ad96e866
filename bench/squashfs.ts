/**
 * Seal's squashfs writer against mksquashfs on the Debian corpus root filesystem, in one run:
 * same compressor, level and block size, both on every core. Prints time and size ratios.
 *   node bench/squashfs.ts [DIR]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSquashfs } from '../src/squashfs/index.ts';
import { treeFromDirectory } from '../src/tree/index.ts';
import { race } from './timing.ts';

const dir = process.argv[2] ?? execFileSync('bash', ['scripts/corpus.sh'], { encoding: 'utf8' }).trim();
const work = mkdtempSync(join(tmpdir(), 'bench-squashfs-'));
const cores = availableParallelism();

const cases = [
  { compression: 'gzip', level: 9 },
  { compression: 'zstd', level: 15 },
  { compression: 'xz', level: 6 },
  { compression: 'none', level: 0 },
] as const;

console.log(`input: ${dir}; ${cores} cores; block size 131072`);
console.log('compression   seal s   mksquashfs s   time ratio   seal bytes   mksquashfs bytes   size ratio');
try {
  for (const { compression, level } of cases) {
    const ours = join(work, `seal-${compression}.sqfs`);
    const theirs = join(work, `mksquashfs-${compression}.sqfs`);
    const args =
      compression === 'none'
        ? ['-noI', '-noD', '-noF', '-noX']
        : compression === 'xz' // mksquashfs's xz has no level: always liblzma's default preset, 6
          ? ['-comp', 'xz']
          : ['-comp', compression, '-Xcompression-level', String(level)];
    let bytesUsed = 0;
    // Uncompressed runs take well under a second: five rounds after a warm-up steady them.
    const fast = compression === 'none';
    const times = await race(
      fast ? 5 : 1,
      {
        seal: async () => {
          const tree = await treeFromDirectory(dir);
          ({ bytesUsed } = await writeSquashfs(tree, ours, { compression, level, blockSize: 131072 }));
        },
        mksquashfs: () =>
          execFileSync('mksquashfs', [
            dir,
            theirs,
            '-noappend',
            '-quiet',
            '-no-progress',
            '-processors',
            String(cores),
            '-b',
            '131072',
            ...args,
          ]),
      },
      { warmup: fast },
    );
    const [sealTime, refTime] = [times.seal, times.mksquashfs];
    const refBytes = Number(
      execFileSync('unsquashfs', ['-s', theirs], { encoding: 'utf8' }).match(
        /Filesystem size (\d+) bytes/,
      )![1],
    );
    console.log(
      [
        compression.padEnd(11),
        sealTime.toFixed(2).padStart(8),
        refTime.toFixed(2).padStart(14),
        (sealTime / refTime).toFixed(2).padStart(12),
        String(bytesUsed).padStart(12),
        String(refBytes).padStart(18),
        (bytesUsed / refBytes).toFixed(4).padStart(12),
      ].join(' '),
    );
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
