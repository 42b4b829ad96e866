/**
 * Plain EROFS images from the tree model: `seal erofs create`. Contents are streamed into the
 * image file; the metadata is laid out in memory first.
 */
import { writevSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { encodeDevice, fullMode, type Inode, linkCounts, sortedChildren, type Tree } from '../tree/model.ts';
import { writeAtomic } from '../util/atomic.ts';
import { writeFullySync } from '../util/write.ts';
import { ErofsError, XATTR_PREFIXES } from './format.ts';
import { type ErofsNode, type ErofsSink, type ErofsWriteResult, writeErofsImage } from './writer.ts';

export interface ErofsCreateOptions {
  /** Every inode gets this mtime, and so the image's build time (as `mkfs.erofs -T`). */
  mtime?: number;
  /** Every file owned by root. */
  allRoot?: boolean;
  /** Store extended attributes (default true). */
  xattrs?: boolean;
  /** Chunk-based files with chunks of this many bytes (a power of two, at least 4096). */
  chunkSize?: number;
  onProgress?: (bytes: number) => void;
}

/** The tree as EROFS nodes; the first path of a hardlinked inode (depth-first) stores it. */
export function erofsNodesFromTree(tree: Tree, options: ErofsCreateOptions = {}): ErofsNode {
  const links = linkCounts(tree);
  const nodes = new Map<Inode, ErofsNode>();
  const convert = (inode: Inode): ErofsNode => {
    const xattrs =
      options.xattrs === false ? [] : [...inode.xattrs].map(([name, value]) => ({ name, value }));
    for (const { name } of xattrs) {
      if (!XATTR_PREFIXES.some(([prefix]) => name.startsWith(prefix))) {
        throw new ErofsError('EROFS_UNREPRESENTABLE', `EROFS cannot store the xattr ${name}`, {
          subject: name,
        });
      }
    }
    const node: ErofsNode = {
      mode: fullMode(inode),
      uid: options.allRoot ? 0 : inode.uid,
      gid: options.allRoot ? 0 : inode.gid,
      nlink: links.get(inode) ?? 1,
      mtime: options.mtime === undefined ? inode.mtime : { sec: options.mtime, nsec: 0 },
      rdev: inode.type === 'char' || inode.type === 'block' ? encodeDevice(inode.rdev) : 0,
      xattrs,
    };
    nodes.set(inode, node);
    if (inode.type === 'symlink') node.symlink = inode.target;
    else if (inode.type === 'file') node.data = { kind: 'content', content: inode.content };
    else if (inode.type === 'dir') {
      node.children = sortedChildren(inode).map(([name, child]) => {
        const seen = nodes.get(child);
        return seen ? { name, node: seen, link: true } : { name, node: convert(child) };
      });
    }
    return node;
  };
  return convert(tree.root);
}

/** Coalesces the sequential writes of a large image into few system calls. */
export function fileSink(handle: FileHandle): ErofsSink {
  const LIMIT = 4 << 20;
  let pending: Uint8Array[] = [];
  let pendingStart = 0;
  let pendingBytes = 0;
  const flush = async () => {
    if (pendingBytes === 0) return;
    // One gathering write, synchronous: the writer has nothing to overlap with, and a
    // thread-pool round trip per flush only adds latency.
    const written = writevSync(handle.fd, pending, pendingStart);
    if (written !== pendingBytes)
      writeFullySync(handle.fd, Buffer.concat(pending).subarray(written), pendingStart + written);
    pending = [];
    pendingBytes = 0;
  };
  return {
    async write(data, position) {
      if (pendingBytes > 0 && position !== pendingStart + pendingBytes) await flush();
      if (pendingBytes === 0) pendingStart = position;
      pending.push(data);
      pendingBytes += data.byteLength;
      if (pendingBytes >= LIMIT) await flush();
    },
    async finish(size) {
      await flush();
      await handle.truncate(size);
    },
  };
}

/** Writes `tree` as a plain EROFS image at `out`, atomically. */
export async function writeErofs(
  tree: Tree,
  out: string,
  options: ErofsCreateOptions = {},
): Promise<ErofsWriteResult> {
  let chunkBits: number | undefined;
  if (options.chunkSize !== undefined) {
    chunkBits = Math.log2(options.chunkSize);
    if (!Number.isInteger(chunkBits) || chunkBits < 12 || chunkBits > 43) {
      throw new ErofsError('EROFS_INVALID_OPTION', 'chunk size must be a power of two from 4096');
    }
  }
  const root = erofsNodesFromTree(tree, options);
  return writeAtomic(out, (handle) =>
    writeErofsImage(root, fileSink(handle), { chunkBits, onProgress: options.onProgress }),
  );
}
