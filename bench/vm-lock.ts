/**
 * The machine-wide VM lock: only one qemu guest boots at a time on this host (TCG guests are
 * unreliable under load), whoever started it — a benchmark takes it for each of its VM runs and
 * gives it back between them, so the tests of others get their turn.
 */
import { spawn } from 'node:child_process';

export const VM_LOCK = '/tmp/seal-vm.lock';

/** Runs `run` while holding the VM lock: a `flock LOCK cat` child holds it until its stdin closes. */
export async function withVmLock<T>(run: () => Promise<T>, lock = VM_LOCK): Promise<T> {
  const holder = spawn('flock', [lock, 'cat'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => holder.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    holder.once('error', reject);
    holder.once('close', (code) => reject(new Error(`flock ${lock} ended (${code})`)));
    // cat echoes only once flock holds the lock.
    holder.stdout.once('data', () => resolve());
    holder.stdin.write('locked\n');
  });
  try {
    return await run();
  } finally {
    holder.stdin.end();
    await exited;
  }
}
