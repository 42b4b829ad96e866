import { closeSync, openSync, readSync } from 'node:fs';
import type { Content } from './model.ts';

/** Content held in memory (small files, generated test data). */
export function bufferContent(data: Uint8Array): Content {
  return {
    size: data.length,
    async *read() {
      yield data;
    },
  };
}

/**
 * Small files are read with synchronous calls: a root filesystem has thousands of them, and
 * three thread-pool round trips per file (open, read, close) would dominate the time.
 */
const SYNC_READ_LIMIT = 256 * 1024;

const READ_PIECE = 1 << 20;

function readExactly(fd: number, path: string | Buffer, size: number, offset: number): Buffer {
  const buffer = Buffer.allocUnsafe(size);
  let done = 0;
  while (done < size) {
    const n = readSync(fd, buffer, done, size - done, offset + done);
    if (n === 0) throw new Error(`${String(path)} is shorter than expected`);
    done += n;
  }
  return buffer;
}

function readSmall(path: string | Buffer, size: number, offset: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    return readExactly(fd, path, size, offset);
  } finally {
    closeSync(fd);
  }
}

/** Content read from a file on disk, optionally a byte range of it (spool files, images). */
export function fileContent(path: string | Buffer, size: number, offset = 0): Content {
  return {
    size,
    source: { path, offset },
    async *read() {
      if (size === 0) return;
      if (size <= SYNC_READ_LIMIT) {
        yield readSmall(path, size, offset);
        return;
      }
      // Larger files: 1 MiB synchronous reads on one descriptor, yielding between them.
      yield* readFileRange(path, size, offset);
    },
  };
}

/** Synchronous 1 MiB pieces of a file range (for worker threads). */
export function* readFileRange(path: string | Buffer, size: number, offset: number): Generator<Buffer> {
  const fd = openSync(path, 'r');
  try {
    for (let done = 0; done < size; ) {
      const piece = readExactly(fd, path, Math.min(READ_PIECE, size - done), offset + done);
      done += piece.length;
      yield piece;
    }
  } finally {
    closeSync(fd);
  }
}

/** Reads a whole content into memory; for small contents and tests. */
export async function readContent(content: Content): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of content.read()) chunks.push(chunk);
  return Buffer.concat(chunks);
}
