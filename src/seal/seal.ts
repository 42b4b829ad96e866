/**
 * Sealing: every tar layer of an image becomes a squashfs image of that layer, whiteouts in
 * the form overlayfs reads under atomfs's `userxattr` mounts, with its dm-verity tree appended
 * (the stacker/atomfs layout); the descriptor carries stacker's media type and the root hash.
 * Layers already sealed are kept. `flatten` seals the merged tree as a single layer.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeErofs } from '../erofs/index.ts';
import { SealError } from '../errors.ts';
import { Digester, digestOf } from '../oci/digest.ts';
import { MediaType } from '../oci/mediatypes.ts';
import type { ImageDestination, ImageSource } from '../oci/transport.ts';
import type { Descriptor, ImageConfig, Manifest } from '../oci/types.ts';
import { writeSquashfs } from '../squashfs/index.ts';
import { type ImageDocuments, isTarLayer, readImage } from '../store/index.ts';
import { decompress } from '../tar/index.ts';
import { applyLayer, emptyDir, layerTree, Spool, type Tree } from '../tree/index.ts';
import { appendVerity } from '../verity/index.ts';
import { sealComposefs } from './composefs.ts';
import {
  HARDLINKS_COPIED_ANNOTATION,
  isSealedLayer,
  StackerMediaType,
  VERITY_ANNOTATION,
} from './formats.ts';
import type { KernelSigner } from './kernel-signatures.ts';
import { attachSignature, type SignedEntry } from './sign.ts';
import { hardlinkCount } from './verify.ts';

export class SealingError extends SealError<'SEAL_UNSUPPORTED_LAYER' | 'SEAL_INVALID_OPTION'> {}

export type SealFormat = 'squashfs' | 'erofs' | 'composefs';

export interface SealOptions {
  format: SealFormat;
  /** squashfs compression (EROFS layers are uncompressed). */
  compression?: 'zstd' | 'gzip';
  /** One layer of the merged tree instead of one per layer. */
  flatten?: boolean;
  /** Tag at the destination. */
  tag?: string;
  onLayer?: (index: number, total: number) => void;
  /** Also sign what the kernel will check (dm-verity root hashes, composefs images) and attach it. */
  signer?: KernelSigner;
}

export interface SealResult {
  descriptor: Descriptor;
  layers: {
    digest: string;
    size: number;
    rootHash: string;
    kept: boolean;
    /** Hardlinks to a lower layer's file that are copies in this layer's own filesystem. */
    hardlinksCopied?: number;
  }[];
  /** The signature artifact attached, when a signer was given. */
  signature?: { artifact: Descriptor; entries: SignedEntry[] };
}

async function fileDigest(path: string): Promise<{ digest: string; size: number }> {
  const d = new Digester('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) d.update(chunk as Buffer);
  return { digest: d.digest(), size: d.size };
}

/** Writes `tree` as a verity-protected squashfs or EROFS layer and stores it at `dst`. */
async function sealTree(
  tree: Tree,
  work: string,
  dst: ImageDestination,
  options: SealOptions,
  index: number,
  hardlinksCopied = 0,
) {
  const image = join(work, `layer-${index}.img`);
  const compression = options.compression ?? 'zstd';
  // Layers are reproducible: no time of day in the superblock (EROFS: the oldest mtime).
  if (options.format === 'erofs') await writeErofs(tree, image);
  else await writeSquashfs(tree, image, { compression, mkfsTime: 0 });
  const verity = await appendVerity(image, {
    salt: new Uint8Array(0),
    uuid: '00000000-0000-0000-0000-000000000000',
  });
  const { digest, size } = await fileDigest(image);
  const rootHash = verity.rootHash.toString('hex');
  const descriptor: Descriptor = {
    mediaType:
      options.format === 'erofs'
        ? StackerMediaType.Erofs
        : compression === 'zstd'
          ? StackerMediaType.SquashfsZstd
          : StackerMediaType.SquashfsGzip,
    digest,
    size,
    annotations: {
      [VERITY_ANNOTATION]: rootHash,
      ...(hardlinksCopied ? { [HARDLINKS_COPIED_ANNOTATION]: String(hardlinksCopied) } : {}),
    },
  };
  if (!(await dst.hasBlob(descriptor)))
    await dst.putBlob(descriptor, createReadStream(image, { highWaterMark: 1 << 20 }));
  await rm(image, { force: true });
  return { descriptor, rootHash };
}

export async function sealImage(
  src: ImageSource,
  dst: ImageDestination,
  options: SealOptions,
): Promise<SealResult> {
  if (options.format === 'composefs') return sealComposefs(src, dst, options);
  const docs: ImageDocuments = await readImage(src);
  const work = await mkdtemp(join(process.env.SEAL_TMPDIR ?? tmpdir(), 'seal-'));
  const spool = await Spool.create(work);
  try {
    const layers: Descriptor[] = [];
    const result: SealResult['layers'] = [];
    const merged: Tree = { root: emptyDir() };
    const total = docs.manifest.layers.length;
    const tarLayer = (layer: Descriptor) => {
      if (!isTarLayer(layer.mediaType)) {
        throw new SealingError(
          'SEAL_UNSUPPORTED_LAYER',
          `${src.name}: layer ${layer.digest} is ${layer.mediaType}, neither tar nor sealed`,
          {
            subject: layer.digest,
          },
        );
      }
      return decompress(src.getBlob(layer));
    };
    if (options.flatten) {
      for (const layer of docs.manifest.layers) await applyLayer(merged, tarLayer(layer), spool);
      const sealed = await sealTree(merged, work, dst, options, 0);
      layers.push(sealed.descriptor);
      result.push({
        digest: sealed.descriptor.digest,
        size: sealed.descriptor.size,
        rootHash: sealed.rootHash,
        kept: false,
      });
    } else {
      for (const [i, layer] of docs.manifest.layers.entries()) {
        options.onLayer?.(i, total);
        if (isSealedLayer(layer)) {
          if (!(await dst.hasBlob(layer))) await dst.putBlob(layer, src.getBlob(layer));
          layers.push(layer);
          result.push({
            digest: layer.digest,
            size: layer.size,
            rootHash: layer.annotations![VERITY_ANNOTATION] ?? '',
            kept: true,
            ...hardlinkCount(layer),
          });
          continue;
        }
        let copied = 0;
        const tree = await layerTree(tarLayer(layer), spool, {
          whiteouts: 'overlayfs',
          xattrPrefix: 'user.overlay.',
          lower: merged,
          onLowerHardlink: () => copied++,
        });
        // The merged view below the next layer, for hardlinks that reach into lower layers.
        if (i < total - 1) await applyLayer(merged, tarLayer(layer), spool);
        const sealed = await sealTree(tree, work, dst, options, i, copied);
        layers.push(sealed.descriptor);
        result.push({
          digest: sealed.descriptor.digest,
          size: sealed.descriptor.size,
          rootHash: sealed.rootHash,
          kept: false,
          ...(copied ? { hardlinksCopied: copied } : {}),
        });
      }
    }
    const config: ImageConfig = {
      ...docs.config,
      // A sealed layer has no uncompressed form: its diff_id is its own digest.
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
      ...(options.flatten
        ? { history: [{ created_by: 'seal image seal --flatten', comment: `flattened ${total} layers` }] }
        : {}),
    };
    const configBytes = Buffer.from(JSON.stringify(config));
    const configDesc: Descriptor = {
      mediaType: MediaType.ImageConfig,
      digest: digestOf(configBytes),
      size: configBytes.length,
    };
    await dst.putBlob(
      configDesc,
      (async function* () {
        yield configBytes;
      })(),
    );
    const manifest: Manifest = {
      schemaVersion: 2,
      mediaType: MediaType.ImageManifest,
      config: configDesc,
      layers,
      ...(docs.manifest.annotations ? { annotations: docs.manifest.annotations } : {}),
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
          { name: dst.name, descriptor, manifest, manifestBytes: bytes, configBytes },
          options.signer,
        )
      : undefined;
    await dst.commit();
    return { descriptor, layers: result, ...(signature ? { signature } : {}) };
  } finally {
    await spool.close();
    await rm(work, { recursive: true, force: true });
  }
}
