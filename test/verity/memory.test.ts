/**
 * The verity commands in bounded memory: the peak resident set of `seal verity format`,
 * `seal verity verify` and `seal fsverity digest` stays within the device budget on a 1 GiB and
 * a 4 GiB file, and does not grow with the file (the 4 GiB peak within 10% of the 1 GiB one).
 * Measured from outside (the kernel's accounting of the child), never timed.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { accessSync, closeSync, constants, openSync, rmSync, truncateSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { runSeal } from '../helpers/cli.ts';
import { DEVICE_MEMORY_BUDGET, megabytes, runSealMeasured } from '../helpers/memory.ts';

/** Sparse files on tmpfs cost neither disk nor time to read; elsewhere the first read fills holes. */
function scratchRoot(): string {
  try {
    accessSync('/dev/shm', constants.W_OK);
    return '/dev/shm';
  } catch {
    return tmpdir();
  }
}

const work = await mkdtemp(join(scratchRoot(), 'seal-verity-memory-'));
after(() => rm(work, { recursive: true, force: true }));

/** A sparse file of `size` bytes with random stretches at its start, middle and end. */
function makeData(path: string, size: number): void {
  const fd = openSync(path, 'w');
  try {
    for (const at of [0, size / 2, size - (1 << 20)]) writeSync(fd, randomBytes(1 << 20), 0, 1 << 20, at);
  } finally {
    closeSync(fd);
  }
  truncateSync(path, size);
}

type Peaks = Record<'format' | 'verify' | 'digest', number>;

/** Each command once on a small file first: the compile cache then holds what they load. */
function warmUp(): { format: string[]; verify: string[]; digest: string[] } {
  const data = join(work, 'small');
  const hash = join(work, 'small.hash');
  makeData(data, 4 << 20);
  const root = '0'.repeat(64);
  const format = [
    'verity',
    'format',
    data,
    hash,
    '--salt',
    '-',
    '--uuid',
    '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0',
  ];
  const r = runSeal(format, { env: {} });
  assert.equal(r.status, 0, r.stderr);
  const verify = ['verity', 'verify', data, hash, /Root hash:\s+(\S+)/.exec(r.stdout)?.[1] ?? root];
  return { format, verify, digest: ['fsverity', 'digest', data] };
}

function measure(size: number, warm: ReturnType<typeof warmUp>): Peaks {
  const data = join(work, `data-${size}`);
  const hash = join(work, `hash-${size}`);
  makeData(data, size);
  try {
    const format = runSealMeasured(['verity', 'format', data, hash, '--json'], { warmup: warm.format });
    assert.equal(format.status, 0, format.stderr);
    const root = JSON.parse(format.stdout).rootHash as string;
    const verify = runSealMeasured(['verity', 'verify', data, hash, root], { warmup: warm.verify });
    assert.equal(verify.status, 0, verify.stderr);
    const digest = runSealMeasured(['fsverity', 'digest', data], { warmup: warm.digest });
    assert.equal(digest.status, 0, digest.stderr);
    assert.match(digest.stdout, /^sha256:[0-9a-f]{64} /);
    return { format: format.peakBytes, verify: verify.peakBytes, digest: digest.peakBytes };
  } finally {
    rmSync(data, { force: true });
    rmSync(hash, { force: true });
  }
}

test('verity format, verify and fsverity digest: peak memory within budget, flat from 1 to 4 GiB', (t) => {
  const warm = warmUp();
  const small = measure(2 ** 30, warm);
  const large = measure(4 * 2 ** 30, warm);
  for (const command of Object.keys(small) as (keyof Peaks)[]) {
    t.diagnostic(`${command}: ${megabytes(small[command])} on 1 GiB, ${megabytes(large[command])} on 4 GiB`);
    for (const [label, peak] of [
      ['1 GiB', small[command]],
      ['4 GiB', large[command]],
    ] as const) {
      assert.ok(
        peak <= DEVICE_MEMORY_BUDGET,
        `${command} on ${label} peaked at ${megabytes(peak)}, over ${megabytes(DEVICE_MEMORY_BUDGET)}`,
      );
    }
    assert.ok(
      Math.abs(large[command] - small[command]) <= small[command] * 0.1,
      `${command} grew with the input: ${megabytes(small[command])} on 1 GiB, ${megabytes(large[command])} on 4 GiB`,
    );
  }
});
