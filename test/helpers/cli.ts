import { spawn, spawnSync } from 'node:child_process';
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
  options: { env?: NodeJS.ProcessEnv; input?: string; encoding?: BufferEncoding; cwd?: string } = {},
): RunResult {
  const r = spawnSync(SEAL_BIN, args, {
    encoding: options.encoding ?? 'utf8',
    env: { ...process.env, ...options.env },
    input: options.input,
    cwd: options.cwd,
    maxBuffer: 1 << 28,
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** runSeal without blocking the event loop: for tests whose servers run in this process. */
export function runSealAsync(args: string[], options: { env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(SEAL_BIN, args, {
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status: status ?? -1, stdout, stderr }));
  });
}
