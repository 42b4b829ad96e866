import { closeSync, openSync } from 'node:fs';
import { readFullySync } from '../util/read.ts';
import { TreeError } from './errors.ts';
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

/** Fills `target` from the file at `position`; a file shorter than that is an error. */
function readFully(fd: number, path: string | Buffer, target: Uint8Array, position: number): void {
  if (readFullySync(fd, target, position) < target.length)
    throw new TreeError('TREE_CONTENT_SIZE', `${String(path)} is shorter than expected`, {
      subject: String(path),
    });
}

function readExactly(fd: number, path: string | Buffer, size: number, offset: number): Buffer {
  const buffer = Buffer.allocUnsafe(size);
  readFully(fd, path, buffer, offset);
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

/** Sequential reads of a content into buffers the caller owns (no intermediate copies). */
export interface ContentReader {
  /** Fills `target` with the next `target.length` bytes of the content. */
  readInto(target: Uint8Array): Promise<void>;
  /** Releases the file descriptor or the stream; safe to call more than once. */
  close(): void;
}

/**
 * A reader of `content` from its start. Contents on disk are read with synchronous reads
 * straight into the target; others are copied out of their stream.
 */
export function contentReader(content: Content): ContentReader {
  const source = content.source;
  if (source) {
    let fd: number | undefined;
    let position = source.offset;
    return {
      async readInto(target) {
        fd ??= openSync(source.path, 'r');
        readFully(fd, source.path, target, position);
        position += target.length;
      },
      close() {
        if (fd !== undefined) closeSync(fd);
        fd = undefined;
      },
    };
  }
  const chunks = content.read()[Symbol.asyncIterator]();
  let pending: Uint8Array = new Uint8Array(0);
  return {
    async readInto(target) {
      for (let done = 0; done < target.length; ) {
        if (pending.length === 0) {
          const next = await chunks.next();
          if (next.done) throw new TreeError('TREE_CONTENT_SIZE', 'content is shorter than its size');
          pending = next.value;
        }
        const take = Math.min(pending.length, target.length - done);
        target.set(pending.subarray(0, take), done);
        pending = pending.subarray(take);
        done += take;
      }
    },
    close() {
      void chunks.return?.();
    },
  };
}

/** Reads a whole content into memory; for small contents and tests. */
export async function readContent(content: Content): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of content.read()) chunks.push(chunk);
  return Buffer.concat(chunks);
}
