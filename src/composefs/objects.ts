/**
 * The composefs object store: every file above the inline limit is stored once, named by its
 * fs-verity SHA-256 digest as `objects/XX/REST`, shared by every image written into the store;
 * an existing object is kept.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, renameSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
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
import { syncFilesystem } from '../util/fsops.ts';
import { sourceUrl } from '../util/paths.ts';
import { sharedPool } from '../util/pool.ts';
import { writeFullySync } from '../util/write.ts';
import { fsverityDigest } from '../verity/index.ts';
import { type CfsEntry, type CfsNode, INLINE_LIMIT } from './model.ts';
import type { FileRange } from './object-worker.ts';

const STAGE_MODULE = sourceUrl('composefs/object-worker.ts').href;

/** The store path of an object: `XX/REST` of its hex digest. */
export function objectPath(digest: Uint8Array): string {
  const hex = Buffer.from(digest).toString('hex');
  return `${hex.slice(0, 2)}/${hex.slice(2)}`;
}

/**
 * Objects are first written under temporary names and hashed as they stream; `commit` then
 * makes them durable with one filesystem sync and renames them into place, so a crash never
 * leaves a partial object under an object name (one sync instead of one fsync per object).
 */
export class ObjectWriter {
  readonly dir: string;
  #staged: { temp: string; path: string }[] = [];

  constructor(dir: string) {
    this.dir = dir;
    mkdirSync(dir, { recursive: true });
  }

  /** Stages file ranges on the worker pool, as one task. */
  async addFiles(ranges: FileRange[]): Promise<{ digest: Buffer; path: string }[]> {
    const staged = await sharedPool().run<{ digest: Uint8Array; temp: string }[]>(
      STAGE_MODULE,
      'stageFileObjects',
      [ranges, this.dir],
    );
    return staged.map(({ digest, temp }) => {
      const path = objectPath(digest);
      this.#staged.push({ temp, path });
      return { digest: Buffer.from(digest), path };
    });
  }

  async add(content: Content): Promise<{ digest: Buffer; path: string }> {
    if (content.source) {
      const [stored] = await this.addFiles([[content.source.path, content.source.offset, content.size]]);
      return stored!;
    }
    const temp = join(this.dir, `.tmp-${randomBytes(8).toString('hex')}`);
    const fd = openSync(temp, 'wx', 0o644);
    try {
      let digest: Buffer;
      try {
        digest = await fsverityDigest(
          (async function* () {
            for await (const chunk of content.read()) {
              writeFullySync(fd, chunk);
              yield chunk;
            }
          })(),
        );
      } finally {
        closeSync(fd);
      }
      const path = objectPath(digest);
      this.#staged.push({ temp, path });
      return { digest, path };
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
  }

  async commit(): Promise<void> {
    if (this.#staged.length === 0) return;
    syncFilesystem(this.dir);
    const prefixes = new Set<string>();
    for (const { temp, path } of this.#staged) {
      const prefix = path.slice(0, 2);
      if (!prefixes.has(prefix)) {
        mkdirSync(join(this.dir, prefix), { recursive: true });
        prefixes.add(prefix);
      }
      const final = join(this.dir, path);
      // An object already stored (by another image, or twice in this one) is kept as it is.
      if (existsSync(final)) rmSync(temp, { force: true });
      else renameSync(temp, final);
    }
    this.#staged = [];
  }

  /** Removes what was staged (after a failure). */
  async abort(): Promise<void> {
    for (const { temp } of this.#staged) await rm(temp, { force: true });
    this.#staged = [];
  }
}

/** Stores one content in the object store; returns its fs-verity digest and store path. */
export async function storeObject(
  objects: string,
  content: Content,
): Promise<{ digest: Buffer; path: string }> {
  const writer = new ObjectWriter(objects);
  const stored = await writer.add(content);
  await writer.commit();
  return stored;
}

/** The fs-verity digests of file ranges, hashed on the worker pool as one task. */
async function fileDigests(ranges: FileRange[]): Promise<{ digest: Buffer; path: string }[]> {
  const digests = await sharedPool().run<Uint8Array[]>(STAGE_MODULE, 'digestFileRanges', [ranges]);
  return digests.map((d) => ({ digest: Buffer.from(d), path: objectPath(d) }));
}

/** Files per pool task, and bytes: enough to amortise a round trip, few enough to share work. */
const BATCH_FILES = 64;
const BATCH_BYTES = 8 << 20;

/**
 * The composefs tree of `tree`: files up to 64 bytes inline, the others named by their fs-verity
 * digest and, with `objects`, stored there (without, only digested, as mkcomposefs without
 * --digest-store). The first path of a hardlinked inode (depth-first) stores it; the others are
 * hardlinks to it.
 */
export async function composefsTree(
  tree: Tree,
  options: { objects?: string; onProgress?: (bytes: number) => void } = {},
): Promise<CfsNode> {
  const links = linkCounts(tree);
  const nodes = new Map<Inode, CfsNode>();
  const pending: (() => Promise<void>)[] = [];
  const inFiles: { node: CfsNode; range: FileRange }[] = [];
  const writer = options.objects === undefined ? undefined : new ObjectWriter(options.objects);

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
        if (content.size > INLINE_LIMIT && content.source) {
          inFiles.push({ node, range: [content.source.path, content.source.offset, content.size] });
          break;
        }
        pending.push(async () => {
          if (content.size <= INLINE_LIMIT) node.content = await readContent(content);
          else {
            const stored = writer
              ? await writer.add(content)
              : { digest: await fsverityDigest(content.read()) };
            node.digest = stored.digest;
            node.payload = objectPath(stored.digest);
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
  // Contents that lie in files are digested (and stored) on the worker pool, in batches.
  for (let i = 0; i < inFiles.length; ) {
    const batch: typeof inFiles = [];
    let bytes = 0;
    while (i < inFiles.length && batch.length < BATCH_FILES && (batch.length === 0 || bytes < BATCH_BYTES)) {
      bytes += inFiles[i]!.range[2];
      batch.push(inFiles[i++]!);
    }
    pending.push(async () => {
      const ranges = batch.map((f) => f.range);
      const stored = writer ? await writer.addFiles(ranges) : await fileDigests(ranges);
      for (const [k, { node, range }] of batch.entries()) {
        node.digest = stored[k]!.digest;
        node.payload = stored[k]!.path;
        options.onProgress?.(range[2]);
      }
    });
  }
  try {
    // Several at a time, so both pool workers stay busy.
    let next = 0;
    await Promise.all(
      Array.from({ length: sharedPool().size * 2 }, async () => {
        while (next < pending.length) await pending[next++]!();
      }),
    );
    await writer?.commit();
  } catch (error) {
    await writer?.abort();
    throw error;
  }
  return root;
}
