/**
 * Atomic file creation: write under a temporary name in the destination's directory, fsync,
 * rename, fsync the directory. A crash or an error never leaves a half-written file under the
 * final name, and once this returns the new file survives a power loss (the rename too: without
 * the directory's fsync, a journal not yet committed loses it).
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { type FileHandle, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** fsync of a directory: its entries (a rename, a new file) reach the disk. */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export function temporaryNameFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${randomBytes(6).toString('hex')}`);
}

/**
 * Creates `path` atomically: `fill` writes into a handle on a temporary file; on success the
 * file is fsynced and renamed into place, on failure it is removed and the error rethrown.
 */
export async function writeAtomic<T>(
  path: string,
  fill: (handle: FileHandle, tempPath: string) => Promise<T>,
  mode = 0o644,
): Promise<T> {
  const temp = temporaryNameFor(path);
  const handle = await open(temp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, mode);
  try {
    const result = await fill(handle, temp);
    await handle.sync();
    await handle.close();
    await rename(temp, path);
    await syncDirectory(dirname(path));
    return result;
  } catch (error) {
    await handle.close().catch(() => {});
    await rm(temp, { force: true });
    throw error;
  }
}

export async function writeFileAtomic(path: string, data: Uint8Array | string, mode = 0o644): Promise<void> {
  await writeAtomic(
    path,
    async (h) => {
      await h.writeFile(data);
    },
    mode,
  );
}
