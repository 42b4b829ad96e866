/**
 * The composefs images of a store and their object store: the canonical composefs image of a
 * composefs-sealed image (checked against its annotated digest), its files stored once by their
 * fs-verity digest in `composefs-objects/`, and — where the store's filesystem has fs-verity —
 * the image kept as `composefs-images/<digest>.cfs` with fs-verity enabled (with its signature,
 * which the kernel checks), for the kernel to mount with overlayfs `verity=require`.
 */
import { existsSync } from 'node:fs';
import { lstat, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type CfsNode,
  composefsTree,
  readComposefsImage,
  walkCfs,
  writeComposefsImage,
} from '../composefs/index.ts';
import type { LayoutStore } from '../store/index.ts';
import { type LayoutSource, mergedTree, readImage } from '../store/index.ts';
import { Spool } from '../tree/index.ts';
import { temporaryNameFor } from '../util/atomic.ts';
import { enableKernelVerity, measureKernelVerity, VerityError } from '../verity/index.ts';
import { COMPOSEFS_MERGED_ANNOTATION, isComposefsSealed } from './formats.ts';
import { MountError } from './mount.ts';

/** The object-store paths of an image's external files. */
function objectsOf(root: CfsNode): string[] {
  const found = new Set<string>();
  (function visit(node: CfsNode) {
    if (node.payload !== undefined && node.digest !== undefined) found.add(node.payload);
    for (const e of node.children ?? []) if (!e.link) visit(e.node);
  })(root);
  return [...found].sort();
}

/** The canonical composefs image of a composefs-sealed image, its files put into `objects`. */
export async function composefsImageOf(
  src: LayoutSource,
  objects: string,
): Promise<{ image: Uint8Array; digest: string; objects: string[] }> {
  const docs = await readImage(src);
  const spool = await Spool.create();
  try {
    const tree = await mergedTree(src, docs, spool, { symlinkModes: 'header' });
    const root = await composefsTree(tree, { objects });
    const { image, digest } = await writeComposefsImage(root, { version: 1 });
    const expected = docs.manifest.annotations?.[COMPOSEFS_MERGED_ANNOTATION];
    if (digest.toString('hex') !== expected) {
      throw new MountError(
        'MOUNT_FAILED',
        `${src.name}: the composefs image does not match its annotated digest`,
        {
          subject: src.name,
        },
      );
    }
    return { image, digest: expected, objects: objectsOf(root) };
  } finally {
    await spool.close();
  }
}

/** The store's composefs object store. */
export const composefsObjects = (src: LayoutSource) => join(src.store.dir, 'composefs-objects');

export interface StoredComposefsImage {
  /** `composefs-images/<digest>.cfs` in the store, fs-verity enabled, the kernel's measurement checked. */
  path: string;
  /** The merged composefs digest (hex), as the sealed image's annotation pins it. */
  digest: string;
}

/**
 * Puts a composefs-sealed image's composefs image into the store as `composefs-images/<digest>.cfs`
 * with fs-verity enabled — with `signature`, which the kernel checks against its .fs-verity
 * keyring — and fs-verity on every object it names, for overlayfs `verity=require`. An image
 * already there whose fs-verity digest the kernel measures as the sealed one is kept (the same
 * digest is the same bytes); anything else is made afresh (written under a temporary name,
 * verity enabled, the kernel's measurement checked, renamed). Undefined when the store's
 * filesystem has no fs-verity.
 */
export async function storeComposefsImage(
  src: LayoutSource,
  signature?: Uint8Array,
): Promise<StoredComposefsImage | undefined> {
  const { manifest } = await readImage(src);
  const digest = manifest.annotations?.[COMPOSEFS_MERGED_ANNOTATION];
  if (!isComposefsSealed(manifest) || !digest || !/^[0-9a-f]{64}$/.test(digest))
    throw new MountError('MOUNT_FAILED', `${src.name}: not a composefs-sealed image`, { subject: src.name });
  const path = join(src.store.dir, 'composefs-images', `${digest}.cfs`);
  if (existsSync(path) && measureKernelVerity(path)?.digest.toString('hex') === digest)
    return { path, digest };
  return keepComposefsImage(src, await composefsImageOf(src, composefsObjects(src)), signature);
}

/**
 * Keeps `built` (composefsImageOf of `src`) in the store as storeComposefsImage says, made
 * afresh: written under a temporary name, verity enabled (with `signature`), the kernel's
 * measurement checked, verity enabled on its objects, renamed. Undefined when the store's
 * filesystem has no fs-verity.
 */
export async function keepComposefsImage(
  src: LayoutSource,
  built: { image: Uint8Array; digest: string; objects: string[] },
  signature?: Uint8Array,
): Promise<StoredComposefsImage | undefined> {
  const { digest } = built;
  const images = join(src.store.dir, 'composefs-images');
  const path = join(images, `${digest}.cfs`);
  const refused = (error: unknown) =>
    new MountError('MOUNT_FAILED', `${src.name}: ${(error as Error).message}`, {
      subject: src.name,
      cause: error,
    });
  await mkdir(images, { recursive: true });
  const temporary = temporaryNameFor(path);
  await writeFile(temporary, built.image, { mode: 0o444 });
  try {
    try {
      enableKernelVerity(temporary, signature ? { signature } : {});
    } catch (error) {
      if (error instanceof VerityError && error.code === 'VERITY_UNSUPPORTED') return undefined;
      throw refused(error);
    }
    if (measureKernelVerity(temporary)?.digest.toString('hex') !== digest) {
      throw new MountError(
        'MOUNT_FAILED',
        `${src.name}: the kernel measured another digest for the composefs image`,
        {
          subject: src.name,
        },
      );
    }
    try {
      for (const object of built.objects) enableKernelVerity(join(composefsObjects(src), object));
    } catch (error) {
      throw refused(error);
    }
    await rename(temporary, path);
    return { path, digest };
  } finally {
    await rm(temporary, { force: true });
  }
}

/**
 * Removes the composefs images of `store` that no image manifest left in it names (after the
 * store's gc), and every object no remaining composefs image names; an image that cannot be
 * read is removed too (it is made again when needed). Returns what was removed.
 */
export async function collectComposefs(store: LayoutStore): Promise<{ removed: number; freed: number }> {
  const images = join(store.dir, 'composefs-images');
  const objects = join(store.dir, 'composefs-objects');
  const live = new Set<string>();
  // The sealed image manifests the store keeps (small JSON blobs) name their composefs digests.
  for (const digest of await store.reachable(false)) {
    const hex = /^sha256:([0-9a-f]{64})$/.exec(digest)?.[1];
    if (!hex) continue;
    const path = join(store.dir, 'blobs', 'sha256', hex);
    const size = await lstat(path).then(
      (st) => (st.isFile() ? st.size : -1),
      () => -1,
    );
    if (size < 0 || size > 1 << 20) continue;
    const text = await readFile(path, 'latin1');
    if (!text.includes(COMPOSEFS_MERGED_ANNOTATION)) continue;
    try {
      const digest = JSON.parse(text)?.annotations?.[COMPOSEFS_MERGED_ANNOTATION];
      if (typeof digest === 'string') live.add(digest);
    } catch {}
  }
  let removed = 0;
  let freed = 0;
  const remove = async (path: string) => {
    freed += (await lstat(path)).size;
    await rm(path, { force: true });
    removed++;
  };
  const named = new Set<string>();
  for (const name of await readdir(images).catch(() => [] as string[])) {
    const path = join(images, name);
    const digest = /^([0-9a-f]{64})\.cfs$/.exec(name)?.[1];
    let root: CfsNode | undefined;
    if (digest && live.has(digest)) {
      try {
        root = readComposefsImage(path).root;
      } catch {}
    }
    if (!root) {
      await remove(path);
      continue;
    }
    for (const { node } of walkCfs(root)) if (node.payload) named.add(node.payload);
  }
  for (const prefix of await readdir(objects).catch(() => [] as string[])) {
    for (const name of await readdir(join(objects, prefix)).catch(() => [] as string[])) {
      if (!named.has(`${prefix}/${name}`)) await remove(join(objects, prefix, name));
    }
  }
  return { removed, freed };
}
