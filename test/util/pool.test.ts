/**
 * The worker pool: tasks run on workers, failures come back as rejections, and idle workers are
 * ended (their memory given back) and started again when work comes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkerPool } from '../../src/util/pool.ts';

const HASHING = new URL('../../src/verity/hashing.ts', import.meta.url);
const h = { algorithm: 'sha256', blockSize: 4096, prefix: new Uint8Array(0), suffix: new Uint8Array(0) };

/** Polls `condition` (an event the pool gives no promise for) for up to 10 s. */
async function eventually(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await sleep(50);
  assert.ok(condition(), what);
}

test('idle workers are ended and started again for new work', async () => {
  const pool = new WorkerPool(2, { idleMs: 100 });
  try {
    const file = new URL(import.meta.url).pathname;
    const run = () => pool.run<Uint8Array>(HASHING, 'hashFileRange', [file, 0, 2, h, 32]);
    const [a, b] = await Promise.all([run(), run()]);
    assert.deepEqual(a, b);
    assert.equal(a.length, 64);
    await eventually(() => pool.workers === 0, 'both workers ended once idle');
    assert.deepEqual(await run(), a, 'a new worker does the same work');
    assert.equal(pool.workers, 1);
  } finally {
    await pool.close();
  }
});

test('a failing task rejects and the worker stays usable', async () => {
  const pool = new WorkerPool(1, { idleMs: 60_000 });
  try {
    await assert.rejects(pool.run(HASHING, 'noSuchFunction', []), /has no function noSuchFunction/);
    await assert.rejects(pool.run(HASHING, 'hashFileRange', ['/nonexistent/file', 0, 1, h, 32]), /ENOENT/);
    const file = new URL(import.meta.url).pathname;
    assert.equal((await pool.run<Uint8Array>(HASHING, 'hashFileRange', [file, 0, 1, h, 32])).length, 32);
    assert.equal(pool.workers, 1);
  } finally {
    await pool.close();
  }
  await assert.rejects(pool.run(HASHING, 'hashFileRange', []), /closed/);
});
