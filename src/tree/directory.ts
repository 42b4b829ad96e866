/** Trees from and to real directories: owners, modes, xattrs, devices, hardlinks, mtimes. */
import { spawn } from 'node:child_process';
import { constants, lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { chmod, lchown, link, lutimes, mkdir, open, symlink } from 'node:fs/promises';
import { createServer } from 'node:net';
import { writeFully } from '../util/write.ts';
import { fileContent } from './content.ts';
import { TreeError } from './errors.ts';
import { type DirInode, decodeDevice, fsPath, type Inode, type Tree, typeFromMode, walk } from './model.ts';
import { readTreeXattrs, writeTreeXattrs } from './xattrs.ts';

export interface FromDirectoryOptions {
  /** Read extended attributes (default true). */
  xattrs?: boolean;
}

/**
 * Reads a directory into a tree. File contents stay on disk and are read when needed.
 * Metadata is read with synchronous calls: thousands of small stat calls are several times
 * faster that way than through the thread pool.
 */
export async function treeFromDirectory(dir: string, options: FromDirectoryOptions = {}): Promise<Tree> {
  const base = Buffer.from(dir, 'utf8').toString('latin1');
  // getfattr runs while the tree is walked; its result is attached afterwards.
  const pendingXattrs = options.xattrs === false ? undefined : readTreeXattrs(dir);
  pendingXattrs?.catch(() => {}); // a failed walk must not leave it unhandled
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
    const common = {
      mode: Number(st.mode) & 0o7777,
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtime: { sec: Number(st.mtimeNs / 1_000_000_000n), nsec: Number(st.mtimeNs % 1_000_000_000n) },
      xattrs: new Map<string, Uint8Array>(),
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
  for (const [rel, values] of (await pendingXattrs) ?? []) {
    let inode: Inode | undefined = root;
    for (const name of rel === '' ? [] : rel.split('/'))
      inode = inode?.type === 'dir' ? inode.children.get(name) : undefined;
    // Absent only if the directory changed between the two walks.
    if (inode) inode.xattrs = values;
  }
  return { root };
}

function runTool(command: string, args: (string | Buffer)[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args as string[], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(err.trim() || `${command} failed`)),
    );
  });
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

/**
 * Writes a tree into `dir` (created if missing; must not contain the tree's paths yet).
 * Nothing is created outside `dir`: every parent is a directory this function created, and
 * files are opened with O_EXCL | O_NOFOLLOW. Order matters: contents, owners, xattrs (chown
 * would clear security.capability), modes (chown clears setuid), then times, deepest first.
 */
export async function writeTreeToDirectory(tree: Tree, dir: string): Promise<void> {
  const base = Buffer.from(dir, 'utf8').toString('latin1');
  await mkdir(dir, { recursive: true });
  const created: { path: string; inode: Inode }[] = [];
  for (const { path: rel, inode, linkOf } of walk(tree)) {
    const path = rel === '' ? base : `${base}/${rel}`;
    const p = fsPath(path);
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
          await runTool('mknod', [
            p,
            inode.type === 'char' ? 'c' : 'b',
            String(inode.rdev.major),
            String(inode.rdev.minor),
          ]);
          break;
        case 'fifo':
          await runTool('mkfifo', [p]);
          break;
        case 'socket':
          await makeSocket(p);
          break;
      }
      await lchown(p, inode.uid, inode.gid);
    } catch (error) {
      throw new TreeError('TREE_EXTRACT', `cannot create ${path}: ${(error as Error).message}`, {
        subject: path,
        cause: error,
      });
    }
    created.push({ path, inode });
  }
  await writeTreeXattrs(created.map(({ path, inode }) => [path, inode.xattrs]));
  for (const { path, inode } of created) if (inode.type !== 'symlink') await chmod(fsPath(path), inode.mode);
  const precise = new Map<string, string[]>();
  for (const { path, inode } of created.reverse()) {
    const { sec, nsec } = inode.mtime;
    await lutimes(fsPath(path), sec + nsec / 1e9, sec + nsec / 1e9);
    const utf8 = Buffer.from(path, 'latin1').toString('utf8');
    if (nsec !== 0 && sec >= 0 && Buffer.from(utf8, 'utf8').toString('latin1') === path) {
      const stamp = `@${sec}.${String(nsec).padStart(9, '0')}`;
      precise.set(stamp, [...(precise.get(stamp) ?? []), utf8]);
    }
  }
  await setPreciseTimes(precise);
}

/**
 * Node sets times from a double, which cannot hold a 2020s date to the nanosecond; GNU touch
 * can. Paths sharing a timestamp go in one call (a root filesystem has few distinct ones).
 */
async function setPreciseTimes(groups: Map<string, string[]>): Promise<void> {
  for (const [stamp, paths] of groups) {
    for (let i = 0; i < paths.length; i += 500) {
      await runTool('touch', ['-h', '-c', '-d', stamp, '--', ...paths.slice(i, i + 500)]);
    }
  }
}
