/**
 * The composefs object store: every file above the inline limit is stored once, named by its
 * fs-verity SHA-256 digest as `objects/XX/REST`. Objects are written under a temporary name,
 * fsynced and renamed, so the store never holds a partial object; an existing object is kept.
 * Files of a tree are stored several at a time and hashed on the worker pool (both cores).
 */
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { readContent } from '../tree/content.ts';
import {
  type Content,
  encodeDevice,
  fullMode,
  type Inode,
  linkCounts,
  sortedChildren,
  type Tree,
} from '../tree/model.ts';
import { fsverityDigestFile } from '../verity/index.ts';
import { type CfsEntry, type CfsNode, ComposefsError, INLINE_LIMIT } from './model.ts';

/** The store path of an object: `XX/REST` of its hex digest. */
export function objectPath(digest: Uint8Array): string {
  const hex = Buffer.from(digest).toString('hex');
  return `${hex.slice(0, 2)}/${hex.slice(2)}`;
}

/** Stores a content in the object store; returns its fs-verity digest and store path. */
export async function storeObject(
  objects: string,
  content: Content,
): Promise<{ digest: Buffer; path: string }> {
  mkdirSync(objects, { recursive: true });
  const temp = join(objects, `.tmp-${randomBytes(8).toString('hex')}`);
  const fd = openSync(temp, 'wx', 0o644);
  try {
    try {
      for await (const chunk of content.read()) {
        for (let done = 0; done < chunk.length; ) done += writeSync(fd, chunk, done);
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    const digest = await fsverityDigestFile(temp);
    const path = objectPath(digest);
    const final = join(objects, path);
    if (existsSync(final)) await rm(temp, { force: true });
    else {
      mkdirSync(join(objects, path.slice(0, 2)), { recursive: true });
      await rename(temp, final);
    }
    return { digest, path };
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

const CONCURRENCY = 4;

/**
 * The composefs tree of `tree`: small files inline, the others stored in `objects`. The first
 * path of a hardlinked inode (depth-first) stores it; the others are hardlinks to it.
 */
export async function composefsTree(
  tree: Tree,
  objects: string | undefined,
  options: { onProgress?: (bytes: number) => void } = {},
): Promise<CfsNode> {
  const links = linkCounts(tree);
  const nodes = new Map<Inode, CfsNode>();
  const pending: (() => Promise<void>)[] = [];

  const convert = (inode: Inode): CfsNode => {
    const node: CfsNode = {
      mode: fullMode(inode),
      size: 0,
      nlink: links.get(inode) ?? 1,
      uid: inode.uid,
      gid: inode.gid,
      rdev: inode.type === 'char' || inode.type === 'block' ? encodeDevice(inode.rdev) : 0,
      mtime: inode.mtime,
      xattrs: [...inode.xattrs],
    };
    nodes.set(inode, node);
    switch (inode.type) {
      case 'file': {
        node.size = inode.content.size;
        const content = inode.content;
        if (content.size === 0) break;
        pending.push(async () => {
          if (content.size <= INLINE_LIMIT) node.content = await readContent(content);
          else {
            if (objects === undefined)
              throw new ComposefsError(
                'COMPOSEFS_UNREPRESENTABLE',
                'files over 64 bytes need an object store (--objects)',
              );
            const stored = await storeObject(objects, content);
            node.digest = stored.digest;
            node.payload = stored.path;
          }
          options.onProgress?.(content.size);
        });
        break;
      }
      case 'symlink':
        node.payload = inode.target;
        node.size = inode.target.length;
        break;
      case 'dir':
        node.children = sortedChildren(inode).map(([name, child]): CfsEntry => {
          const seen = nodes.get(child);
          return seen ? { name, node: seen, link: true } : { name, node: convert(child) };
        });
        break;
    }
    return node;
  };
  const root = convert(tree.root);
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < pending.length) await pending[next++]!();
    }),
  );
  return root;
}
