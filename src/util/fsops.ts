/**
 * The filesystem calls Node.js lacks (native/fsops.c): per-path extended attributes, device and
 * FIFO nodes, nanosecond times, and opening a path confined beneath a directory. They replace
 * every text script and command line that used to carry paths and names from inputs
 * (setfattr --restore, getfattr, mknod, mkfifo, touch).
 */
import { loadAddon } from './native.ts';

interface FsOps {
  listXattrs(path: Buffer): Buffer[];
  getXattr(path: Buffer, name: Buffer): Buffer;
  setXattr(path: Buffer, name: Buffer, value: Uint8Array): void;
  mknod(path: Buffer, mode: number, major: number, minor: number): void;
  setTimes(path: Buffer, seconds: number, nanoseconds: number): void;
  openBeneath(root: Buffer, path: Buffer, flags: number, mode: number): number;
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
