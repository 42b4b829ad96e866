/**
 * Sealing for composefs, in the "metadata included" mode of the composefs OCI sealing
 * specification: the tar layers stay as they are, and the image carries the fs-verity digests
 * of the composefs EROFS images regenerated canonically from them (format 1, SHA-256, 4 KiB):
 * one per layer on the layer descriptors, the merged tree's in the manifest annotations, and
 * the config's on the config descriptor. Verifying regenerates the images and compares.
 */
import { composefsTree, writeComposefsImage } from '../composefs/index.ts';
import { digestOf } from '../oci/digest.ts';
import { MediaType } from '../oci/mediatypes.ts';
import type { ImageDestination, ImageSource } from '../oci/transport.ts';
import type { Descriptor, Manifest } from '../oci/types.ts';
import { type ImageDocuments, isTarLayer, readImage } from '../store/index.ts';
import { decompress } from '../tar/index.ts';
import { applyLayer, emptyDir, layerTree, Spool, type Tree, TreeError } from '../tree/index.ts';
import { fsverityDigest } from '../verity/index.ts';
import {
  COMPOSEFS_CONFIG_ANNOTATION,
  COMPOSEFS_LAYER_ANNOTATION,
  COMPOSEFS_MERGED_ANNOTATION,
} from './formats.ts';
import type { KernelSigner } from './kernel-signatures.ts';
import { attachSignature, type SignedEntry } from './sign.ts';
import { ImageVerifyError, type LayerReport } from './verify.ts';

export interface ComposefsDigests {
  layers: string[];
  merged: string;
  config: string;
  /** Per layer: hardlinks to a lower layer's file that are copies in that layer's own image. */
  hardlinksCopied: number[];
}

async function treeDigest(tree: Tree): Promise<string> {
  const { digest } = await writeComposefsImage(await composefsTree(tree), { version: 1 });
  return digest.toString('hex');
}

/** The composefs digests of an image, regenerated from its tar layers. */
export async function composefsDigests(
  src: ImageSource,
  docs: ImageDocuments,
  spool: Spool,
): Promise<ComposefsDigests> {
  const layers: string[] = [];
  const copied: number[] = docs.manifest.layers.map(() => 0);
  const merged: Tree = { root: emptyDir() };
  for (const [index, layer] of docs.manifest.layers.entries()) {
    if (!isTarLayer(layer.mediaType)) {
      throw new ImageVerifyError(
        'IMAGE_NOT_SEALED',
        `${src.name}: layer ${layer.digest} is not a tar layer`,
        {
          subject: layer.digest,
        },
      );
    }
    // A layer alone, its whiteouts in overlayfs form (composefs escapes them in the image);
    // hardlinks may reach into the layers below.
    try {
      const tree = await layerTree(decompress(src.getBlob(layer)), spool, {
        whiteouts: 'overlayfs',
        lower: merged,
        symlinkModes: 'header',
        onLowerHardlink: () => {
          copied[index]!++;
        },
      });
      layers.push(await treeDigest(tree));
      await applyLayer(merged, decompress(src.getBlob(layer)), spool, { symlinkModes: 'header' });
    } catch (error) {
      if (!(error instanceof TreeError)) throw error;
      throw new ImageVerifyError(
        'IMAGE_LAYER_CORRUPT',
        `${src.name}: layer ${index + 1} (${layer.digest}): ${error.message}`,
        {
          subject: layer.digest,
          cause: error,
        },
      );
    }
  }
  return {
    layers,
    merged: await treeDigest(merged),
    config: (await fsverityDigest(docs.configBytes)).toString('hex'),
    hardlinksCopied: copied,
  };
}

/** Writes the image with its composefs digests annotated; the layers are copied unchanged. */
export async function sealComposefs(
  src: ImageSource,
  dst: ImageDestination,
  options: { tag?: string; onLayer?: (index: number, total: number) => void; signer?: KernelSigner },
): Promise<{
  descriptor: Descriptor;
  layers: { digest: string; size: number; rootHash: string; kept: boolean; hardlinksCopied?: number }[];
  signature?: { artifact: Descriptor; entries: SignedEntry[] };
}> {
  const docs = await readImage(src);
  const spool = await Spool.create();
  try {
    const digests = await composefsDigests(src, docs, spool);
    const layers: Descriptor[] = [];
    for (const [i, layer] of docs.manifest.layers.entries()) {
      options.onLayer?.(i, docs.manifest.layers.length);
      if (!(await dst.hasBlob(layer))) await dst.putBlob(layer, src.getBlob(layer));
      layers.push({
        ...layer,
        annotations: { ...layer.annotations, [COMPOSEFS_LAYER_ANNOTATION]: digests.layers[i]! },
      });
    }
    const config: Descriptor = {
      ...docs.manifest.config,
      annotations: { ...docs.manifest.config.annotations, [COMPOSEFS_CONFIG_ANNOTATION]: digests.config },
    };
    if (!(await dst.hasBlob(config))) {
      await dst.putBlob(
        config,
        (async function* () {
          yield docs.configBytes;
        })(),
      );
    }
    const manifest: Manifest = {
      ...docs.manifest,
      config,
      layers,
      annotations: { ...docs.manifest.annotations, [COMPOSEFS_MERGED_ANNOTATION]: digests.merged },
    };
    const bytes = Buffer.from(JSON.stringify(manifest));
    const descriptor: Descriptor = {
      mediaType: MediaType.ImageManifest,
      digest: digestOf(bytes),
      size: bytes.length,
    };
    await dst.putManifest(descriptor, bytes, options.tag);
    const signature = options.signer
      ? await attachSignature(
          dst,
          { name: dst.name, descriptor, manifest, manifestBytes: bytes, configBytes: docs.configBytes },
          options.signer,
        )
      : undefined;
    await dst.commit();
    return {
      ...(signature ? { signature } : {}),
      descriptor,
      layers: layers.map((l, i) => ({
        digest: l.digest,
        size: l.size,
        rootHash: digests.layers[i]!,
        kept: true,
        ...(digests.hardlinksCopied[i] ? { hardlinksCopied: digests.hardlinksCopied[i] } : {}),
      })),
    };
  } finally {
    await spool.close();
  }
}

/** Regenerates the composefs images of a sealed image and compares every annotated digest. */
export async function verifyComposefs(
  src: ImageSource,
  docs: ImageDocuments,
  onLayer?: (r: LayerReport) => void,
): Promise<LayerReport[]> {
  const spool = await Spool.create();
  try {
    const digests = await composefsDigests(src, docs, spool);
    const expectedConfig = docs.manifest.config.annotations?.[COMPOSEFS_CONFIG_ANNOTATION];
    if (expectedConfig !== digests.config) {
      throw new ImageVerifyError(
        'IMAGE_INCONSISTENT',
        `${src.name}: the config's fs-verity digest is ${digests.config}, the image says ${expectedConfig ?? 'nothing'}`,
        { subject: docs.manifest.config.digest },
      );
    }
    const reports: LayerReport[] = [];
    for (const [index, layer] of docs.manifest.layers.entries()) {
      const expected = layer.annotations?.[COMPOSEFS_LAYER_ANNOTATION];
      if (expected !== digests.layers[index]) {
        throw new ImageVerifyError(
          'IMAGE_LAYER_CORRUPT',
          `${src.name}: layer ${index + 1} (${layer.digest}): its composefs image digest is ${digests.layers[index]}, the image says ${expected ?? 'nothing'}`,
          { subject: layer.digest },
        );
      }
      const report = {
        index,
        digest: layer.digest,
        filesystem: 'composefs',
        rootHash: expected,
        dataBlocks: 0,
        ...(digests.hardlinksCopied[index] ? { hardlinksCopied: digests.hardlinksCopied[index] } : {}),
      };
      reports.push(report);
      onLayer?.(report);
    }
    const merged = docs.manifest.annotations?.[COMPOSEFS_MERGED_ANNOTATION];
    if (merged !== digests.merged) {
      throw new ImageVerifyError(
        'IMAGE_INCONSISTENT',
        `${src.name}: the merged composefs image digest is ${digests.merged}, the image says ${merged}`,
        { subject: src.name },
      );
    }
    return reports;
  } finally {
    await spool.close();
  }
}
