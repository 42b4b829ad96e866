/** Reading an image through any transport: its manifest, its config, its merged root filesystem. */
import { MediaType } from '../oci/mediatypes.ts';
import { hostArchitecture } from '../oci/platform.ts';
import type { ImageSource } from '../oci/transport.ts';
import type { Descriptor, ImageConfig, Index, Manifest } from '../oci/types.ts';
import { isIndexType, parseConfig, parseIndex, parseManifest } from '../oci/validate.ts';
import type { Spool, TarTreeOptions, Tree } from '../tree/index.ts';
import { StoreError } from './errors.ts';

export interface ImageDocuments {
  /** The descriptor of the image manifest (the platform's, when the reference names an index). */
  descriptor: Descriptor;
  manifest: Manifest;
  config: ImageConfig;
  /** The config exactly as stored (its digest is the config descriptor's). */
  configBytes: Buffer;
  /** The index the reference named, if it named one. */
  index?: { descriptor: Descriptor; index: Index };
}

const TAR_LAYERS = new Set<string>([
  MediaType.Layer,
  MediaType.LayerGzip,
  MediaType.LayerZstd,
  MediaType.LayerNondistributable,
  MediaType.LayerNondistributableGzip,
  MediaType.LayerNondistributableZstd,
  MediaType.DockerLayerGzip,
  MediaType.DockerLayerForeignGzip,
]);

export function isTarLayer(mediaType: string): boolean {
  return TAR_LAYERS.has(mediaType);
}

export async function readImage(src: ImageSource, root?: Descriptor): Promise<ImageDocuments> {
  let descriptor = root ?? (await src.resolve());
  let index: ImageDocuments['index'];
  if (isIndexType(descriptor.mediaType)) {
    const doc = parseIndex(await src.getManifest(descriptor), `${src.name} index`);
    index = { descriptor, index: doc };
    const wanted = hostArchitecture();
    const match =
      doc.manifests.find((m) => m.platform?.os === 'linux' && m.platform.architecture === wanted) ??
      (doc.manifests.length === 1 ? doc.manifests[0] : undefined);
    if (!match)
      throw new StoreError('STORE_NOT_FOUND', `${src.name} has no image for linux/${wanted}`, {
        subject: src.name,
      });
    descriptor = match;
  }
  const manifest = parseManifest(await src.getManifest(descriptor), `${src.name} manifest`);
  const chunks: Uint8Array[] = [];
  if (manifest.config.size > 16 << 20)
    throw new StoreError('STORE_INVALID_DOCUMENT', `${src.name}: config is too large`);
  for await (const c of src.getBlob(manifest.config)) chunks.push(c);
  const configBytes = Buffer.concat(chunks);
  const config = parseConfig(configBytes, `${src.name} config`);
  if (config.rootfs.diff_ids.length !== manifest.layers.length) {
    throw new StoreError(
      'STORE_INVALID_DOCUMENT',
      `${src.name}: config lists ${config.rootfs.diff_ids.length} diff_ids for ${manifest.layers.length} layers`,
      { subject: src.name },
    );
  }
  return { descriptor, manifest, config, configBytes, ...(index ? { index } : {}) };
}

/** Merges the image's tar layers into one tree (contents spooled to `spool`). */
export async function mergedTree(
  src: ImageSource,
  docs: ImageDocuments,
  spool: Spool,
  options: TarTreeOptions = {},
): Promise<Tree> {
  // Loaded on use: commands that only move blobs (copy, sync) need no tar or tree code.
  const [{ decompress }, { applyLayer, emptyDir }] = await Promise.all([
    import('../tar/index.ts'),
    import('../tree/index.ts'),
  ]);
  const tree: Tree = { root: emptyDir() };
  for (const layer of docs.manifest.layers) {
    if (!isTarLayer(layer.mediaType)) {
      throw new StoreError(
        'STORE_UNSUPPORTED',
        `${src.name}: layer ${layer.digest} is ${layer.mediaType}, not a tar layer`,
        {
          subject: layer.digest,
        },
      );
    }
    await applyLayer(tree, decompress(src.getBlob(layer)), spool, options);
  }
  return tree;
}

/** Writes the image's merged root filesystem into `dir`. */
export async function unpackImage(src: ImageSource, dir: string): Promise<ImageDocuments> {
  const docs = await readImage(src);
  const { Spool, writeTreeToDirectory } = await import('../tree/index.ts');
  const spool = await Spool.create();
  try {
    await writeTreeToDirectory(await mergedTree(src, docs, spool), dir);
  } finally {
    await spool.close();
  }
  return docs;
}
