/**
 * Seal's verity commands against veritysetup and fsverity on the same files, as whole processes
 * taking turns (A B A B ...): `seal verity format` / `veritysetup format`, `seal verity verify` /
 * `veritysetup verify`, `seal fsverity digest` / `fsverity digest`. For each: the median time of
 * each side, the median of the pair-by-pair ratios with their spread, and each side's peak
 * resident memory. The processes start cold, as a user runs them, so start-up counts; the files
 * are in the page cache. `openssl speed sha256` gives one core's speed hashing one message after
 * another, from which the last column is the ratio a tool hashing that way would reach if every
 * core did nothing but hash (no read, no start-up). Seal goes below it where its multi-buffer
 * engine (named in the first line) hashes many blocks at once on each core.
 *   node bench/verity.ts [ROUNDS] [SIZE_MIB...]      (default: 7 rounds, 512 and 1024 MiB)
 */
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { multiBufferEngine } from '../src/verity/hashing.ts';
import { median, paired } from './timing.ts';

const rounds = Number(process.argv[2] ?? 7);
const sizes = process.argv.length > 3 ? process.argv.slice(3).map(Number) : [512, 1024];
const seal = fileURLToPath(new URL('../bin/seal', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'bench-verity-'));
const salt = '5a'.repeat(32);
const uuid = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';

function makeData(path: string, mib: number): void {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(1 << 20);
  try {
    for (let i = 0; i < mib; i++) writeSync(fd, randomFillSync(chunk));
  } finally {
    closeSync(fd);
  }
}

const mb = (bytes: number) => (bytes / 1e6).toFixed(1);
const spread = (values: number[]) =>
  `${median(values).toFixed(2)} (${Math.min(...values).toFixed(2)}-${Math.max(...values).toFixed(2)})`;

try {
  const speed = execFileSync('openssl', ['speed', '-seconds', '2', '-bytes', '4096', 'sha256'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const kbps = Number(/sha256\s+([\d.]+)k/.exec(speed)?.[1] ?? Number.NaN);
  console.log(`openssl speed sha256, 4 KiB blocks, one core: ${(kbps / 1e6).toFixed(2)} GB/s`);
  console.log(`seal's multi-buffer engine: ${multiBufferEngine() ?? 'none (OpenSSL, one block at a time)'}`);
  console.log(`${rounds} rounds; medians; ratio = seal / reference, pair by pair (min-max)`);
  const cores = availableParallelism();
  console.log('size      command            seal s  ref s   ratio              seal MB  ref MB  1-buf');
  for (const mib of sizes) {
    const data = join(work, `data-${mib}`);
    makeData(data, mib);
    const ours = join(work, 'seal.hash');
    const theirs = join(work, 'ref.hash');
    const root = /Root hash:\s+(\S+)/.exec(
      execFileSync('veritysetup', ['format', data, theirs, `--salt=${salt}`, `--uuid=${uuid}`], {
        encoding: 'utf8',
      }),
    )![1]!;
    const pairs = {
      'verity format': paired(
        rounds,
        [seal, ['verity', 'format', data, ours, '--salt', salt, '--uuid', uuid]],
        ['veritysetup', ['format', data, theirs, `--salt=${salt}`, `--uuid=${uuid}`]],
      ),
      'verity verify': paired(
        rounds,
        [seal, ['verity', 'verify', data, ours, root]],
        ['veritysetup', ['verify', data, theirs, root]],
      ),
      'fsverity digest': paired(rounds, [seal, ['fsverity', 'digest', data]], ['fsverity', ['digest', data]]),
    };
    for (const [name, r] of Object.entries(pairs)) {
      console.log(
        [
          `${mib} MiB`.padEnd(9),
          name.padEnd(18),
          median(r.a.map((x) => x.seconds))
            .toFixed(2)
            .padStart(6),
          median(r.b.map((x) => x.seconds))
            .toFixed(2)
            .padStart(6),
          ` ${spread(r.ratios).padEnd(18)}`,
          mb(median(r.a.map((x) => x.peakBytes))).padStart(7),
          mb(median(r.b.map((x) => x.peakBytes))).padStart(7),
          ((mib * 2 ** 20) / (cores * kbps * 1e3) / median(r.b.map((x) => x.seconds))).toFixed(2).padStart(6),
        ].join(' '),
      );
    }
    rmSync(data);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
