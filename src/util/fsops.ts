/**
 * The filesystem calls Node.js lacks (native/fsops.c): per-path extended attributes, device and
 * FIFO nodes, nanosecond times, and opening a path confined beneath a directory. They replace
 * every text script and command line that used to carry paths and names from inputs
 * (setfattr --restore, getfattr, mknod, mkfifo, touch).
 */
import { closeSync, constants, fstatSync, openSync } from 'node:fs';
import { loadAddon } from './native.ts';
import { readFullySync } from './read.ts';

interface FsOps {
  listXattrs(path: Buffer): Buffer[];
  getXattr(path: Buffer, name: Buffer): Buffer;
  setXattr(path: Buffer, name: Buffer, value: Uint8Array): void;
  mknod(path: Buffer, mode: number, major: number, minor: number): void;
  setTimes(path: Buffer, seconds: number, nanoseconds: number): void;
  openBeneath(root: Buffer, path: Buffer, flags: number, mode: number): number;
  enableVerity(
    fd: number,
    algorithm: number,
    blockSize: number,
    salt: Uint8Array,
    signature: Uint8Array,
  ): void;
  measureVerity(fd: number): { algorithm: number; digest: Buffer };
  syncFilesystem(fd: number): void;
}

let addon: FsOps | undefined;

function fsops(): FsOps {
  if (addon) return addon;
  const loaded = loadAddon<FsOps>('fsops');
  if (loaded instanceof Error) {
    throw new Error(`Seal's filesystem addon is not built (run scripts/setup.sh): ${loaded.message}`);
  }
  addon = loaded;
  return addon;
}

/**
 * Every extended attribute of `path` itself (a symlink is not followed), names as byte strings.
 * A filesystem without xattr support has none.
 */
export function readXattrs(path: Buffer): Map<string, Uint8Array> {
  const ops = fsops();
  const result = new Map<string, Uint8Array>();
  for (const name of ops.listXattrs(path)) {
    try {
      result.set(name.toString('latin1'), ops.getXattr(path, name));
    } catch (error) {
      // Removed between the listing and the read, or a namespace this process may list but not read.
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENODATA' && code !== 'EPERM' && code !== 'EACCES') throw error;
    }
  }
  return result;
}

/** Sets one extended attribute of `path` itself (a symlink is not followed); `name` a byte string. */
export function setXattr(path: Buffer, name: string, value: Uint8Array): void {
  fsops().setXattr(path, Buffer.from(name, 'latin1'), value);
}

/** Makes a character device, block device or FIFO; `mode` includes the type bits. */
export function makeNode(path: Buffer, mode: number, major = 0, minor = 0): void {
  fsops().mknod(path, mode, major, minor);
}

/** Sets the access and modification time of `path` itself (a symlink is not followed), to the nanosecond. */
export function setTimes(path: Buffer, seconds: number, nanoseconds: number): void {
  fsops().setTimes(path, seconds, nanoseconds);
}

/**
 * Opens `path` (relative) inside the directory `root`: `..` out of it, an absolute path and a
 * symlink anywhere on the way fail with EXDEV or ELOOP. Strings are paths as Node takes them
 * (UTF-8). Returns a file descriptor.
 */
export function openBeneath(root: string | Buffer, path: string | Buffer, flags: number, mode = 0): number {
  const buffer = (p: string | Buffer) => (typeof p === 'string' ? Buffer.from(p) : p);
  return fsops().openBeneath(buffer(root), buffer(path), flags, mode);
}

/**
 * FS_IOC_ENABLE_VERITY on an open file (opened read-only, and by no one for writing): the kernel
 * builds the Merkle tree and, with a signature, checks it against its .fs-verity keyring.
 * Errors carry the errno name as `code` (EEXIST: already enabled; ENOKEY, EKEYREJECTED,
 * EBADMSG, EPERM: the signature refused or required; EOPNOTSUPP, ENOTTY: no fs-verity here).
 */
export function enableVerity(
  fd: number,
  options: { algorithm: number; blockSize: number; salt?: Uint8Array; signature?: Uint8Array },
): void {
  fsops().enableVerity(
    fd,
    options.algorithm,
    options.blockSize,
    options.salt ?? new Uint8Array(0),
    options.signature ?? new Uint8Array(0),
  );
}

/** FS_IOC_MEASURE_VERITY: the file's fs-verity digest as the kernel holds it (ENODATA: no verity). */
export function measureVerity(fd: number): { algorithm: number; digest: Buffer } {
  return fsops().measureVerity(fd);
}

/** An open regular file inside a directory tree, and its size. */
export interface ConfinedFile {
  fd: number;
  size: number;
}

/**
 * Opens the regular file `path` (relative, from an input) beneath `root`, for reading: no `..`
 * out of it, no symlink on the way or at the end, and nothing but a regular file (a FIFO, a
 * device or a directory is closed again at once, unread). Errors carry `code` ENOENT, ELOOP
 * (a symlink), EXDEV (outside `root`) or ENOTREG (not a regular file).
 */
export function openFileBeneath(root: string | Buffer, path: string | Buffer): ConfinedFile {
  // O_NONBLOCK: opening a FIFO must not wait for a writer before it can be refused.
  const fd = openBeneath(root, path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
  const st = fstatSync(fd);
  if (!st.isFile()) {
    closeSync(fd);
    throw Object.assign(new Error(`${String(path)} is not a regular file`), { code: 'ENOTREG' });
  }
  return { fd, size: st.size };
}

/** Reads a whole small regular file beneath `root` (see openFileBeneath), refusing more than `limit` bytes. */
export function readFileBeneath(root: string | Buffer, path: string | Buffer, limit: number): Buffer {
  const { fd, size } = openFileBeneath(root, path);
  try {
    // One byte more than the size (or the limit) is asked for, so that a file that grew is caught.
    const buffer = Buffer.allocUnsafe(Math.min(size, limit) + 1);
    const got = readFullySync(fd, buffer, 0);
    if (got > limit) {
      throw Object.assign(new Error(`${String(path)} is larger than ${limit} bytes`), { code: 'EFBIG' });
    }
    return buffer.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

/** Makes everything written to the filesystem holding `path` durable, with one syncfs(2). */
export function syncFilesystem(path: string): void {
  const fd = openSync(path, constants.O_RDONLY);
  try {
    fsops().syncFilesystem(fd);
  } finally {
    closeSync(fd);
  }
}
