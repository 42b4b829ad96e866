/** Positional reads that do not return early (a read may be short before the end of the file). */
import { closeSync, openSync, readSync } from 'node:fs';

/** Fills `target` from `fd` at `position`; returns how many bytes it got, fewer only at the end of the file. */
export function readFullySync(fd: number, target: Uint8Array, position: number): number {
  let done = 0;
  while (done < target.length) {
    const n = readSync(fd, target, done, target.length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/** The first `length` bytes of the file at `path`, or all of it if it is shorter. */
export function readHeadSync(path: string, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buffer = Buffer.allocUnsafe(length);
    return buffer.subarray(0, readFullySync(fd, buffer, 0));
  } finally {
    closeSync(fd);
  }
}
