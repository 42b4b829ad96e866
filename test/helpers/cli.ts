import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const SEAL_BIN = fileURLToPath(new URL('../../bin/seal', import.meta.url));

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs the real `seal` executable, as a user would (output decoded as `encoding`, default UTF-8). */
export function runSeal(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; input?: string; encoding?: BufferEncoding } = {},
): RunResult {
  const r = spawnSync(SEAL_BIN, args, {
    encoding: options.encoding ?? 'utf8',
    env: { ...process.env, ...options.env },
    input: options.input,
    maxBuffer: 1 << 28,
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}
