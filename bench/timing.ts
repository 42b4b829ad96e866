/**
 * Timing shared by the benchmarks. Every timed run starts after `sync`, so that no run pays for
 * writing back what an earlier one left dirty. Contenders take turns round by round, by default
 * after one untimed round that warms the caches for all of them, so that each sees the same machine.
 */
import { execFileSync } from 'node:child_process';

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
