/**
 * Contents read into caller-owned buffers (contentReader): from files on disk (ranges of them
 * too) and from streams cut into chunks of any size, always the same bytes as a whole read.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { type Content, contentReader, fileContent, TreeError } from '../../src/tree/index.ts';
import { prng } from '../helpers/trees.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-content-'));
after(() => rm(work, { recursive: true, force: true }));

const random = prng(11);
const bytes = Buffer.from(Array.from({ length: 150_000 }, () => Math.floor(random() * 256)));
const file = join(work, 'data');
writeFileSync(file, bytes);

/** A content streamed in chunks of the given sizes (cycled). */
function chunked(data: Buffer, sizes: number[]): Content {
  return {
    size: data.length,
    async *read() {
      for (let at = 0, k = 0; at < data.length; k++) {
        const n = sizes[k % sizes.length]!;
        yield data.subarray(at, at + n);
        at += n;
      }
    },
  };
}

/** Reads `content` whole through targets of the given sizes (cycled, the last one cut short). */
async function readThrough(content: Content, targets: number[]): Promise<Buffer> {
  const reader = contentReader(content);
  const parts: Buffer[] = [];
  try {
    for (let at = 0, k = 0; at < content.size; k++) {
      const target = Buffer.alloc(Math.min(targets[k % targets.length]!, content.size - at));
      await reader.readInto(target);
      parts.push(target);
      at += target.length;
    }
  } finally {
    reader.close();
    reader.close(); // twice is harmless
  }
  return Buffer.concat(parts);
}

test('a file, a range of it and chunked streams read into any target sizes give the same bytes', async () => {
  for (const targets of [[4096], [131072], [7, 65536, 3, 100_000], [150_000]]) {
    assert.ok((await readThrough(fileContent(file, bytes.length), targets)).equals(bytes), `file ${targets}`);
    const range = fileContent(file, 100_000, 12_345);
    assert.ok(
      (await readThrough(range, targets)).equals(bytes.subarray(12_345, 112_345)),
      `range ${targets}`,
    );
    for (const sizes of [[4095, 4097], [65536], [150_000], [13, 1, 70_000]]) {
      const stream = chunked(bytes, sizes);
      assert.ok((await readThrough(stream, targets)).equals(bytes), `chunks ${sizes} targets ${targets}`);
    }
  }
});

test('a content shorter than its size is a typed error, from a file or a stream', async () => {
  const isShort = (e: unknown) => e instanceof TreeError && e.code === 'TREE_CONTENT_SIZE';
  const file2 = join(work, 'short');
  writeFileSync(file2, bytes.subarray(0, 1000));
  const fromFile = contentReader(fileContent(file2, 2000));
  await assert.rejects(fromFile.readInto(Buffer.alloc(2000)), isShort);
  fromFile.close();
  const fromStream = contentReader({ ...chunked(bytes.subarray(0, 1000), [300]), size: 2000 });
  await assert.rejects(fromStream.readInto(Buffer.alloc(2000)), isShort);
  fromStream.close();
});
