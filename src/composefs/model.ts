/**
 * The composefs view of a tree: what a dumpfile line holds. Unlike the general tree model it
 * keeps the composefs-specific fields — the backing-file path (payload), inline content and the
 * fs-verity digest of each regular file — and which directory entry stores a hardlinked inode.
 */
import { SealError } from '../errors.ts';
import type { Timestamp } from '../tree/model.ts';

export type ComposefsErrorCode =
  | 'COMPOSEFS_BAD_DUMPFILE'
  | 'COMPOSEFS_BAD_IMAGE'
  | 'COMPOSEFS_UNREPRESENTABLE'
  | 'COMPOSEFS_OBJECT_MISMATCH'
  | 'COMPOSEFS_MOUNT';

export class ComposefsError extends SealError<ComposefsErrorCode> {}

export interface CfsNode {
  /** st_mode with the type bits. */
  mode: number;
  size: number;
  nlink: number;
  uid: number;
  gid: number;
  /** Encoded device number (character and block devices). */
  rdev: number;
  mtime: Timestamp;
  /** Regular files: the object path relative to the store; symlinks: the target. Byte string. */
  payload?: string;
  /** Regular files stored inside the image. */
  content?: Uint8Array;
  /** fs-verity SHA-256 digest of a regular file's content. */
  digest?: Uint8Array;
  /** In stored order; names are byte strings. */
  xattrs: [name: string, value: Uint8Array][];
  /** Directories: entries sorted bytewise by name. */
  children?: CfsEntry[];
}

export interface CfsEntry {
  name: string;
  node: CfsNode;
  /** This entry is a further name of a node stored at another path (a hardlink). */
  link?: boolean;
}

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const DIGEST_SIZE = 32;
/** Files up to this size are stored inside the image by Seal (and mkcomposefs). */
export const INLINE_LIMIT = 64;
/** The most content a dumpfile may inline. */
export const INLINE_CONTENT_MAX = 5000;

export const isDir = (n: CfsNode) => (n.mode & S_IFMT) === S_IFDIR;
export const isRegular = (n: CfsNode) => (n.mode & S_IFMT) === S_IFREG;

/** Sets (or replaces) an xattr, keeping the order of the others. */
export function setXattr(node: CfsNode, name: string, value: Uint8Array): void {
  const i = node.xattrs.findIndex(([n]) => n === name);
  if (i >= 0) node.xattrs.splice(i, 1);
  node.xattrs.push([name, value]);
}

export function getXattr(node: CfsNode, name: string): Uint8Array | undefined {
  return node.xattrs.find(([n]) => n === name)?.[1];
}

const joinPath = (dir: string, name: string) => (dir === '/' ? `/${name}` : `${dir}/${name}`);

/** Depth-first walk with sorted children; `linkOf` is the stored path of a hardlink's node. */
export function* walkCfs(root: CfsNode): Generator<{ path: string; node: CfsNode; linkOf?: string }> {
  // A hardlink's node may be stored later in depth-first order, so index stored paths first.
  const stored = new Map<CfsNode, string>();
  (function index(path: string, node: CfsNode) {
    stored.set(node, path);
    for (const e of node.children ?? []) if (!e.link) index(joinPath(path, e.name), e.node);
  })('/', root);
  function* visit(path: string, node: CfsNode): Generator<{ path: string; node: CfsNode; linkOf?: string }> {
    yield { path, node };
    for (const e of node.children ?? []) {
      const child = joinPath(path, e.name);
      if (e.link) yield { path: child, node: e.node, linkOf: stored.get(e.node) ?? '' };
      else yield* visit(child, e.node);
    }
  }
  yield* visit('/', root);
}
