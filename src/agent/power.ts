/**
 * The ACPI power button (what `seal machine stop`, a hypervisor's shutdown or a real button
 * press sends): the kernel's button driver reports it as a key on an input device named "Power
 * Button", which the agent reads (evdev) to shut the device down in order.
 */
import { closeSync, constants, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';

/** struct input_event on 64-bit Linux: a timeval (16 bytes), type, code (u16 each), value (s32). */
const EVENT_SIZE = 24;
const EV_KEY = 1;
const KEY_POWER = 116;

/** The input devices (event nodes) named "Power Button". */
export function powerButtons(sys = '/sys/class/input'): string[] {
  let names: string[];
  try {
    names = readdirSync(sys);
  } catch {
    return [];
  }
  return names.filter((n) => {
    if (!/^event\d+$/.test(n)) return false;
    try {
      return readFileSync(join(sys, n, 'device/name'), 'utf8').trim() === 'Power Button';
    } catch {
      return false;
    }
  });
}

/** Whether `bytes` (whole input events) hold a press of the power key. */
export function hasPowerPress(bytes: Buffer): boolean {
  for (let at = 0; at + EVENT_SIZE <= bytes.length; at += EVENT_SIZE) {
    if (
      bytes.readUInt16LE(at + 16) === EV_KEY &&
      bytes.readUInt16LE(at + 18) === KEY_POWER &&
      bytes.readInt32LE(at + 20) === 1
    )
      return true;
  }
  return false;
}

/**
 * Calls `onPress` (once) when a power button is pressed. The devices are opened non-blocking and
 * read a few times a second, so no thread of the pool waits on them. Returns how many it watches.
 */
export function watchPowerButton(onPress: () => void, dev = '/dev/input', sys = '/sys/class/input'): number {
  const fds = powerButtons(sys).flatMap((n) => {
    try {
      return [openSync(join(dev, n), constants.O_RDONLY | constants.O_NONBLOCK)];
    } catch {
      return [];
    }
  });
  if (fds.length === 0) return 0;
  const buffer = Buffer.alloc(EVENT_SIZE * 16);
  const timer = setInterval(() => {
    for (const fd of fds) {
      let n = 0;
      try {
        n = readSync(fd, buffer, 0, buffer.length, null);
      } catch {
        continue; // EAGAIN: nothing pressed
      }
      if (hasPowerPress(buffer.subarray(0, n))) {
        clearInterval(timer);
        for (const f of fds) closeSync(f);
        onPress();
        return;
      }
    }
  }, 250);
  return fds.length;
}
