/**
 * Seal's dm-verity and fs-verity against veritysetup format and fsverity digest on the same
 * 1 GiB file, in one run (median of three each), with `openssl speed sha256` as the single-core
 * physical limit. Block hashing runs in the native addon (native/blockhash.c) when it is built.
 *   node bench/verity.ts [SIZE_MIB]
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatVerity, fsverityDigestFile } from '../src/verity/index.ts';

const mib = Number(process.argv[2] ?? 1024);
const work = mkdtempSync(join(tmpdir(), 'bench-verity-'));
const data = join(work, 'data.img');
const bytes = mib << 20;

// Random-looking content, written once; the page cache holds it for every contender.
const fd = openSync(data, 'w');
const chunk = Buffer.alloc(1 << 20);
for (let i = 0; i < mib; i++) {
  for (let j = 0; j < chunk.length; j += 4)
    chunk.writeUInt32LE(((Math.imul(i * 262144 + j, 2654435761) >>> 0) ^ j) >>> 0, j);
  writeSync(fd, chunk);
}
closeSync(fd);

/** Median wall time of three runs. */
async function median(fn: () => unknown): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const start = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - start) / 1e9);
  }
  return times.sort((a, b) => a - b)[1]!;
}
const rate = (s: number) => `${(bytes / s / 1e9).toFixed(2)} GB/s`;

try {
  const salt = Buffer.alloc(32, 7);
  // The worker pool is started before timing, as in a long-running process (the device agent);
  // a one-shot `seal verity format` pays about 0.1 s more to start its workers.
  await fsverityDigestFile(fileURLToPath(import.meta.url));
  const sealVerity = await median(() => formatVerity(data, join(work, 'seal.hash'), { salt }));
  const refVerity = await median(() =>
    execFileSync('veritysetup', ['format', data, join(work, 'ref.hash'), `--salt=${salt.toString('hex')}`], {
      stdio: 'ignore',
    }),
  );
  const sealFsverity = await median(() => fsverityDigestFile(data));
  const refFsverity = await median(() => execFileSync('fsverity', ['digest', data], { stdio: 'ignore' }));
  const speed = execFileSync('openssl', ['speed', '-seconds', '2', '-bytes', '4096', 'sha256'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const kbps = Number(/sha256\s+([\d.]+)k/.exec(speed)?.[1] ?? Number.NaN);
  console.log(`input: ${mib} MiB`);
  console.log(
    `dm-verity  seal ${sealVerity.toFixed(2)} s (${rate(sealVerity)})  veritysetup ${refVerity.toFixed(2)} s (${rate(refVerity)})  speed-up ${(refVerity / sealVerity).toFixed(2)}x`,
  );
  console.log(
    `fs-verity  seal ${sealFsverity.toFixed(2)} s (${rate(sealFsverity)})  fsverity ${refFsverity.toFixed(2)} s (${rate(refFsverity)})  speed-up ${(refFsverity / sealFsverity).toFixed(2)}x`,
  );
  console.log(`openssl speed sha256 (4 KiB blocks, one core): ${(kbps / 1e6).toFixed(2)} GB/s`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
