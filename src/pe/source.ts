/**
 * Where a PE image's bytes come from: a file read by positional reads (a kernel or a UKI with a
 * large initrd is never loaded whole), or a buffer already in memory.
 */
import { closeSync, fstatSync, openSync } from 'node:fs';
import { readFullySync } from '../util/read.ts';
import { PeError } from './errors.ts';

export interface ByteSource {
  readonly name: string;
  readonly size: number;
  /** Exactly `length` bytes at `offset` into `target` (or a new buffer); PE_TRUNCATED past the end. */
  read(offset: number, length: number, target?: Buffer): Buffer;
  close(): void;
}

function checkRange(name: string, size: number, offset: number, length: number): void {
  if (offset < 0 || length < 0 || offset + length > size) {
    throw new PeError(
      'PE_TRUNCATED',
      `${name}: ${length} bytes at ${offset} lie past the end of the file (${size} bytes)`,
      {
        subject: name,
      },
    );
  }
}

export function fileSource(path: string): ByteSource {
  const fd = openSync(path, 'r');
  let size: number;
  try {
    size = fstatSync(fd).size;
  } catch (error) {
    closeSync(fd);
    throw error;
  }
  let open = true;
  return {
    name: path,
    size,
    read(offset, length, target) {
      checkRange(path, size, offset, length);
      const out = target ? target.subarray(0, length) : Buffer.allocUnsafe(length);
      if (readFullySync(fd, out, offset) !== length) checkRange(path, offset, offset, length);
      return out;
    },
    close() {
      if (open) closeSync(fd);
      open = false;
    },
  };
}

export function bufferSource(data: Uint8Array, name = 'image'): ByteSource {
  const buffer = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return {
    name,
    size: buffer.length,
    read(offset, length, target) {
      checkRange(name, buffer.length, offset, length);
      if (!target) return buffer.subarray(offset, offset + length);
      buffer.copy(target, 0, offset, offset + length);
      return target.subarray(0, length);
    },
    close() {},
  };
}

export const CHUNK_SIZE = 1 << 20;

/** The bytes [offset, offset + length) in chunks of at most CHUNK_SIZE (each chunk is reused). */
export function* chunks(
  source: ByteSource,
  offset: number,
  length: number,
  scratch?: Buffer,
): Generator<Buffer> {
  const buffer = scratch ?? Buffer.allocUnsafe(Math.min(CHUNK_SIZE, Math.max(length, 1)));
  for (let done = 0; done < length; ) {
    const n = Math.min(buffer.length, length - done);
    yield source.read(offset + done, n, buffer);
    done += n;
  }
}
