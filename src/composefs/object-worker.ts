/**
 * Runs on the worker pool: copies file ranges into temporary object files while hashing them,
 * so the objects of a tree are staged on every core. Ranges come in batches: most files of a
 * root filesystem are small, and one pool round trip per file cost more than the file itself.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { readFileRange } from '../tree/content.ts';
import { writeFullySync } from '../util/write.ts';
import { fsverityDigest } from '../verity/fs-verity.ts';

async function stageFileObject(
  path: string | Uint8Array,
  offset: number,
  size: number,
  dir: string,
): Promise<{ digest: Uint8Array; temp: string }> {
  const source = typeof path === 'string' ? path : Buffer.from(path);
  const temp = join(dir, `.tmp-${randomBytes(8).toString('hex')}`);
  const fd = openSync(temp, 'wx', 0o644);
  try {
    const digest = await fsverityDigest(
      (async function* () {
        for (const piece of readFileRange(source, size, offset)) {
          writeFullySync(fd, piece);
          yield piece;
        }
      })(),
    );
    return { digest, temp };
  } catch (error) {
    rmSync(temp, { force: true });
    throw error;
  } finally {
    closeSync(fd);
  }
}

/** The fs-verity digest of a file range, without storing it. */
async function digestFileRange(path: string | Uint8Array, offset: number, size: number): Promise<Uint8Array> {
  const source = typeof path === 'string' ? path : Buffer.from(path);
  return fsverityDigest(
    (async function* () {
      yield* readFileRange(source, size, offset);
    })(),
  );
}

/** A file range: path, offset, size. */
export type FileRange = [path: string | Uint8Array, offset: number, size: number];

export async function stageFileObjects(
  ranges: FileRange[],
  dir: string,
): Promise<{ digest: Uint8Array; temp: string }[]> {
  const staged: { digest: Uint8Array; temp: string }[] = [];
  try {
    for (const [path, offset, size] of ranges) staged.push(await stageFileObject(path, offset, size, dir));
    return staged;
  } catch (error) {
    for (const { temp } of staged) rmSync(temp, { force: true });
    throw error;
  }
}

export async function digestFileRanges(ranges: FileRange[]): Promise<Uint8Array[]> {
  const digests: Uint8Array[] = [];
  for (const [path, offset, size] of ranges) digests.push(await digestFileRange(path, offset, size));
  return digests;
}
