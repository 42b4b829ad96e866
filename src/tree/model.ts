/**
 * The canonical in-memory model of a filesystem tree, shared by every reader and writer.
 *
 * Names and paths are *byte strings*: JavaScript strings whose every char code is one byte
 * (latin1-decoded). Any byte sequence a filesystem or tar header holds round-trips exactly and
 * `<` on two names compares them bytewise, as every on-disk format sorts. Use `fsPath()` to turn
 * one into a path for node:fs and `displayName()` to show it.
 *
 * Hardlinks are expressed by identity: two directory entries holding the same `Inode` object
 * are one inode with nlink 2. Directories hold their children; everything else is a leaf.
 */

export type InodeType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

export interface Timestamp {
  /** Seconds since the epoch (may be negative). */
  sec: number;
  /** Nanoseconds, 0..999999999. */
  nsec: number;
}

/** The bytes of a regular file, readable as many times as a writer needs. */
export interface Content {
  readonly size: number;
  /** Streams the content from the start, in chunks of any size. */
  read(): AsyncIterable<Uint8Array>;
  /** Where the bytes lie on disk, when they do: lets worker threads read them directly. */
  readonly source?: { path: string | Buffer; offset: number };
}

interface InodeCommon {
  /** Permission bits including setuid/setgid/sticky (mode & 0o7777); never the type bits. */
  mode: number;
  uid: number;
  gid: number;
  mtime: Timestamp;
  /** Extended attributes; keys are byte strings with their namespace (`user.x`, `security.capability`). */
  xattrs: Map<string, Uint8Array>;
}

export interface FileInode extends InodeCommon {
  type: 'file';
  content: Content;
}

export interface DirInode extends InodeCommon {
  type: 'dir';
  /** Children by name (byte string). Iterate with `sortedChildren()` for a deterministic order. */
  children: Map<string, Inode>;
}

export interface SymlinkInode extends InodeCommon {
  type: 'symlink';
  /** Link target, a byte string. */
  target: string;
}

export interface DeviceInode extends InodeCommon {
  type: 'char' | 'block';
  rdev: DeviceNumber;
}

export interface SpecialInode extends InodeCommon {
  type: 'fifo' | 'socket';
}

export interface DeviceNumber {
  major: number;
  minor: number;
}

export type Inode = FileInode | DirInode | SymlinkInode | DeviceInode | SpecialInode;

/** S_IFMT values, as on Linux and in every on-disk format Seal writes. */
export const S_IFMT = 0o170000;
export const TYPE_BITS: Record<InodeType, number> = {
  socket: 0o140000,
  symlink: 0o120000,
  file: 0o100000,
  block: 0o060000,
  dir: 0o040000,
  char: 0o020000,
  fifo: 0o010000,
};

export function typeFromMode(mode: number): InodeType | undefined {
  const bits = mode & S_IFMT;
  for (const [type, value] of Object.entries(TYPE_BITS)) if (value === bits) return type as InodeType;
  return undefined;
}

/** The full st_mode: type bits and permission bits. */
export function fullMode(inode: Inode): number {
  return TYPE_BITS[inode.type] | (inode.mode & 0o7777);
}

/** Linux's encoding of a device number (as in st_rdev / new_encode_dev). */
export function encodeDevice({ major, minor }: DeviceNumber): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

export function decodeDevice(rdev: number): DeviceNumber {
  return { major: (rdev >>> 8) & 0xfff, minor: (rdev & 0xff) | ((rdev >>> 12) & 0xfff00) };
}

export function fsPath(bytes: string): Buffer {
  return Buffer.from(bytes, 'latin1');
}

export function toByteString(bytes: Uint8Array | string): string {
  return typeof bytes === 'string'
    ? Buffer.from(bytes, 'utf8').toString('latin1')
    : Buffer.from(bytes).toString('latin1');
}

/** A byte string shown as UTF-8 (invalid sequences become U+FFFD). */
export function displayName(bytes: string): string {
  return Buffer.from(bytes, 'latin1').toString('utf8');
}

export function compareBytes(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Children of a directory sorted bytewise by name. */
export function sortedChildren(dir: DirInode): [string, Inode][] {
  return [...dir.children].sort((x, y) => compareBytes(x[0], y[0]));
}

export function emptyDir(attrs: Partial<InodeCommon> = {}): DirInode {
  return {
    type: 'dir',
    mode: 0o755,
    uid: 0,
    gid: 0,
    mtime: { sec: 0, nsec: 0 },
    xattrs: new Map(),
    ...attrs,
    children: new Map(),
  };
}

/** A whole tree: its root directory. */
export interface Tree {
  root: DirInode;
}

export interface WalkEntry {
  /** Path relative to the root, '/'-separated, no leading slash; '' for the root. Byte string. */
  path: string;
  name: string;
  inode: Inode;
  parent: DirInode | undefined;
  /** Set on the second and later paths of an inode seen before (a hardlink): the first path. */
  linkOf: string | undefined;
}

/**
 * Depth-first, pre-order walk with children sorted bytewise — the order of tar layers,
 * composefs dumpfiles and `unsquashfs -lln`. Hardlinks are reported on every path, `linkOf`
 * naming the first.
 */
export function* walk(tree: Tree): Generator<WalkEntry> {
  const seen = new Map<Inode, string>();
  function* visit(
    path: string,
    name: string,
    inode: Inode,
    parent: DirInode | undefined,
  ): Generator<WalkEntry> {
    const first = seen.get(inode);
    if (first === undefined) seen.set(inode, path);
    yield { path, name, inode, parent, linkOf: first };
    if (inode.type === 'dir' && first === undefined) {
      for (const [childName, child] of sortedChildren(inode)) {
        yield* visit(path === '' ? childName : `${path}/${childName}`, childName, child, inode);
      }
    }
  }
  yield* visit('', '', tree.root, undefined);
}

/** Number of directory entries referring to each inode (directories: 2 + subdirectories). */
export function linkCounts(tree: Tree): Map<Inode, number> {
  const counts = new Map<Inode, number>();
  for (const { inode, parent } of walk(tree)) {
    if (inode.type === 'dir') {
      counts.set(inode, 2 + [...inode.children.values()].filter((c) => c.type === 'dir').length);
    } else {
      counts.set(inode, (counts.get(inode) ?? 0) + (parent ? 1 : 0));
    }
  }
  return counts;
}

/** Symlinks followed in one lookup before it is called a loop (the kernel's limit). */
const MAX_SYMLINKS = 40;

/**
 * The inode at `path` inside the tree, following symlinks as the kernel would with the tree's
 * root as the root directory: `..` and absolute targets never leave the tree. Undefined when
 * nothing is there, or when a symlink chain loops or is too long.
 */
export function lookupFollowing(tree: Tree, path: string): Inode | undefined {
  let dirs: DirInode[] = [tree.root];
  let pending = path.split('/');
  let links = 0;
  while (pending.length > 0) {
    const name = pending.shift()!;
    if (name === '' || name === '.') continue;
    if (name === '..') {
      if (dirs.length > 1) dirs.pop();
      continue;
    }
    const child = dirs.at(-1)!.children.get(name);
    if (!child) return undefined;
    if (child.type === 'symlink') {
      if (++links > MAX_SYMLINKS) return undefined;
      if (child.target.startsWith('/')) dirs = [tree.root];
      pending = [...child.target.split('/'), ...pending];
    } else if (child.type === 'dir') {
      dirs.push(child);
    } else {
      return pending.length === 0 ? child : undefined;
    }
  }
  return dirs.at(-1);
}
