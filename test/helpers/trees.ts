/**
 * Test helpers for the tree model: a generator of trees full of edge cases and a comparison
 * with a readable report, shared by every reader/writer test (tar, squashfs, EROFS, images).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  bufferContent,
  type DirInode,
  displayName,
  emptyDir,
  type Inode,
  type Tree,
  toByteString,
  walk,
} from '../../src/tree/index.ts';

/** A small deterministic PRNG (mulberry32) so generated trees and fuzz cases are reproducible. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomBytes(random: () => number, size: number): Buffer {
  const data = Buffer.alloc(size);
  for (let i = 0; i < size; i++) data[i] = (random() * 256) | 0;
  return data;
}

export interface EdgeCaseOptions {
  /** Include trusted.* xattrs (need root to write; default true). */
  trusted?: boolean;
  /** Include sockets (tar cannot carry them; default false). */
  sockets?: boolean;
  /** Include non-UTF-8 names (default true). */
  nonUtf8?: boolean;
  /** Number of extra random files (default 50). */
  files?: number;
  /** Largest random file size (default 300 KiB). */
  maxFileSize?: number;
}

const attrs = (over: Partial<Inode> = {}) => ({
  mode: 0o644,
  uid: 0,
  gid: 0,
  mtime: { sec: 1_700_000_000, nsec: 0 },
  xattrs: new Map<string, Uint8Array>(),
  ...over,
});

function file(data: Uint8Array, over: Partial<Inode> = {}): Inode {
  return { ...attrs(over), type: 'file', content: bufferContent(data) } as Inode;
}

function dir(over: Partial<Inode> = {}): DirInode {
  return { ...emptyDir(), ...attrs({ mode: 0o755, ...over }), type: 'dir', children: new Map() } as DirInode;
}

/**
 * A tree with every file type and the awkward cases writers get wrong: hardlinks, xattrs in
 * several namespaces (incl. security.capability), setuid/setgid/sticky, large ids, empty and
 * all-zero files, sizes around 4 KiB and 128 KiB, 255-byte and non-UTF-8 names, deep nesting,
 * long symlink targets, and random files.
 */
export function generateEdgeCaseTree(seed: number, options: EdgeCaseOptions = {}): Tree {
  const random = prng(seed);
  const root = dir({ mtime: { sec: 1_700_000_000, nsec: 0 } });
  const tree: Tree = { root };
  const add = (parent: DirInode, name: string, inode: Inode) =>
    parent.children.set(toByteString(name), inode);

  const files = dir();
  add(root, 'files', files);
  add(files, 'empty', file(new Uint8Array(0)));
  for (const size of [1, 63, 64, 65, 511, 512, 4095, 4096, 4097, 8192, 131071, 131072, 131073, 262145]) {
    add(files, `size-${size}`, file(randomBytes(random, size)));
  }
  add(files, 'zeros-300k', file(new Uint8Array(300 * 1024)));
  const mixed = randomBytes(random, 400 * 1024);
  mixed.fill(0, 128 * 1024, 256 * 1024);
  add(files, 'sparse-middle', file(mixed));
  add(files, 'setuid', file(Buffer.from('#!/bin/sh\n'), { mode: 0o4755 }));
  add(files, 'setgid', file(Buffer.from('x'), { mode: 0o2755 }));
  add(files, 'big-ids', file(Buffer.from('ids'), { uid: 100_000, gid: 4_000_000 }));
  add(files, 'no-perms', file(Buffer.from('secret'), { mode: 0o000 }));
  add(files, 'mtime-nsec', file(Buffer.from('t'), { mtime: { sec: 1_600_000_000, nsec: 123_456_789 } }));
  const dup = randomBytes(random, 70_000);
  add(files, 'dup-a', file(dup));
  add(files, 'dup-b', file(Buffer.from(dup)));

  const links = dir();
  add(root, 'links', links);
  const shared = file(Buffer.from('shared content of a hardlinked file\n'), { uid: 1000, gid: 1000 });
  add(links, 'hard-1', shared);
  add(links, 'hard-2', shared);
  add(files, 'hard-3', shared);
  add(links, 'sym-rel', { ...attrs({ mode: 0o777 }), type: 'symlink', target: '../files/size-1' } as Inode);
  add(links, 'sym-abs', { ...attrs({ mode: 0o777 }), type: 'symlink', target: '/etc/passwd' } as Inode);
  add(links, 'sym-dangling', { ...attrs({ mode: 0o777 }), type: 'symlink', target: 'nowhere' } as Inode);
  add(links, 'sym-long', {
    ...attrs({ mode: 0o777 }),
    type: 'symlink',
    target: `${'long/'.repeat(200)}end`,
  } as Inode);

  const dev = dir();
  add(root, 'dev', dev);
  add(dev, 'null', { ...attrs({ mode: 0o666 }), type: 'char', rdev: { major: 1, minor: 3 } } as Inode);
  add(dev, 'sda1', {
    ...attrs({ mode: 0o660, gid: 6 }),
    type: 'block',
    rdev: { major: 8, minor: 1 },
  } as Inode);
  add(dev, 'bigdev', { ...attrs(), type: 'char', rdev: { major: 300, minor: 70000 } } as Inode);
  add(dev, 'fifo', { ...attrs(), type: 'fifo' } as Inode);
  if (options.sockets) add(dev, 'socket', { ...attrs({ mode: 0o755 }), type: 'socket' } as Inode);

  const x = dir();
  add(root, 'xattrs', x);
  const withX = file(Buffer.from('x'));
  withX.xattrs.set('user.comment', Buffer.from('hello'));
  withX.xattrs.set('user.binary', Buffer.from([0, 1, 2, 255]));
  withX.xattrs.set('user.empty', new Uint8Array(0));
  if (options.trusted !== false) withX.xattrs.set('trusted.overlay.test', Buffer.from('y'));
  add(x, 'file', withX);
  const cap = file(Buffer.from('\x7fELF'), { mode: 0o755 });
  // security.capability v2: cap_net_bind_service (bit 10) permitted+effective.
  cap.xattrs.set('security.capability', Buffer.from('0000000201040000000000000000000000000000', 'hex'));
  add(x, 'capability', cap);
  const xdir = dir();
  xdir.xattrs.set('user.dir', Buffer.from('on a directory'));
  add(x, 'dir', xdir);
  const shared1 = file(Buffer.from('a'));
  const shared2 = file(Buffer.from('b'));
  for (const f of [shared1, shared2]) f.xattrs.set('user.shared', Buffer.from('same value on two inodes'));
  add(x, 'shared-1', shared1);
  add(x, 'shared-2', shared2);
  const bigx = file(Buffer.from('big xattr'));
  bigx.xattrs.set('user.big', randomBytes(random, 2000));
  add(x, 'big-value', bigx);

  const names = dir();
  add(root, 'names', names);
  add(names, 'n'.repeat(255), file(Buffer.from('longest name')));
  add(names, 'with space', file(Buffer.from('s')));
  add(names, 'ünïcödé', file(Buffer.from('u')));
  add(names, 'back\\slash', file(Buffer.from('b')));
  add(names, 'new\nline', file(Buffer.from('n')));
  add(names, '=equals', file(Buffer.from('e')));
  if (options.nonUtf8 !== false) {
    names.children.set(
      Buffer.from([0x66, 0xff, 0xfe, 0x2e, 0x62, 0x69, 0x6e]).toString('latin1'),
      file(Buffer.from('bad utf-8')),
    );
  }

  let deep = dir();
  add(root, 'deep', deep);
  for (let i = 0; i < 40; i++) {
    const next = dir();
    add(deep, `level-${i}`, next);
    deep = next;
  }
  add(deep, 'bottom', file(Buffer.from('deep')));

  const perms = dir();
  add(root, 'perms', perms);
  add(perms, 'sticky', dir({ mode: 0o1777 }));
  add(perms, 'setgid-dir', dir({ mode: 0o2775, gid: 50 }));
  add(perms, 'private', dir({ mode: 0o700, uid: 1000, gid: 1000 }));

  const rnd = dir();
  add(root, 'random', rnd);
  const count = options.files ?? 50;
  const maxSize = options.maxFileSize ?? 300 * 1024;
  for (let i = 0; i < count; i++) {
    const size = Math.floor(random() ** 3 * maxSize);
    add(
      rnd,
      `r${i.toString(36)}-${Math.floor(random() * 1e6)}`,
      file(randomBytes(random, size), { mode: random() < 0.3 ? 0o755 : 0o644 }),
    );
  }
  return tree;
}

export interface CompareOptions {
  /** Compare mtimes: to the second, to the nanosecond, or not at all (default 'sec'). */
  mtime?: 'sec' | 'nsec' | false;
  /** Compare xattrs (default true); or a predicate choosing which names to compare. */
  xattrs?: boolean | ((name: string) => boolean);
  /** Compare the root directory's own attributes (default true). */
  root?: boolean;
  /** Compare hardlink identity (default true). */
  hardlinks?: boolean;
  /** Paths (byte strings) to leave out, with everything below them. */
  ignore?: (path: string) => boolean;
}

async function digest(inode: Inode): Promise<string> {
  if (inode.type !== 'file') return '';
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of inode.content.read()) {
    hash.update(chunk);
    size += chunk.length;
  }
  return `${size}:${hash.digest('hex').slice(0, 16)}`;
}

/** One line per path describing everything compared; equal trees give equal listings. */
export async function describeTree(tree: Tree, options: CompareOptions = {}): Promise<string[]> {
  const lines: string[] = [];
  const firstPaths = new Map<Inode, string>();
  for (const { path, inode, linkOf } of walk(tree)) {
    if (options.ignore?.(path)) continue;
    if (path === '' && options.root === false) continue;
    const keep =
      options.xattrs === false
        ? () => false
        : typeof options.xattrs === 'function'
          ? options.xattrs
          : () => true;
    const xattrs = [...inode.xattrs]
      .filter(([name]) => keep(name))
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([name, value]) => `${name}=${Buffer.from(value).toString('hex')}`)
      .join(',');
    const time =
      options.mtime === false
        ? ''
        : options.mtime === 'nsec'
          ? `${inode.mtime.sec}.${inode.mtime.nsec}`
          : `${inode.mtime.sec}`;
    let detail = '';
    if (inode.type === 'symlink') detail = `-> ${displayName(inode.target)}`;
    if (inode.type === 'char' || inode.type === 'block') detail = `${inode.rdev.major},${inode.rdev.minor}`;
    if (inode.type === 'file') detail = await digest(inode);
    let link = '';
    if (options.hardlinks !== false && inode.type !== 'dir') {
      const first = linkOf ?? firstPaths.get(inode);
      if (first === undefined) firstPaths.set(inode, path);
      else link = `link=${displayName(first)}`;
    }
    lines.push(
      [
        JSON.stringify(displayName(path) || '/'),
        inode.type,
        (inode.mode & 0o7777).toString(8),
        `${inode.uid}:${inode.gid}`,
        time,
        detail,
        link,
        xattrs,
      ].join(' '),
    );
  }
  return lines;
}

/** Asserts two trees are equal in everything `options` compares, showing the differing lines. */
export async function assertTreesEqual(
  actual: Tree,
  expected: Tree,
  options: CompareOptions = {},
): Promise<void> {
  const a = await describeTree(actual, options);
  const e = await describeTree(expected, options);
  if (a.join('\n') === e.join('\n')) return;
  const aSet = new Set(a);
  const eSet = new Set(e);
  const missing = e.filter((l) => !aSet.has(l)).slice(0, 20);
  const extra = a.filter((l) => !eSet.has(l)).slice(0, 20);
  assert.fail(
    `trees differ\n  expected but missing:\n    ${missing.join('\n    ')}\n  present but not expected:\n    ${extra.join('\n    ')}`,
  );
}
