/** The power button as the kernel's input devices show it: found by name, its key press read from the event stream. */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { hasPowerPress, powerButtons, watchPowerButton } from '../../src/agent/power.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-power-'));
after(() => rm(work, { recursive: true, force: true }));

/** One struct input_event (64-bit): time, type, code, value. */
function event(type: number, code: number, value: number): Buffer {
  const b = Buffer.alloc(24);
  b.writeBigUInt64LE(1_700_000_000n, 0);
  b.writeUInt16LE(type, 16);
  b.writeUInt16LE(code, 18);
  b.writeInt32LE(value, 20);
  return b;
}

test('a press of KEY_POWER is found among other events; a release, another key or a partial event is not', () => {
  const sync = event(0, 0, 0);
  assert.equal(hasPowerPress(Buffer.concat([sync, event(1, 116, 1), sync])), true);
  assert.equal(hasPowerPress(Buffer.concat([event(1, 116, 0), sync])), false, 'release');
  assert.equal(hasPowerPress(event(1, 30, 1)), false, 'another key');
  assert.equal(hasPowerPress(event(2, 116, 1)), false, 'not a key event');
  assert.equal(hasPowerPress(event(1, 116, 1).subarray(0, 23)), false, 'partial');
});

test('the devices named "Power Button" are watched; a press calls back once', async () => {
  const sys = join(work, 'sys');
  const dev = join(work, 'dev');
  mkdirSync(dev);
  for (const [node, name] of [
    ['event0', 'AT Translated Set 2 keyboard'],
    ['event1', 'Power Button'],
    ['event2', 'Power Button'],
    ['mouse0', 'Power Button'],
  ]) {
    mkdirSync(join(sys, node!, 'device'), { recursive: true });
    writeFileSync(join(sys, node!, 'device/name'), `${name}\n`);
  }
  assert.deepEqual(powerButtons(sys).sort(), ['event1', 'event2']);
  assert.deepEqual(powerButtons(join(work, 'none')), []);
  writeFileSync(join(dev, 'event1'), '');
  writeFileSync(join(dev, 'event2'), Buffer.concat([event(1, 116, 1), event(0, 0, 0)]));
  let presses = 0;
  const pressed = new Promise<void>((resolve) => {
    assert.equal(
      watchPowerButton(
        () => {
          presses++;
          resolve();
        },
        dev,
        sys,
      ),
      2,
    );
  });
  await pressed;
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(presses, 1);
  assert.equal(
    watchPowerButton(() => {}, join(work, 'no-dev'), sys),
    0,
    'no device node: nothing watched',
  );
});
