/**
 * Peak resident memory of a child process, as the kernel accounts it: GNU time reports the
 * ru_maxrss that wait4 returns for the child (the largest resident set it or a descendant it
 * waited for ever had). For tests that hold a command to a memory budget — the device's paths
 * (image and manifest verification today; the agent's boot and `seal update` when they exist).
 * Memory is measured, never time.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type RunResult, SEAL_BIN } from './cli.ts';

/**
 * What a `seal` process may hold resident on a device at its peak: Node.js alone is about
 * 43 MB; the work itself must add a bounded amount, whatever the size of its input.
 */
export const DEVICE_MEMORY_BUDGET = 96_000_000;

const GNU_TIME = '/usr/bin/time';

export interface MeasuredRun extends RunResult {
  /** Peak resident set size in bytes. */
  peakBytes: number;
}

/** Runs `command` with `args` and reports its exit, output and peak resident memory. */
export function runMeasured(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; input?: string } = {},
): MeasuredRun {
  if (!existsSync(GNU_TIME)) throw new Error(`${GNU_TIME} is missing: run scripts/setup.sh (Debian's time)`);
  const dir = mkdtempSync(join(tmpdir(), 'seal-peak-'));
  try {
    const report = join(dir, 'peak');
    const r = spawnSync(GNU_TIME, ['-f', '%M', '-o', report, '--', command, ...args], {
      encoding: 'utf8',
      env: { ...process.env, ...options.env },
      input: options.input,
      maxBuffer: 1 << 28,
    });
    // "Command exited with non-zero status N" may come first; the figure (KiB) is the last line.
    const lines = readFileSync(report, 'utf8').trim().split('\n');
    const kib = Number(lines.at(-1));
    if (!Number.isInteger(kib) || kib <= 0) throw new Error(`GNU time reported ${JSON.stringify(lines)}`);
    return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, peakBytes: kib * 1024 };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The real `seal` executable, measured. */
export function runSealMeasured(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; input?: string } = {},
): MeasuredRun {
  return runMeasured(SEAL_BIN, args, options);
}

export const megabytes = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;
