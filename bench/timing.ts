/**
 * Timing shared by the benchmarks. Every timed run starts after `sync`, so that no run pays for
 * writing back what an earlier one left dirty. Contenders take turns round by round, by default
 * after one untimed round that warms the caches for all of them, so that each sees the same machine.
 * Whole commands can also be run in pairs, with their peak memory.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Seconds `run` takes, from a written-back page cache. */
export async function timed(run: () => unknown): Promise<number> {
  execFileSync('sync');
  const start = process.hrtime.bigint();
  await run();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

export function median(times: number[]): number {
  return [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
}

/** The median time of each contender over `rounds` rounds, in each of which all run once, in turn. */
export async function race<K extends string>(
  rounds: number,
  contenders: Record<K, () => unknown>,
  { warmup = true } = {},
): Promise<Record<K, number>> {
  const times = Object.fromEntries(Object.keys(contenders).map((k) => [k, [] as number[]])) as Record<
    K,
    number[]
  >;
  if (warmup) for (const run of Object.values(contenders) as (() => unknown)[]) await run();
  for (let round = 0; round < rounds; round++)
    for (const [name, run] of Object.entries(contenders) as [K, () => unknown][])
      times[name].push(await timed(run));
  return Object.fromEntries(Object.entries(times).map(([k, t]) => [k, median(t as number[])])) as Record<
    K,
    number
  >;
}

export interface ProcessRun {
  seconds: number;
  /** Peak resident set of the process (GNU time's %M: the kernel's ru_maxrss of the child). */
  peakBytes: number;
}

/** Runs a command as a whole process after `sync`: its wall time and peak memory. Throws if it fails. */
export function runProcess(command: string, args: string[]): ProcessRun {
  execFileSync('sync');
  const report = join(tmpdir(), `bench-peak-${process.pid}`);
  const start = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%M', '-o', report, '--', command, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    encoding: 'utf8',
  });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const kib = Number(readFileSync(report, 'utf8').trim().split('\n').at(-1));
  rmSync(report, { force: true });
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${r.stderr}`);
  return { seconds, peakBytes: kib * 1024 };
}

export interface PairedResult {
  a: ProcessRun[];
  b: ProcessRun[];
  /** a's time over b's, round by round. */
  ratios: number[];
}

/**
 * Two commands taking turns (A B A B ...) after one untimed run of each, so that both see the
 * same machine; the ratio is taken pair by pair, which holds when the machine's speed drifts.
 */
export function paired(rounds: number, a: [string, string[]], b: [string, string[]]): PairedResult {
  runProcess(...a);
  runProcess(...b);
  const result: PairedResult = { a: [], b: [], ratios: [] };
  for (let round = 0; round < rounds; round++) {
    const x = runProcess(...a);
    const y = runProcess(...b);
    result.a.push(x);
    result.b.push(y);
    result.ratios.push(x.seconds / y.seconds);
  }
  return result;
}
