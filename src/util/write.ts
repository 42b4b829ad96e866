/** Positional writes that do not return until every byte is written (a write may be short). */
import { writeSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

/** Writes `data` (one buffer, or several in one writev call) at `position`. */
export async function writeFully(
  handle: FileHandle,
  data: Uint8Array | Uint8Array[],
  position: number,
): Promise<void> {
  const chunks = Array.isArray(data) ? data : [data];
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const { bytesWritten } =
    chunks.length === 1
      ? await handle.write(chunks[0]!, 0, total, position)
      : await handle.writev(chunks, position);
  if (bytesWritten === total) return;
  const rest = Buffer.concat(chunks).subarray(bytesWritten);
  for (let done = 0; done < rest.length; ) {
    const r = await handle.write(rest, done, rest.length - done, position + bytesWritten + done);
    done += r.bytesWritten;
  }
}

/** Writes all of `data` with synchronous calls, at `position` or else at the file's offset. */
export function writeFullySync(fd: number, data: Uint8Array, position?: number): void {
  for (let done = 0; done < data.length; )
    done += writeSync(fd, data, done, data.length - done, position === undefined ? null : position + done);
}
