/**
 * Sealing the Debian corpus image with Seal against what a user does today, in one run:
 * extract each tar layer, `mksquashfs` (same compressor and level, every core) or `mkfs.erofs`,
 * then `veritysetup format` with the hash tree appended. Prints time ratios.
 *   node bench/seal.ts [DIR]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { sealImage } from '../src/seal/index.ts';
import { openDestination, openSource, readImage } from '../src/store/index.ts';

const dir = process.argv[2] ?? execFileSync('bash', ['scripts/corpus.sh'], { encoding: 'utf8' }).trim();
const work = mkdtempSync(join(tmpdir(), 'bench-seal-'));
const cores = availableParallelism();

function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

console.log(`input: ${dir}; ${cores} cores`);
console.log('format                seal s  mkfs + veritysetup s    ratio');
try {
  const layout = join(work, 'layout');
  execFileSync('bin/seal', ['image', 'import', `dir:${dir}`, `oci:${layout}:debian`]);
  const src = await openSource(`oci:${layout}:debian`);
  const { manifest } = await readImage(src);
  for (const format of ['squashfs', 'erofs'] as const) {
    let start = process.hrtime.bigint();
    const dst = await openDestination(`oci:${layout}:sealed-${format}`);
    await sealImage(src, dst, { format, compression: 'zstd' });
    await dst.close();
    const sealTime = seconds(start);

    start = process.hrtime.bigint();
    for (const [i, layer] of manifest.layers.entries()) {
      const tree = join(work, `layer-${i}`);
      mkdirSync(tree);
      execFileSync('tar', ['-xzf', join(layout, 'blobs/sha256', layer.digest.slice(7)), '-C', tree]);
      const image = join(work, `layer-${i}.img`);
      if (format === 'squashfs') {
        execFileSync('mksquashfs', [
          tree,
          image,
          '-noappend',
          '-quiet',
          '-no-progress',
          '-processors',
          String(cores),
          '-comp',
          'zstd',
          '-Xcompression-level',
          '15',
        ]);
      } else {
        execFileSync('mkfs.erofs', ['--quiet', image, tree]);
      }
      const offset = Math.ceil(statSync(image).size / 4096) * 4096;
      execFileSync('veritysetup', ['format', image, image, '--hash-offset', String(offset)], {
        stdio: 'ignore',
      });
      rmSync(tree, { recursive: true, force: true });
      rmSync(image, { force: true });
    }
    const refTime = seconds(start);
    console.log(
      `${format.padEnd(20)} ${sealTime.toFixed(2).padStart(7)} ${refTime.toFixed(2).padStart(21)} ${(sealTime / refTime).toFixed(2).padStart(8)}`,
    );
  }
  await src.close();
} finally {
  rmSync(work, { recursive: true, force: true });
}
