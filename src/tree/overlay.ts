/**
 * Image-spec layer semantics, implemented once for every consumer: applying tar layers onto a
 * tree (whiteouts, opaque directories, replaced directories, hardlinks across layers), and the
 * single-layer view that keeps whiteouts for per-layer filesystem images.
 * Hostile entries (escaping paths, paths through symlinks, dangling or escaping hardlinks,
 * conflicting duplicates) are refused with a TreeError.
 */
import { readTar, type TarEntry } from '../tar/index.ts';
import { TreeError } from './errors.ts';
import { type DirInode, emptyDir, type Inode, type Tree } from './model.ts';
import type { Spool } from './spool.ts';

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_WHITEOUT = '.wh..wh..opq';

/** Splits a tar path into safe components: leading '/' and '.' dropped, '..' refused. */
export function pathComponents(raw: string): string[] {
  const parts: string[] = [];
  for (const part of raw.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      throw new TreeError('TREE_UNSAFE_PATH', `layer entry ${JSON.stringify(raw)} has a ".." component`, {
        subject: raw,
      });
    }
    parts.push(part);
  }
  return parts;
}

export interface TarTreeOptions {
  /**
   * The permission bits of symlinks: 'linux' (default) makes them 0777 whatever the tar header
   * says, as Linux shows every symlink once extracted (and as umoci, tar, mksquashfs and
   * mkfs.erofs from a directory give); 'header' keeps the header's bits, as composefs-rs's tar
   * to composefs mapping does (its EROFS inode mode is the file type | the header's mode), which
   * composefs digests must match.
   */
  symlinkModes?: 'linux' | 'header';
}

/** Attributes of a tar entry as an inode (files get their content from the spool). */
async function inodeOf(entry: TarEntry, spool: Spool, options: TarTreeOptions = {}): Promise<Inode> {
  const common = {
    mode: entry.type === 'symlink' && options.symlinkModes !== 'header' ? 0o777 : entry.mode,
    uid: entry.uid,
    gid: entry.gid,
    mtime: entry.mtime,
    xattrs: entry.xattrs,
  };
  switch (entry.type) {
    case 'file':
      return { ...common, type: 'file', content: await spool.store(entry.body, entry.size) };
    case 'dir':
      return { ...common, type: 'dir', children: new Map() };
    case 'symlink':
      return { ...common, type: 'symlink', target: entry.linkname };
    case 'char':
    case 'block':
      return { ...common, type: entry.type, rdev: { major: entry.devmajor, minor: entry.devminor } };
    case 'fifo':
      return { ...common, type: 'fifo' };
    case 'hardlink':
      throw new Error('hardlinks are resolved by the caller');
  }
}

/**
 * Looks up the directory holding `parts`' last component, creating missing parents (by
 * `implicit`, default: an empty root-owned 0755 directory).
 */
function parentDir(
  root: DirInode,
  parts: string[],
  raw: string,
  create: boolean,
  implicit: (path: string[]) => DirInode = () => emptyDir(),
): DirInode | undefined {
  let dir = root;
  for (let i = 0; i < parts.length - 1; i++) {
    const name = parts[i]!;
    let child = dir.children.get(name);
    if (!child) {
      if (!create) return undefined;
      child = implicit(parts.slice(0, i + 1));
      dir.children.set(name, child);
    }
    if (child.type === 'symlink') {
      throw new TreeError(
        'TREE_SYMLINK_ESCAPE',
        `layer entry ${JSON.stringify(raw)} goes through the symlink ${parts.slice(0, i + 1).join('/')}`,
        { subject: raw },
      );
    }
    if (child.type !== 'dir') {
      throw new TreeError(
        'TREE_NOT_A_DIRECTORY',
        `layer entry ${JSON.stringify(raw)}: ${parts.slice(0, i + 1).join('/')} is not a directory`,
        { subject: raw },
      );
    }
    dir = child;
  }
  return dir;
}

function resolveHardlink(root: DirInode, entry: TarEntry): Inode {
  const parts = pathComponents(entry.linkname);
  const dir = parts.length ? parentDir(root, parts, entry.linkname, false) : undefined;
  const target = dir?.children.get(parts.at(-1)!);
  if (!target || target.type === 'dir') {
    throw new TreeError(
      'TREE_HARDLINK_TARGET',
      `hardlink ${JSON.stringify(entry.path)} points to ${JSON.stringify(entry.linkname)}, which is ${target ? 'a directory' : 'missing'}`,
      { subject: entry.path },
    );
  }
  return target;
}

/** Per-layer bookkeeping: what this layer added, so whiteouts only hide lower layers. */
class LayerState {
  added = new Map<DirInode, Set<string>>();
  seen = new Map<string, Inode['type']>();

  markAdded(dir: DirInode, name: string): void {
    let names = this.added.get(dir);
    if (!names) this.added.set(dir, (names = new Set()));
    names.add(name);
  }

  isAdded(dir: DirInode, name: string): boolean {
    return this.added.get(dir)?.has(name) ?? false;
  }

  checkDuplicate(parts: string[], type: TarEntry['type'], raw: string): void {
    const key = parts.join('/');
    const previous = this.seen.get(key);
    if (previous !== undefined && !(previous === 'dir' && type === 'dir')) {
      throw new TreeError('TREE_DUPLICATE_ENTRY', `layer has ${JSON.stringify(raw)} more than once`, {
        subject: raw,
      });
    }
    this.seen.set(key, type === 'hardlink' ? 'file' : type);
  }
}

/** Applies one (decompressed) tar layer onto `tree` with the image-spec's overlay semantics. */
export async function applyLayer(
  tree: Tree,
  tar: AsyncIterable<Uint8Array>,
  spool: Spool,
  options: TarTreeOptions = {},
): Promise<void> {
  const state = new LayerState();
  for await (const entry of readTar(tar)) {
    const parts = pathComponents(entry.path);
    if (parts.length === 0) {
      if (entry.type !== 'dir') {
        throw new TreeError(
          'TREE_UNSAFE_PATH',
          `layer entry ${JSON.stringify(entry.path)} replaces the root`,
          {
            subject: entry.path,
          },
        );
      }
      Object.assign(tree.root, { mode: entry.mode, uid: entry.uid, gid: entry.gid, mtime: entry.mtime });
      tree.root.xattrs = entry.xattrs;
      continue;
    }
    const name = parts.at(-1)!;
    const dir = parentDir(tree.root, parts, entry.path, true)!;
    if (name === OPAQUE_WHITEOUT) {
      for (const child of [...dir.children.keys()])
        if (!state.isAdded(dir, child)) dir.children.delete(child);
      continue;
    }
    if (name.startsWith(WHITEOUT_PREFIX)) {
      const hidden = name.slice(WHITEOUT_PREFIX.length);
      // `.wh..wh.*` other than the opaque marker are aufs bookkeeping, not whiteouts.
      if (!hidden.startsWith(WHITEOUT_PREFIX) && !state.isAdded(dir, hidden)) dir.children.delete(hidden);
      continue;
    }
    state.checkDuplicate(parts, entry.type, entry.path);
    const existing = dir.children.get(name);
    if (entry.type === 'dir' && existing?.type === 'dir') {
      // A directory over a directory keeps the lower contents and takes the new attributes.
      Object.assign(existing, { mode: entry.mode, uid: entry.uid, gid: entry.gid, mtime: entry.mtime });
      existing.xattrs = entry.xattrs;
    } else {
      const inode =
        entry.type === 'hardlink' ? resolveHardlink(tree.root, entry) : await inodeOf(entry, spool, options);
      dir.children.set(name, inode);
    }
    state.markAdded(dir, name);
  }
}

/** Merges layers bottom-up into one tree (the image's root filesystem). */
export async function mergeLayers(
  layers: AsyncIterable<Uint8Array>[],
  spool: Spool,
  options: TarTreeOptions = {},
): Promise<Tree> {
  const tree: Tree = { root: emptyDir() };
  for (const layer of layers) await applyLayer(tree, layer, spool, options);
  return tree;
}

/** A single tar layer as a tree (whiteouts applied to nothing, i.e. dropped). */
export async function treeFromTar(
  tar: AsyncIterable<Uint8Array>,
  spool: Spool,
  options: TarTreeOptions = {},
): Promise<Tree> {
  return mergeLayers([tar], spool, options);
}

export interface LayerTreeOptions extends TarTreeOptions {
  /**
   * 'oci' keeps `.wh.` entries as the empty files they are in the tar; 'overlayfs' turns them
   * into what overlayfs reads from a lower layer: a 0/0 character device for a whiteout and
   * `<xattrPrefix>opaque=y` on an opaque directory.
   */
  whiteouts: 'oci' | 'overlayfs';
  /** Overlayfs xattr namespace: 'trusted.overlay.' (default) or 'user.overlay.' (userxattr mounts). */
  xattrPrefix?: 'trusted.overlay.' | 'user.overlay.';
  /** The merged tree below this layer, to materialise hardlinks that point into lower layers. */
  lower?: Tree;
  /** Told of each hardlink to a lower layer's file that became a copy in this layer. */
  onLowerHardlink?: (path: string, target: string) => void;
}

/**
 * One layer on its own, as a filesystem image of that layer must hold it: its entries, with
 * whiteouts kept in the requested form. Hardlinks to files of lower layers become copies of the
 * lower inode, since a per-layer filesystem cannot link across layers (atomfs does the same):
 * the copy has the lower file's content and attributes, and the layer's links to the same lower
 * file share one copy, but the lower file and the copy are two inodes, each with its own link
 * count. `onLowerHardlink` is told of each.
 */
export async function layerTree(
  tar: AsyncIterable<Uint8Array>,
  spool: Spool,
  options: LayerTreeOptions,
): Promise<Tree> {
  const tree: Tree = { root: emptyDir() };
  const prefix = options.xattrPrefix ?? 'trusted.overlay.';
  const state = new LayerState();
  /** Paths this layer put an overlayfs whiteout at. */
  const whiteouts = new Set<string>();
  /** The copies made of lower files this layer links to, by lower inode. */
  const copies = new Map<Inode, Inode>();
  // A directory the layer only implies must not shadow the lower one's owner, mode and mtime.
  const implicit = (path: string[]): DirInode => {
    let lower: Inode | undefined = options.lower?.root;
    for (const name of path) lower = lower?.type === 'dir' ? lower.children.get(name) : undefined;
    return lower?.type === 'dir'
      ? {
          ...lower,
          xattrs: new Map([...lower.xattrs].filter(([k]) => !k.startsWith(prefix))),
          children: new Map(),
        }
      : emptyDir();
  };
  for await (const entry of readTar(tar)) {
    const parts = pathComponents(entry.path);
    if (parts.length === 0) {
      if (entry.type === 'dir') {
        Object.assign(tree.root, { mode: entry.mode, uid: entry.uid, gid: entry.gid, mtime: entry.mtime });
        tree.root.xattrs = new Map([...tree.root.xattrs, ...entry.xattrs]);
      }
      continue;
    }
    const name = parts.at(-1)!;
    const dir = parentDir(tree.root, parts, entry.path, true, implicit)!;
    if (options.whiteouts === 'overlayfs' && name.startsWith(WHITEOUT_PREFIX)) {
      if (name === OPAQUE_WHITEOUT) dir.xattrs.set(`${prefix}opaque`, Buffer.from('y'));
      else if (!name.slice(WHITEOUT_PREFIX.length).startsWith(WHITEOUT_PREFIX)) {
        const hidden = name.slice(WHITEOUT_PREFIX.length);
        const key = [...parts.slice(0, -1), hidden].join('/');
        const present = dir.children.get(hidden);
        // An entry of this layer already stands in the whiteout's place: it hides the lower one
        // by itself, except that a directory must also stop merging with the lower directory.
        if (present && state.seen.has(key) && !whiteouts.has(key)) {
          if (present.type === 'dir') present.xattrs.set(`${prefix}opaque`, Buffer.from('y'));
          continue;
        }
        state.checkDuplicate([...parts.slice(0, -1), hidden], 'char', entry.path);
        whiteouts.add(key);
        dir.children.set(hidden, {
          type: 'char',
          rdev: { major: 0, minor: 0 },
          mode: 0,
          uid: entry.uid,
          gid: entry.gid,
          mtime: entry.mtime,
          xattrs: new Map(),
        });
      }
      continue;
    }
    // A whiteout of this layer for the same name only hid the lower entry: this one replaces it.
    const replacesWhiteout = whiteouts.delete(parts.join('/'));
    if (replacesWhiteout) state.seen.delete(parts.join('/'));
    state.checkDuplicate(parts, entry.type, entry.path);
    const existing = dir.children.get(name);
    if (replacesWhiteout && entry.type === 'dir') {
      const opaque = (await inodeOf(entry, spool, options)) as DirInode;
      opaque.xattrs.set(`${prefix}opaque`, Buffer.from('y'));
      dir.children.set(name, opaque);
      continue;
    }
    if (entry.type === 'dir' && existing?.type === 'dir') {
      // Keep an opaque marker set by an earlier `.wh..wh..opq` entry of this layer.
      const opaque = existing.xattrs.get(`${prefix}opaque`);
      Object.assign(existing, { mode: entry.mode, uid: entry.uid, gid: entry.gid, mtime: entry.mtime });
      existing.xattrs = new Map(entry.xattrs);
      if (opaque) existing.xattrs.set(`${prefix}opaque`, opaque);
      continue;
    }
    if (entry.type === 'hardlink') {
      let target: Inode;
      try {
        target = resolveHardlink(tree.root, entry);
      } catch (error) {
        if (!options.lower) throw error;
        const lowerTarget = resolveHardlink(options.lower.root, entry);
        let copy = copies.get(lowerTarget);
        if (!copy) {
          copy = { ...lowerTarget, xattrs: new Map(lowerTarget.xattrs) } as Inode;
          copies.set(lowerTarget, copy);
        }
        target = copy;
        options.onLowerHardlink?.(entry.path, entry.linkname);
      }
      dir.children.set(name, target);
    } else {
      dir.children.set(name, await inodeOf(entry, spool, options));
    }
  }
  return tree;
}
