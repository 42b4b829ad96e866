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
import { type RunResult, runSeal, SEAL_BIN } from './cli.ts';

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

/**
 * Node.js compiles Seal's TypeScript on first use and keeps the result in its compile cache
 * (bin/seal turns it on); a run that fills the cache holds some 20-40 MB more than one that
 * reads it. Measured runs get a cache of their own, filled by an unmeasured warm-up, so that
 * they measure what an installed Seal costs, the same on every machine.
 */
let compileCache: string | undefined;
function measuredEnv(env: NodeJS.ProcessEnv | undefined): NodeJS.ProcessEnv {
  if (!compileCache) {
    const dir = mkdtempSync(join(tmpdir(), 'seal-measure-cache-'));
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
    compileCache = dir;
  }
  return { ...env, NODE_COMPILE_CACHE: compileCache };
}

/**
 * The real `seal` executable, measured. `warmup` (arguments of a cheap run of the same command,
 * on a small input) runs first, unmeasured, to fill the compile cache with the modules the
 * command loads; it must succeed.
 */
export function runSealMeasured(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; input?: string; warmup?: string[] } = {},
): MeasuredRun {
  const env = measuredEnv(options.env);
  if (options.warmup) {
    const w = runSeal(options.warmup, { env });
    if (w.status !== 0) throw new Error(`warm-up seal ${options.warmup.join(' ')} failed: ${w.stderr}`);
  }
  return runMeasured(SEAL_BIN, args, {
    env,
    ...(options.input === undefined ? {} : { input: options.input }),
  });
}

export const megabytes = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;
