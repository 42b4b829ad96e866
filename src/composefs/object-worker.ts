/**
 * Runs on the worker pool: copies a file range into a temporary object file while hashing it,
 * so the objects of a tree are staged on every core.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { readFileRange } from '../tree/content.ts';
import { fsverityDigest } from '../verity/fs-verity.ts';

export async function stageFileObject(
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
          for (let done = 0; done < piece.length; ) done += writeSync(fd, piece, done);
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
export async function digestFileRange(
  path: string | Uint8Array,
  offset: number,
  size: number,
): Promise<Uint8Array> {
  const source = typeof path === 'string' ? path : Buffer.from(path);
  return fsverityDigest(
    (async function* () {
      yield* readFileRange(source, size, offset);
    })(),
  );
}
