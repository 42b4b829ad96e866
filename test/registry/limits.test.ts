/** The transfer watch on its own: which time counts as waiting on the server, and what ends a window. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { now, TransferWatch } from '../../src/registry/limits.ts';

/** A watch with a tiny window, and the errors it aborted with. */
function watch(limits: { deadline?: number; lowSpeed?: { bytes: number; ms: number } }) {
  const aborted: Error[] = [];
  const w = new TransferWatch('GET http://registry/x', limits, (e) => aborted.push(e));
  return { w, aborted };
}

const LOW = { bytes: 100, ms: 20 };

test('only time spent waiting on the server counts, and only once the request has a connection', async () => {
  // Waiting in Seal's own queue for a connection: no clock.
  const queued = watch({ lowSpeed: LOW });
  queued.w.waiting();
  await sleep(120);
  assert.equal(queued.aborted.length, 0);
  queued.w.started();
  await sleep(120);
  assert.equal(queued.aborted.length, 1);
  assert.equal((queued.aborted[0] as Error & { code: string }).code, 'TIMEOUT');
  assert.match(queued.aborted[0]?.message ?? '', /GET http:\/\/registry\/x: fewer than 100 bytes in 20 ms/);

  // Seal's side busy between short waits: the waits add up to less than a window.
  const busy = watch({ lowSpeed: { bytes: 100, ms: 200 } });
  busy.w.started();
  for (let i = 0; i < 5; i++) {
    busy.w.waiting();
    busy.w.idle();
    await sleep(60);
  }
  assert.equal(busy.aborted.length, 0);
  busy.w.stop();
});

test('enough bytes start a new window; too few do not', async () => {
  const fed = watch({ lowSpeed: LOW });
  fed.w.started();
  fed.w.waiting();
  for (let i = 0; i < 8; i++) {
    await sleep(10);
    fed.w.moved(100);
  }
  fed.w.stop();
  assert.equal(fed.aborted.length, 0);

  const starved = watch({ lowSpeed: LOW });
  starved.w.started();
  starved.w.waiting();
  for (let i = 0; i < 8 && starved.aborted.length === 0; i++) {
    await sleep(10);
    starved.w.moved(1);
  }
  assert.equal(starved.aborted.length, 1);
});

test('the deadline fires whatever Seal is doing; stop() ends every timer; no limits, no aborts', async () => {
  const late = watch({ deadline: now() + 20 });
  late.w.started();
  late.w.idle();
  await sleep(100);
  assert.equal(late.aborted.length, 1);
  assert.match(late.aborted[0]?.message ?? '', /not done within the deadline/);

  const stopped = watch({ deadline: now() + 20, lowSpeed: LOW });
  stopped.w.started();
  stopped.w.waiting();
  stopped.w.stop();
  await sleep(100);
  assert.equal(stopped.aborted.length, 0);

  const free = watch({});
  free.w.started();
  free.w.waiting();
  await sleep(60);
  assert.equal(free.aborted.length, 0);
});
