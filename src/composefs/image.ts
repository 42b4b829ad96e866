/**
 * composefs metadata images: an EROFS image after a 32-byte composefs header, in which regular
 * files carry overlayfs `metacopy` (their fs-verity digest) and `redirect` (their object path)
 * xattrs instead of data. Written bit-identical to mkcomposefs for format versions 0 and 1, and
 * read back into the composefs tree the way composefs-info reads it.
 */
import { ErofsImage, type ErofsInode, type ErofsNode, writeErofsImage } from '../erofs/index.ts';
import { fsverityDigest } from '../verity/index.ts';
import {
  type CfsEntry,
  type CfsNode,
  ComposefsError,
  DIGEST_SIZE,
  getXattr,
  INLINE_CONTENT_MAX,
  isDir,
  isRegular,
  S_IFCHR,
  S_IFMT,
  S_IFREG,
  setXattr,
} from './model.ts';

export const HEADER_MAGIC = 0xd078629a;
export const HEADER_VERSION = 1;
const HEADER_SIZE = 32;
const FLAG_HAS_ACL = 1;

const TRUSTED_OVERLAY = 'trusted.overlay.';
const ESCAPED_OVERLAY = 'trusted.overlay.overlay.';
const USER_OVERLAY = 'user.overlay.';
const METACOPY = `${TRUSTED_OVERLAY}metacopy`;
const REDIRECT = `${TRUSTED_OVERLAY}redirect`;
const OPAQUE = `${TRUSTED_OVERLAY}opaque`;
const FS_VERITY_HASH_SHA256 = 1;
const EMPTY = new Uint8Array(0);

export type FormatVersion = 0 | 1;

export interface ComposefsImageResult {
  image: Buffer;
  /** fs-verity SHA-256 digest of the image. */
  digest: Buffer;
  /** The format version written (0 is raised to 1 when whiteouts need it and `maxVersion` allows). */
  version: FormatVersion;
}

const isWhiteout = (n: CfsNode) => (n.mode & S_IFMT) === S_IFCHR && n.rdev === 0;

function hasWhiteouts(root: CfsNode): boolean {
  const stack = [root];
  while (stack.length) {
    const n = stack.pop()!;
    if (isWhiteout(n)) return true;
    for (const e of n.children ?? []) if (!e.link) stack.push(e.node);
  }
  return false;
}

/** The EROFS nodes of a composefs tree, with the overlayfs xattrs that make it work. */
function toErofs(root: CfsNode, version: FormatVersion): { root: ErofsNode; hasAcl: boolean } {
  const converted = new Map<CfsNode, ErofsNode>();
  let hasAcl = false;

  const convert = (node: CfsNode, parent: ErofsNode | undefined): ErofsNode => {
    const out: ErofsNode = {
      mode: node.mode,
      uid: node.uid,
      gid: node.gid,
      nlink: node.nlink,
      mtime: node.mtime,
      rdev: node.rdev,
      xattrs: [],
    };
    converted.set(node, out);
    const xattrs: CfsNode = { ...node, xattrs: [] };
    // Escape the image's own trusted.overlay.* xattrs so overlayfs shows them instead of using them.
    for (const [name, value] of node.xattrs) {
      setXattr(
        xattrs,
        name.startsWith(TRUSTED_OVERLAY) ? ESCAPED_OVERLAY + name.slice(TRUSTED_OVERLAY.length) : name,
        value,
      );
      if (name === 'system.posix_acl_access' || name === 'system.posix_acl_default') hasAcl = true;
    }
    const type = node.mode & S_IFMT;
    if (type === S_IFREG && node.size > 0 && node.content === undefined) {
      const metacopy = node.digest
        ? Buffer.concat([Buffer.from([0, 4 + DIGEST_SIZE, 0, FS_VERITY_HASH_SHA256]), node.digest])
        : EMPTY;
      setXattr(xattrs, METACOPY, metacopy);
      if (node.payload) {
        setXattr(
          xattrs,
          REDIRECT,
          Buffer.from(node.payload.startsWith('/') ? node.payload : `/${node.payload}`, 'latin1'),
        );
      }
      out.data = { kind: 'external', size: node.size };
    } else if (type === S_IFREG && node.content !== undefined && node.size > 0) {
      out.data = { kind: 'bytes', bytes: node.content };
    } else if ((node.mode & S_IFMT) === 0o120000) {
      out.symlink = node.payload;
    }
    if (isWhiteout(node) && parent) {
      // A whiteout inside the image must not act as one on the overlay mount: store it as an
      // escaped (and userxattr) whiteout file, and mark its directory.
      out.mode = S_IFREG | (node.mode & 0o7777);
      setXattr(xattrs, `${ESCAPED_OVERLAY}whiteout`, EMPTY);
      setXattr(xattrs, `${USER_OVERLAY}whiteout`, EMPTY);
      const marks: [string, Uint8Array][] = [
        [`${ESCAPED_OVERLAY}whiteouts`, EMPTY],
        [`${USER_OVERLAY}whiteouts`, EMPTY],
      ];
      if (version >= 1)
        marks.push(
          [`${ESCAPED_OVERLAY}opaque`, Buffer.from('x')],
          [`${USER_OVERLAY}opaque`, Buffer.from('x')],
        );
      for (const [name, value] of marks) {
        const i = parent.xattrs.findIndex((x) => x.name === name);
        if (i >= 0) parent.xattrs.splice(i, 1);
        parent.xattrs.push({ name, value });
      }
    }
    out.xattrs.push(...xattrs.xattrs.map(([name, value]) => ({ name, value })));
    if (isDir(node)) {
      out.children = (node.children ?? []).map((e: CfsEntry) =>
        e.link
          ? { name: e.name, node: e.node as unknown as ErofsNode, link: true }
          : { name: e.name, node: convert(e.node, out) },
      );
    }
    return out;
  };

  const erofsRoot = convert(root, undefined);
  // Hardlinks refer to nodes converted anywhere in the tree.
  const fix = (n: ErofsNode) => {
    for (const e of n.children ?? []) {
      if (e.link) e.node = converted.get(e.node as unknown as CfsNode)!;
      else fix(e.node);
    }
  };
  fix(erofsRoot);

  // The root is opaque, and gets whiteouts for the 256 object directories 00..ff so that the
  // object store (the data-only lower layer) never shows through.
  erofsRoot.xattrs = erofsRoot.xattrs.filter((x) => x.name !== OPAQUE);
  erofsRoot.xattrs.push({ name: OPAQUE, value: Buffer.from('y') });
  const selinux = getXattr(root, 'security.selinux');
  const children = erofsRoot.children ?? [];
  const names = new Set(children.map((c) => c.name));
  for (let i = 0; i < 256; i++) {
    const name = i.toString(16).padStart(2, '0');
    if (names.has(name)) continue;
    children.push({
      name,
      node: {
        mode: S_IFCHR | 0o644,
        uid: root.uid,
        gid: root.gid,
        nlink: 1,
        mtime: root.mtime,
        rdev: 0,
        xattrs: selinux ? [{ name: 'security.selinux', value: selinux }] : [],
      },
    });
  }
  erofsRoot.children = children;
  return { root: erofsRoot, hasAcl };
}

function header(version: FormatVersion, hasAcl: boolean): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  b.writeUInt32LE(HEADER_MAGIC, 0);
  b.writeUInt32LE(HEADER_VERSION, 4);
  b.writeUInt32LE(hasAcl ? FLAG_HAS_ACL : 0, 8);
  b.writeUInt32LE(version, 12);
  return b;
}

/** In-memory sink: metadata images are small. */
function memorySink() {
  const parts: [Uint8Array, number][] = [];
  let size = 0;
  return {
    sink: {
      async write(data: Uint8Array, position: number) {
        parts.push([data, position]);
      },
      async finish(total: number) {
        size = total;
      },
    },
    result(): Buffer {
      const out = Buffer.alloc(size);
      for (const [data, at] of parts) out.set(data, at);
      return out;
    },
  };
}

/**
 * Writes the composefs image of `root`. `version` is the minimum format version; like
 * mkcomposefs, a tree with whiteouts is written as version 1 when `maxVersion` allows it.
 */
export async function writeComposefsImage(
  root: CfsNode,
  options: { version?: FormatVersion; maxVersion?: FormatVersion } = {},
): Promise<ComposefsImageResult> {
  if (!isDir(root)) throw new ComposefsError('COMPOSEFS_UNREPRESENTABLE', 'the root must be a directory');
  let version = options.version ?? 1;
  const maxVersion = Math.max(version, options.maxVersion ?? version) as FormatVersion;
  if (version < 1 && maxVersion >= 1 && hasWhiteouts(root)) version = 1;
  const { root: erofsRoot, hasAcl } = toErofs(root, version);
  const memory = memorySink();
  await writeErofsImage(erofsRoot, memory.sink, { header: header(version, hasAcl) });
  const image = memory.result();
  return { image, digest: await fsverityDigest(image), version };
}

// ---------------------------------------------------------------------------------------------
// Reading

/** Reads a composefs image back into its composefs tree (what `composefs-info dump` shows). */
export function readComposefsImage(path: string): { root: CfsNode; version: number } {
  const image = ErofsImage.open(path);
  try {
    const head = image.read(0, HEADER_SIZE);
    if (head.readUInt32LE(0) !== HEADER_MAGIC) {
      throw new ComposefsError('COMPOSEFS_BAD_IMAGE', `${path} has no composefs header`, { subject: path });
    }
    if (head.readUInt32LE(4) !== HEADER_VERSION) {
      throw new ComposefsError('COMPOSEFS_BAD_IMAGE', `${path}: unsupported composefs header version`, {
        subject: path,
      });
    }
    const nodes = new Map<number, CfsNode>();
    const onPath = new Set<number>();
    const build = (inode: ErofsInode, depth: number): CfsNode => {
      if (depth > 4096) image.corrupt('directories nest too deeply');
      const node: CfsNode = {
        mode: inode.mode,
        size: inode.size,
        nlink: inode.nlink,
        uid: inode.uid,
        gid: inode.gid,
        rdev: (inode.mode & S_IFMT) === S_IFCHR || (inode.mode & S_IFMT) === 0o060000 ? inode.raw : 0,
        mtime: inode.mtime,
        xattrs: [],
      };
      nodes.set(inode.nid, node);
      if (inode.type === 'symlink') node.payload = inode.target;
      else if (inode.type === 'file' && inode.size > 0 && inode.layout !== 4) {
        if (inode.size > INLINE_CONTENT_MAX) image.corrupt(`inline file inode ${inode.nid} is too large`);
        node.content = image.readData(inode, 0, inode.size);
      }
      for (const [name, value] of image.xattrs(inode)) applyXattr(node, name, value);
      if (inode.type === 'dir') {
        onPath.add(inode.nid);
        const children: CfsEntry[] = [];
        for (const e of image.readDir(inode)) {
          if (e.name === '.' || e.name === '..') continue;
          const known = nodes.get(e.nid);
          if (known) {
            if (isDir(known) || onPath.has(e.nid))
              image.corrupt(`directory inode ${e.nid} is reachable twice`);
            children.push({ name: e.name, node: known, link: true });
            continue;
          }
          const child = image.inode(e.nid);
          if (child.type === 'char' && child.raw === 0) continue; // the root's overlay whiteouts
          children.push({ name: e.name, node: build(child, depth + 1) });
        }
        children.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
        node.children = children;
        onPath.delete(inode.nid);
      }
      return node;
    };
    const root = build(image.inode(image.rootNid), 0);
    if (!isDir(root)) image.corrupt('the root is not a directory');
    return { root, version: head.readUInt32LE(12) };
  } finally {
    image.close();
  }
}

/** Undoes the writer's overlayfs xattrs, as composefs-info does. */
function applyXattr(node: CfsNode, name: string, value: Buffer): void {
  if (name === REDIRECT) {
    if (isRegular(node)) {
      // composefs-info drops the leading '/' and reads one byte further, stopping at a NUL.
      const start = value.length > 1 && value[0] === 0x2f ? 1 : 0;
      const bytes = value.subarray(start);
      const nul = bytes.indexOf(0);
      node.payload = (nul >= 0 ? bytes.subarray(0, nul) : bytes).toString('latin1');
    }
    return;
  }
  if (name === METACOPY) {
    if (isRegular(node) && value.length === 4 + DIGEST_SIZE) node.digest = Buffer.from(value.subarray(4));
    return;
  }
  if (name === `${ESCAPED_OVERLAY}whiteout` && isRegular(node)) {
    node.mode = (node.mode & ~S_IFMT) | S_IFCHR;
    node.rdev = 0;
    node.size = 0;
    return;
  }
  if (
    name === `${ESCAPED_OVERLAY}whiteouts` ||
    name === `${USER_OVERLAY}whiteout` ||
    name === `${USER_OVERLAY}whiteouts`
  ) {
    return;
  }
  if (name.startsWith(TRUSTED_OVERLAY)) {
    if (!name.startsWith(ESCAPED_OVERLAY)) return;
    name = TRUSTED_OVERLAY + name.slice(ESCAPED_OVERLAY.length);
  }
  setXattr(node, name, value);
}
