import { createReadStream } from 'node:fs';
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

/** Content read from a file on disk, optionally a byte range of it (spool files, images). */
export function fileContent(path: string | Buffer, size: number, offset = 0): Content {
  return {
    size,
    async *read() {
      if (size === 0) return;
      yield* createReadStream(path, {
        start: offset,
        end: offset + size - 1,
        highWaterMark: Math.min(size, 1 << 20),
      });
    },
  };
}

/** Reads a whole content into memory; for small contents and tests. */
export async function readContent(content: Content): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of content.read()) chunks.push(chunk);
  return Buffer.concat(chunks);
}
