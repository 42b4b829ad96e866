/** The transfer watch on its own, on a clock the test moves: which time counts as waiting on the server, and what ends a window. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Clock, TransferWatch } from '../../src/registry/limits.ts';

/** A clock that moves only when told to, firing the timers that fall due on the way, in order. */
class ManualClock implements Clock {
  #time = 0;
  #timers = new Set<{ at: number; callback: () => void; unref(): unknown }>();

  now(): number {
    return this.#time;
  }

  setTimeout(callback: () => void, ms: number) {
    const timer = { at: this.#time + ms, callback, unref: () => timer };
    this.#timers.add(timer);
    return timer;
  }

  clearTimeout(handle: { unref(): unknown } | undefined): void {
    this.#timers.delete(handle as never);
  }

  advance(ms: number): void {
    const end = this.#time + ms;
    for (;;) {
      const due = [...this.#timers].filter((t) => t.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.#timers.delete(due);
      this.#time = due.at;
      due.callback();
    }
    this.#time = end;
  }
}

/** A watch on a manual clock, and the errors it aborted with. */
function watch(limits: { deadline?: number; lowSpeed?: { bytes: number; ms: number } }) {
  const aborted: Error[] = [];
  const clock = new ManualClock();
  const w = new TransferWatch('GET http://registry/x', limits, (e) => aborted.push(e), clock);
  return { w, aborted, clock };
}

const LOW = { bytes: 100, ms: 20 };

test('only time spent waiting on the server counts, and only once the request has a connection', () => {
  // Waiting in Seal's own queue for a connection: no clock.
  const queued = watch({ lowSpeed: LOW });
  queued.w.waiting();
  queued.clock.advance(120);
  assert.equal(queued.aborted.length, 0);
  queued.w.started();
  queued.clock.advance(19);
  assert.equal(queued.aborted.length, 0);
  queued.clock.advance(1);
  assert.equal(queued.aborted.length, 1);
  assert.equal((queued.aborted[0] as Error & { code: string }).code, 'TIMEOUT');
  assert.match(queued.aborted[0]?.message ?? '', /GET http:\/\/registry\/x: fewer than 100 bytes in 20 ms/);

  // Seal's side busy between short waits: the waits add up, the busy time does not.
  const busy = watch({ lowSpeed: { bytes: 100, ms: 200 } });
  busy.w.started();
  for (let i = 0; i < 5; i++) {
    busy.w.waiting();
    busy.clock.advance(30);
    busy.w.idle();
    busy.clock.advance(1000);
  }
  assert.equal(busy.aborted.length, 0, '150 ms of waiting in all');
  busy.w.waiting();
  busy.clock.advance(50);
  assert.equal(busy.aborted.length, 1, 'the sixth wait brings it to 200 ms');
  busy.w.stop();
});

test('enough bytes start a new window; too few do not', () => {
  const fed = watch({ lowSpeed: LOW });
  fed.w.started();
  fed.w.waiting();
  for (let i = 0; i < 8; i++) {
    fed.clock.advance(15);
    fed.w.moved(100);
  }
  fed.w.stop();
  assert.equal(fed.aborted.length, 0);

  const starved = watch({ lowSpeed: LOW });
  starved.w.started();
  starved.w.waiting();
  starved.clock.advance(10);
  starved.w.moved(99);
  starved.clock.advance(9);
  assert.equal(starved.aborted.length, 0);
  starved.clock.advance(1);
  assert.equal(starved.aborted.length, 1, '99 bytes in 20 ms are too few');
});

test('the deadline fires whatever Seal is doing; stop() ends every timer; no limits, no aborts', () => {
  const late = watch({ deadline: 20 });
  late.w.started();
  late.w.idle();
  late.clock.advance(19);
  assert.equal(late.aborted.length, 0);
  late.clock.advance(1);
  assert.equal(late.aborted.length, 1);
  assert.match(late.aborted[0]?.message ?? '', /not done within the deadline/);

  const stopped = watch({ deadline: 20, lowSpeed: LOW });
  stopped.w.started();
  stopped.w.waiting();
  stopped.w.stop();
  stopped.clock.advance(100);
  assert.equal(stopped.aborted.length, 0);

  const free = watch({});
  free.w.started();
  free.w.waiting();
  free.clock.advance(60_000);
  assert.equal(free.aborted.length, 0);
});
