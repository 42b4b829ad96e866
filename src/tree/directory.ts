/** Trees from and to real directories: owners, modes, xattrs, devices, hardlinks, mtimes. */
import { constants, lstatSync, readdirSync, readlinkSync, realpathSync } from 'node:fs';
import { chmod, lchown, link, mkdir, open, symlink } from 'node:fs/promises';
import { createServer } from 'node:net';
import { makeNode, readXattrs, setTimes, setXattr } from '../util/fsops.ts';
import { writeFully } from '../util/write.ts';
import { fileContent } from './content.ts';
import { TreeError } from './errors.ts';
import {
  type DirInode,
  decodeDevice,
  fsPath,
  type Inode,
  type Tree,
  TYPE_BITS,
  typeFromMode,
  walk,
} from './model.ts';
import { entryNameProblem, quoteBytes, xattrsProblem } from './names.ts';

export interface FromDirectoryOptions {
  /** Read extended attributes (default true). */
  xattrs?: boolean;
}

/**
 * Reads a directory into a tree. File contents stay on disk and are read when needed.
 * Metadata is read with synchronous calls: thousands of small stat and xattr calls are several
 * times faster that way than through the thread pool. Xattrs are read per path, so `dir` may be
 * given in any form (relative, `./`-prefixed, through a symlink).
 */
export async function treeFromDirectory(dir: string, options: FromDirectoryOptions = {}): Promise<Tree> {
  // The source itself may be a symlink to the directory; nothing below it is followed.
  let resolved: string;
  try {
    resolved = realpathSync(dir);
  } catch (error) {
    throw new TreeError('TREE_NOT_A_DIRECTORY', `cannot read ${dir}: ${(error as Error).message}`, {
      subject: dir,
      cause: error,
    });
  }
  const base = Buffer.from(resolved, 'utf8').toString('latin1');
  const withXattrs = options.xattrs !== false;
  const byInode = new Map<string, Inode>();

  function load(path: string): Inode {
    const st = lstatSync(fsPath(path), { bigint: true });
    const type = typeFromMode(Number(st.mode));
    if (!type) throw new TreeError('TREE_UNSUPPORTED', `unsupported file type at ${path}`, { subject: path });
    const key = `${st.dev}:${st.ino}`;
    if (type !== 'dir' && st.nlink > 1n) {
      const seen = byInode.get(key);
      if (seen) return seen;
    }
    const xattrs = withXattrs ? readXattrs(fsPath(path)) : new Map<string, Uint8Array>();
    const problem = xattrsProblem(xattrs);
    if (problem)
      throw new TreeError('TREE_INVALID_NAME', `${displayPath(path)}: ${problem}`, { subject: path });
    const common = {
      mode: Number(st.mode) & 0o7777,
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtime: { sec: Number(st.mtimeNs / 1_000_000_000n), nsec: Number(st.mtimeNs % 1_000_000_000n) },
      xattrs,
    };
    let inode: Inode;
    switch (type) {
      case 'dir': {
        const d: DirInode = { ...common, type: 'dir', children: new Map() };
        const names = readdirSync(fsPath(path), { encoding: 'buffer' }).map((n) => n.toString('latin1'));
        for (const name of names) {
          d.children.set(name, load(`${path}/${name}`));
        }
        inode = d;
        break;
      }
      case 'file':
        inode = { ...common, type, content: fileContent(fsPath(path), Number(st.size)) };
        break;
      case 'symlink':
        inode = {
          ...common,
          type,
          target: readlinkSync(fsPath(path), { encoding: 'buffer' }).toString('latin1'),
        };
        break;
      case 'char':
      case 'block':
        inode = { ...common, type, rdev: decodeDevice(Number(st.rdev)) };
        break;
      default:
        inode = { ...common, type };
    }
    if (type !== 'dir' && st.nlink > 1n) byInode.set(key, inode);
    return inode;
  }

  const root = load(base);
  if (root.type !== 'dir')
    throw new TreeError('TREE_NOT_A_DIRECTORY', `${dir} is not a directory`, { subject: dir });
  return { root };
}

/** A path (byte string) for a message: quoted, with anything unprintable escaped. */
function displayPath(path: string): string {
  return quoteBytes(path);
}

/**
 * Creates a socket file. Node can only make one by listening on it, and unlinks it on close,
 * so the socket is bound under a temporary name and hardlinked to its place first.
 */
async function makeSocket(path: Buffer): Promise<void> {
  const temp = Buffer.concat([path, Buffer.from(`.sock-${process.pid}`)]);
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(temp.toString('utf8'), () => resolve());
  });
  try {
    await link(temp, path);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

async function writeFile(path: Buffer, inode: Extract<Inode, { type: 'file' }>): Promise<void> {
  const handle = await open(
    path,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    let position = 0;
    for await (const chunk of inode.content.read()) {
      await writeFully(handle, chunk, position);
      position += chunk.length;
    }
  } finally {
    await handle.close();
  }
}

export interface ToDirectoryOptions {
  /**
   * Only directories and regular files (hardlinks included), owned by the caller with private
   * modes, without xattrs: for archives Seal only reads from (an OCI layout in a tar), whose
   * devices, symlinks, owners and capabilities must not appear on the host.
   */
  contentsOnly?: boolean;
}

/**
 * Writes a tree into `dir` (created if missing; must not contain the tree's paths yet).
 * Nothing is created outside `dir`: every name is checked to be one path component, every
 * parent is a directory this function created, files are opened with O_EXCL | O_NOFOLLOW, and
 * owners, xattrs and times are set on the path itself, never through a symlink. Order matters:
 * contents, owners, xattrs (chown would clear security.capability), modes (chown clears
 * setuid), then times, deepest first.
 */
export async function writeTreeToDirectory(
  tree: Tree,
  dir: string,
  options: ToDirectoryOptions = {},
): Promise<void> {
  const base = Buffer.from(dir, 'utf8').toString('latin1');
  await mkdir(dir, { recursive: true });
  const created: { path: string; inode: Inode }[] = [];
  for (const { path: rel, inode, linkOf } of walk(tree)) {
    if (options.contentsOnly && inode.type !== 'dir' && inode.type !== 'file') continue;
    const path = rel === '' ? base : `${base}/${rel}`;
    const p = fsPath(path);
    const name = rel.slice(rel.lastIndexOf('/') + 1);
    const problem = (rel === '' ? undefined : entryNameProblem(name)) ?? xattrsProblem(inode.xattrs);
    if (problem) {
      throw new TreeError('TREE_INVALID_NAME', `cannot create ${displayPath(path)}: ${problem}`, {
        subject: path,
      });
    }
    try {
      if (linkOf !== undefined) {
        await link(fsPath(`${base}/${linkOf}`), p);
        continue;
      }
      switch (inode.type) {
        case 'dir':
          if (rel !== '') await mkdir(p, 0o700);
          break;
        case 'file':
          await writeFile(p, inode);
          break;
        case 'symlink':
          await symlink(fsPath(inode.target), p);
          break;
        case 'char':
        case 'block':
          makeNode(p, TYPE_BITS[inode.type] | 0o600, inode.rdev.major, inode.rdev.minor);
          break;
        case 'fifo':
          makeNode(p, TYPE_BITS.fifo | 0o600);
          break;
        case 'socket':
          await makeSocket(p);
          break;
      }
      if (options.contentsOnly) continue;
      await lchown(p, inode.uid, inode.gid);
      for (const [xattr, value] of inode.xattrs) setXattr(p, xattr, value);
    } catch (error) {
      throw new TreeError('TREE_EXTRACT', `cannot create ${displayPath(path)}: ${(error as Error).message}`, {
        subject: path,
        cause: error,
      });
    }
    created.push({ path, inode });
  }
  for (const { path, inode } of created) if (inode.type !== 'symlink') await chmod(fsPath(path), inode.mode);
  for (const { path, inode } of created.reverse()) setTimes(fsPath(path), inode.mtime.sec, inode.mtime.nsec);
}
