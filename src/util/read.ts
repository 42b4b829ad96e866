/** Reads that do not return early, and streams read whole within a bound. */
import { readSync } from 'node:fs';

/**
 * The whole of `stream`, refused past `limit` bytes with the error `tooLarge` makes (before the
 * rest is read: a hostile stream may not end).
 */
export async function readBounded(
  stream: AsyncIterable<Uint8Array>,
  limit: number,
  tooLarge: () => Error,
): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += chunk.length;
    if (size > limit) throw tooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

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
