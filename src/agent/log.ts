/**
 * The boot log: each step's start, end, duration and outcome, printed on the console as it
 * happens and kept in /run/seal/boot.json (rewritten atomically after every step), so `seal
 * status`, the tests and bench/boot read the same record.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { escapeControls } from '../errors.ts';

export interface StepRecord {
  step: string;
  /** Milliseconds since the agent started. */
  start: number;
  ms?: number;
  status: 'running' | 'ok' | 'failed';
  detail?: string;
  error?: { code: string; message: string };
}

export interface BootRecord {
  /** Kernel uptime (s) when the Node.js process started (the kernel and the initrd's unpacking before it). */
  nodeStartedAt: number;
  /** Milliseconds from the process's start to the agent's first step (loading Node.js and the agent's code). */
  agentLoadedMs: number;
  steps: StepRecord[];
  result?: 'running' | 'refused' | 'failed';
}

/**
 * The agent's peak resident memory since it started (the kernel's count, e.g. "71.2 MB"): said
 * when a boot completes and after each update, for the device's memory budget.
 */
export function peakMemory(): string {
  return `${((process.resourceUsage().maxRSS * 1024) / 1e6).toFixed(1)} MB`;
}

export class BootLog {
  readonly record: BootRecord;
  readonly #path: string;
  readonly #write: (line: string) => void;
  readonly #started = performance.now();
  readonly #watchers = new Set<(line: string) => void>();

  constructor(path: string, write: (line: string) => void = (l) => process.stdout.write(l)) {
    this.#path = path;
    this.#write = write;
    this.record = { nodeStartedAt: 0, agentLoadedMs: Math.round(process.uptime() * 1000), steps: [] };
  }

  /** A line on the console, prefixed so that the tests and a reader can tell the agent's lines. */
  say(text: string): void {
    const line = `seal: ${escapeControls(text)}\n`;
    this.#write(line);
    for (const watcher of this.#watchers) watcher(line);
  }

  /** Calls `watcher` with every line said from now on, until the returned function is called. */
  watch(watcher: (line: string) => void): () => void {
    this.#watchers.add(watcher);
    return () => this.#watchers.delete(watcher);
  }

  /** Runs one step, logging its start, its end and its duration; a failure is recorded and rethrown. */
  async step<T>(
    name: string,
    run: () => Promise<T> | T,
    detail?: (value: T) => string | undefined,
  ): Promise<T> {
    const entry: StepRecord = {
      step: name,
      start: Math.round(performance.now() - this.#started),
      status: 'running',
    };
    this.record.steps.push(entry);
    this.say(`[ .. ] ${name}`);
    try {
      const value = await run();
      entry.ms = Math.round(performance.now() - this.#started) - entry.start;
      entry.status = 'ok';
      entry.detail = detail?.(value);
      this.say(`[ ok ] ${name} (${entry.ms} ms)${entry.detail ? `: ${entry.detail}` : ''}`);
      this.save();
      return value;
    } catch (error) {
      entry.ms = Math.round(performance.now() - this.#started) - entry.start;
      entry.status = 'failed';
      const e = error as { code?: unknown; message?: string };
      entry.error = {
        code: typeof e.code === 'string' ? e.code : 'ERROR',
        message: e.message ?? String(error),
      };
      this.say(`[FAIL] ${name}: ${entry.error.message} [${entry.error.code}]`);
      this.save();
      throw error;
    }
  }

  /** Writes the record to its file (atomically); before /run exists, this is a no-op. */
  save(): void {
    try {
      mkdirSync(dirname(this.#path), { recursive: true });
      writeFileSync(`${this.#path}.tmp`, `${JSON.stringify(this.record, null, 2)}\n`);
      renameSync(`${this.#path}.tmp`, this.#path);
    } catch {
      // Before /run is mounted the record stays in memory; the next save writes it whole.
    }
  }
}
