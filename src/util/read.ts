/** Positional reads that do not return early (a read may be short before the end of the file). */
import { readSync } from 'node:fs';

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
