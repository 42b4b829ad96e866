/**
 * Every local transport as an ImageSource / ImageDestination: OCI layouts (`oci:` and the
 * default store), OCI archives, docker-save archives (read), root filesystem directories
 * (read, as a one-layer image); `docker://` is served by the registry module.
 */
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Digester } from '../oci/digest.ts';
import { MediaType } from '../oci/mediatypes.ts';
import { hostArchitecture } from '../oci/platform.ts';
import type { ImageDestination, ImageSource } from '../oci/transport.ts';
import type { Descriptor, ImageConfig, Manifest } from '../oci/types.ts';
import { parseManifestOrIndex } from '../oci/validate.ts';
import type { FileInode, Tree } from '../tree/model.ts';
import { toByteString } from '../tree/model.ts';
import { writeAtomic } from '../util/atomic.ts';
import { StoreError } from './errors.ts';
import { LayoutStore } from './layout.ts';
import { type ImageReference, layoutName, parseReference } from './reference.ts';

export interface OpenOptions {
  /** Registry options, passed through for `docker://` references. */
  [key: string]: unknown;
}

// Loaded on use: copies between layouts and registries need no tar or tree code.
const tarModule = () => import('../tar/index.ts');
const treeModule = () => import('../tree/index.ts');

async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const c of stream) chunks.push(c);
  return Buffer.concat(chunks);
}

export class LayoutSource implements ImageSource {
  readonly name: string;
  readonly store: LayoutStore;
  #ref: string | undefined;
  #cleanup: (() => Promise<void>) | undefined;

  constructor(name: string, store: LayoutStore, ref: string | undefined, cleanup?: () => Promise<void>) {
    this.name = name;
    this.store = store;
    this.#ref = ref;
    this.#cleanup = cleanup;
  }

  resolve(): Promise<Descriptor> {
    return this.store.resolve(this.#ref);
  }

  async getManifest(desc: Descriptor): Promise<Uint8Array> {
    return this.store.readBlob(desc, 16 << 20);
  }

  getBlob(desc: Descriptor): AsyncIterable<Uint8Array> {
    return this.store.getBlob(desc);
  }

  blobFile(desc: Descriptor): string | undefined {
    const path = this.store.blobPath(desc.digest);
    return existsSync(path) ? path : undefined;
  }

  async referrers(desc: Descriptor, artifactType?: string): Promise<Descriptor[]> {
    const found: Descriptor[] = [];
    for (const { descriptor } of await this.store.list()) {
      if (descriptor.size > 4 << 20 || !(await this.store.hasBlob(descriptor.digest))) continue;
      const doc = parseManifestOrIndex(await this.store.readBlob(descriptor), descriptor.digest);
      if (doc.subject?.digest !== desc.digest) continue;
      const type = doc.artifactType ?? ('config' in doc ? doc.config.mediaType : undefined);
      if (artifactType && type !== artifactType) continue;
      found.push({
        mediaType: descriptor.mediaType,
        digest: descriptor.digest,
        size: descriptor.size,
        ...(type ? { artifactType: type } : {}),
        ...(doc.annotations ? { annotations: doc.annotations } : {}),
      });
    }
    return found;
  }

  async close(): Promise<void> {
    await this.#cleanup?.();
  }
}

/**
 * Writes into a layout. Blobs a copy adds are removed again if it is closed without commit,
 * so a failed copy leaves the layout as it was.
 */
export class LayoutDestination implements ImageDestination {
  readonly name: string;
  readonly store: LayoutStore;
  #onCommit: (() => Promise<void>) | undefined;
  #cleanup: (() => Promise<void>) | undefined;
  #added = new Set<string>();
  #committed = false;

  constructor(
    name: string,
    store: LayoutStore,
    hooks: { onCommit?: () => Promise<void>; cleanup?: () => Promise<void> } = {},
  ) {
    this.name = name;
    this.store = store;
    this.#onCommit = hooks.onCommit;
    this.#cleanup = hooks.cleanup;
  }

  hasBlob(desc: Descriptor): Promise<boolean> {
    return this.store.hasBlob(desc.digest);
  }

  async #put(desc: Descriptor, data: AsyncIterable<Uint8Array>): Promise<void> {
    if (await this.store.hasBlob(desc.digest)) {
      // Still read and verify what the source sends, but keep the blob already stored.
      for await (const _ of data) void _;
      return;
    }
    await this.store.putBlob(data, { digest: desc.digest, size: desc.size });
    this.#added.add(desc.digest);
  }

  putBlob(desc: Descriptor, data: AsyncIterable<Uint8Array>): Promise<void> {
    return this.#put(desc, data);
  }

  async putManifest(desc: Descriptor, bytes: Uint8Array, tag?: string): Promise<void> {
    const doc = parseManifestOrIndex(bytes, `${this.name}@${desc.digest}`);
    await this.#put(
      desc,
      (async function* () {
        yield bytes;
      })(),
    );
    const entry: Descriptor = { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
    if (doc.artifactType) entry.artifactType = doc.artifactType;
    // Tagged images and anything attached to another manifest are recorded in index.json so
    // they are listed, found as referrers, and kept by gc.
    if (tag !== undefined || doc.subject) await this.store.tag(entry, tag);
  }

  async commit(): Promise<void> {
    await this.#onCommit?.();
    this.#committed = true;
  }

  async close(): Promise<void> {
    if (!this.#committed) {
      for (const digest of this.#added) await rm(this.store.blobPath(digest), { force: true });
    }
    await this.#cleanup?.();
  }
}

async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(process.env.SEAL_TMPDIR ?? tmpdir(), prefix));
}

/** Archive members read whole (manifest.json, a config) are refused above this size. */
const ARCHIVE_DOCUMENT_LIMIT = 16 << 20;

/**
 * Reads a tar archive into a tree whose file contents are spooled; `dir` is a fresh private
 * temporary directory for whatever the caller derives from it. `cleanup` releases both. Nothing
 * of the archive is written anywhere else.
 */
async function readArchive(file: string): Promise<{ dir: string; tree: Tree; cleanup: () => Promise<void> }> {
  const [{ decompress }, { Spool, treeFromTar }] = await Promise.all([tarModule(), treeModule()]);
  const dir = await tempDir('seal-archive-');
  const spool = await Spool.create(dir);
  const cleanup = async () => {
    await spool.close();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    return { dir, tree: await treeFromTar(decompress(createReadStream(file)), spool), cleanup };
  } catch (error) {
    await cleanup();
    throw error;
  }
}

/**
 * An OCI layout archive as a layout in a temporary directory: only its directories and regular
 * files are written (no symlinks, devices, owners, modes or xattrs from the archive), so the
 * store's own checks see a plain layout.
 */
async function unpackLayoutArchive(file: string): Promise<{ root: string; cleanup: () => Promise<void> }> {
  const { dir, tree, cleanup } = await readArchive(file);
  try {
    const root = join(dir, 'x');
    await (await treeModule()).writeTreeToDirectory(tree, root, { contentsOnly: true });
    return { root, cleanup };
  } catch (error) {
    await cleanup();
    throw error;
  }
}

/** The regular file at `path` (from manifest.json) inside the archive's tree; symlinks resolve inside it. */
async function archiveFile(
  tree: Tree,
  path: unknown,
  ref: { path: string; text: string },
): Promise<FileInode> {
  const { lookupFollowing } = await treeModule();
  const inode = typeof path === 'string' ? lookupFollowing(tree, toByteString(path)) : undefined;
  if (inode?.type !== 'file') {
    throw new StoreError(
      'STORE_INVALID_DOCUMENT',
      `${ref.path}: manifest.json names ${JSON.stringify(path)}, which is ${inode ? `a ${inode.type}` : 'not a file of the archive'}`,
      { subject: ref.text },
    );
  }
  return inode;
}

async function archiveDocument(inode: FileInode, what: string, ref: { path: string; text: string }) {
  if (inode.content.size > ARCHIVE_DOCUMENT_LIMIT) {
    throw new StoreError('STORE_INVALID_DOCUMENT', `${ref.path}: ${what} is too large`, {
      subject: ref.text,
    });
  }
  return readAll(inode.content.read());
}

interface DockerArchiveImage {
  Config: string;
  RepoTags?: string[];
  Layers: string[];
}

function parseDockerManifest(bytes: Buffer, ref: { path: string; text: string }): DockerArchiveImage[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    parsed = undefined;
  }
  const valid =
    Array.isArray(parsed) &&
    parsed.every(
      (m) =>
        typeof m === 'object' &&
        m !== null &&
        typeof m.Config === 'string' &&
        Array.isArray(m.Layers) &&
        m.Layers.every((l: unknown) => typeof l === 'string') &&
        (m.RepoTags == null ||
          (Array.isArray(m.RepoTags) && m.RepoTags.every((t: unknown) => typeof t === 'string'))),
    );
  if (!valid) {
    throw new StoreError(
      'STORE_INVALID_DOCUMENT',
      `${ref.path}: manifest.json is not a docker-save manifest`,
      {
        subject: ref.text,
      },
    );
  }
  return parsed as DockerArchiveImage[];
}

/**
 * A docker-save archive as an OCI image: its layer tars become uncompressed OCI layers. The
 * paths manifest.json names are looked up in the archive itself (its symlinks followed inside
 * it), never on the host.
 */
async function dockerArchiveSource(ref: { path: string; tag?: string; text: string }): Promise<ImageSource> {
  const { dir, tree, cleanup } = await readArchive(ref.path);
  try {
    const manifestFile = await archiveFile(tree, 'manifest.json', ref);
    const manifests = parseDockerManifest(await archiveDocument(manifestFile, 'manifest.json', ref), ref);
    const chosen = ref.tag
      ? manifests.find((m) => m.RepoTags?.some((t) => t === ref.tag || t.endsWith(`:${ref.tag}`)))
      : manifests.length === 1
        ? manifests[0]
        : undefined;
    if (!chosen) {
      throw new StoreError(
        'STORE_NOT_FOUND',
        `${ref.path}: ${ref.tag ? `no image tagged ${ref.tag}` : 'several images: name one with :TAG'}`,
        {
          subject: ref.text,
        },
      );
    }
    const store = await LayoutStore.open(join(dir, 'layout'), { create: true });
    const configFile = await archiveFile(tree, chosen.Config, ref);
    const config = await store.putBytes(
      await archiveDocument(configFile, 'the image config', ref),
      MediaType.ImageConfig,
    );
    const layers: Descriptor[] = [];
    for (const path of chosen.Layers) {
      const layer = await archiveFile(tree, path, ref);
      let head = Buffer.alloc(0);
      for await (const chunk of layer.content.read()) {
        head = Buffer.from(chunk.subarray(0, 4));
        break;
      }
      const kind = (await tarModule()).sniffCompression(head);
      const { digest, size } = await store.putBlob(layer.content.read());
      const mediaType =
        kind === 'gzip' ? MediaType.LayerGzip : kind === 'zstd' ? MediaType.LayerZstd : MediaType.Layer;
      layers.push({ mediaType, digest, size });
    }
    const manifest: Manifest = { schemaVersion: 2, mediaType: MediaType.ImageManifest, config, layers };
    const desc = await store.putBytes(Buffer.from(JSON.stringify(manifest)), MediaType.ImageManifest);
    await store.tag(desc, 'image');
    return new LayoutSource(ref.text, store, 'image', cleanup);
  } catch (error) {
    await cleanup();
    throw error;
  }
}

/**
 * A root filesystem directory as a one-layer image: a deterministic gzip tar layer, a config
 * with its diff_id, a manifest. Built once into a temporary layout, then served from there.
 */
async function directorySource(ref: Extract<ImageReference, { transport: 'dir' }>): Promise<ImageSource> {
  const [{ compress }, { treeFromDirectory, treeToTar }] = await Promise.all([tarModule(), treeModule()]);
  const dir = await tempDir('seal-dir-');
  const cleanup = () => rm(dir, { recursive: true, force: true });
  try {
    const store = await LayoutStore.open(join(dir, 'layout'), { create: true });
    const tree = await treeFromDirectory(ref.path);
    const diff = new Digester('sha256');
    async function* tar() {
      for await (const chunk of treeToTar(tree)) {
        diff.update(chunk);
        yield chunk;
      }
    }
    const layer = await store.putBlob(compress(tar(), 'gzip', 6));
    const epoch = process.env.SOURCE_DATE_EPOCH;
    const config: ImageConfig = {
      ...(epoch ? { created: new Date(Number(epoch) * 1000).toISOString() } : {}),
      architecture: hostArchitecture(),
      os: 'linux',
      config: {},
      rootfs: { type: 'layers', diff_ids: [diff.digest()] },
      history: [{ created_by: 'seal image import dir:', comment: 'root filesystem directory' }],
    };
    const configDesc = await store.putBytes(Buffer.from(JSON.stringify(config)), MediaType.ImageConfig);
    const manifest: Manifest = {
      schemaVersion: 2,
      mediaType: MediaType.ImageManifest,
      config: configDesc,
      layers: [{ mediaType: MediaType.LayerGzip, ...layer }],
    };
    const desc = await store.putBytes(Buffer.from(JSON.stringify(manifest)), MediaType.ImageManifest);
    await store.tag(desc, 'image');
    return new LayoutSource(ref.text, store, 'image', cleanup);
  } catch (error) {
    await cleanup();
    throw error;
  }
}

export async function openSource(
  reference: string | ImageReference,
  options: OpenOptions = {},
): Promise<ImageSource> {
  const ref = typeof reference === 'string' ? parseReference(reference) : reference;
  switch (ref.transport) {
    case 'docker':
      return (await import('../registry/index.ts')).openRegistrySource(ref.text, options as never);
    case 'oci':
      return new LayoutSource(ref.text, await LayoutStore.open(ref.path), ref.tag);
    case 'store':
      return new LayoutSource(ref.text, await LayoutStore.open(ref.store), layoutName(ref));
    case 'oci-archive': {
      const { root, cleanup } = await unpackLayoutArchive(ref.path);
      try {
        return new LayoutSource(ref.text, await LayoutStore.open(root), ref.tag, cleanup);
      } catch (error) {
        await cleanup();
        throw error;
      }
    }
    case 'docker-archive':
      return dockerArchiveSource(ref);
    case 'dir':
      return directorySource(ref);
  }
}

export async function openDestination(
  reference: string | ImageReference,
  options: OpenOptions = {},
): Promise<ImageDestination> {
  const ref = typeof reference === 'string' ? parseReference(reference) : reference;
  switch (ref.transport) {
    case 'docker':
      return (await import('../registry/index.ts')).openRegistryDestination(ref.text, options as never);
    case 'oci':
      return new LayoutDestination(ref.text, await LayoutStore.open(ref.path, { create: true }));
    case 'store':
      return new LayoutDestination(ref.text, await LayoutStore.open(ref.store, { create: true }));
    case 'oci-archive': {
      // Written as a layout in a temporary directory, archived into FILE atomically on commit.
      const dir = await tempDir('seal-archive-');
      const store = await LayoutStore.open(join(dir, 'layout'), { create: true });
      return new LayoutDestination(ref.text, store, {
        onCommit: async () => {
          const { treeFromDirectory, treeToTar, walk } = await treeModule();
          const tree = await treeFromDirectory(store.dir, { xattrs: false });
          for (const { inode } of walk(tree)) {
            Object.assign(inode, { uid: 0, gid: 0, mtime: { sec: 0, nsec: 0 } });
          }
          await writeAtomic(ref.path, async (handle) => {
            await pipeline(
              Readable.from(treeToTar(tree)),
              createWriteStream('', { fd: handle.fd, autoClose: false }),
            );
          });
        },
        cleanup: () => rm(dir, { recursive: true, force: true }),
      });
    }
    case 'docker-archive':
    case 'dir':
      throw new StoreError('STORE_UNSUPPORTED', `${ref.transport}: references can only be read`, {
        subject: ref.text,
      });
  }
}

/** The tag a destination reference asks for, if any. */
export function destinationTag(reference: string | ImageReference): string | undefined {
  const ref = typeof reference === 'string' ? parseReference(reference) : reference;
  return layoutName(ref);
}
