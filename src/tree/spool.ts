/**
 * A spool holds the file contents of trees read from streams (tar layers), so a tree of any
 * size keeps only metadata in memory. It is one append-only temporary file, unlinked as soon as
 * it is opened: nothing is left behind even if the process dies.
 */
import { randomBytes } from 'node:crypto';
import { readSync } from 'node:fs';
import { type FileHandle, open, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFullySync } from '../util/write.ts';
import { bufferContent } from './content.ts';
import type { Content } from './model.ts';

/** Contents up to this size stay in memory: cheaper than a read from the spool. */
const INLINE_LIMIT = 512;

export class Spool {
  #handle: FileHandle;
  #size = 0;
  #closed = false;

  private constructor(handle: FileHandle) {
    this.#handle = handle;
  }

  static async create(dir: string = tmpdir()): Promise<Spool> {
    const path = join(dir, `.seal-spool-${randomBytes(8).toString('hex')}`);
    const handle = await open(path, 'w+', 0o600);
    await unlink(path);
    return new Spool(handle);
  }

  /** Bytes written to the spool file so far. */
  get size(): number {
    return this.#size;
  }

  /** Stores `size` bytes read from `data` and returns a re-readable content. */
  async store(data: AsyncIterable<Uint8Array>, size: number): Promise<Content> {
    if (size <= INLINE_LIMIT) {
      const chunks: Uint8Array[] = [];
      for await (const chunk of data) chunks.push(chunk);
      return bufferContent(Buffer.concat(chunks));
    }
    const offset = this.#size;
    let written = 0;
    for await (const chunk of data) {
      await this.#write(chunk, offset + written);
      written += chunk.length;
    }
    this.#size += written;
    return this.#content(offset, written);
  }

  // Synchronous writes: they land in the page cache, and a layer has thousands of small files
  // for which a thread-pool round trip each would dominate.
  async #write(chunk: Uint8Array, position: number): Promise<void> {
    writeFullySync(this.#handle.fd, chunk, position);
  }

  #content(offset: number, size: number): Content {
    const spool = this;
    return {
      size,
      async *read() {
        let position = offset;
        const end = offset + size;
        while (position < end) {
          if (spool.#closed) throw new Error('spool is closed');
          const buffer = Buffer.allocUnsafe(Math.min(1 << 20, end - position));
          const bytesRead =
            buffer.length <= 256 * 1024
              ? readSync(spool.#handle.fd, buffer, 0, buffer.length, position)
              : (await spool.#handle.read(buffer, 0, buffer.length, position)).bytesRead;
          if (bytesRead === 0) throw new Error('spool file shorter than expected');
          position += bytesRead;
          yield buffer.subarray(0, bytesRead);
        }
      },
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#handle.close();
  }
}
