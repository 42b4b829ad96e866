/**
 * Verifying a sealed image: manifest and config digests (checked as they are read), the
 * config's diff_ids against the layers, then each sealed layer's dm-verity tree against its
 * annotated root hash, block by block. The first failure names the layer and the block.
 */
import { createWriteStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SealError } from '../errors.ts';
import type { ImageSource } from '../oci/transport.ts';
import { readImage } from '../store/index.ts';
import { VerityError, verifyVerity } from '../verity/index.ts';
import { verifyComposefs } from './composefs.ts';
import {
  HARDLINKS_COPIED_ANNOTATION,
  isComposefsSealed,
  layerFilesystem,
  verityRootHash,
} from './formats.ts';

export class ImageVerifyError extends SealError<
  | 'IMAGE_NOT_SEALED'
  | 'IMAGE_LAYER_CORRUPT'
  | 'IMAGE_INCONSISTENT'
  /** No kernel signature of the image's kind is attached. */
  | 'IMAGE_UNSIGNED'
  /** Signatures are attached, none is accepted. */
  | 'IMAGE_SIGNATURE_INVALID'
> {}

export interface LayerReport {
  index: number;
  digest: string;
  filesystem: string;
  rootHash: string;
  dataBlocks: number;
  /** Hardlinks to a lower layer's file that are copies in this layer's own filesystem. */
  hardlinksCopied?: number;
}

/** Where a layer's filesystem ends and its appended hash tree starts. */
export async function hashOffsetOf(path: string, filesystem: string): Promise<number> {
  const handle = await open(path, 'r');
  try {
    const head = Buffer.alloc(1024 + 128);
    await handle.read(head, 0, head.length, 0);
    if (filesystem === 'squashfs') return Math.ceil(Number(head.readBigUInt64LE(40)) / 4096) * 4096;
    // EROFS: superblock at 1024; blocks (u32 at +36) << blkszbits (u8 at +12).
    return head.readUInt32LE(1024 + 36) * 2 ** head[1024 + 12]!;
  } finally {
    await handle.close();
  }
}

/** The hardlink copies a sealed layer's annotation records (none when absent). */
export function hardlinkCount(layer: { annotations?: Record<string, string> }): { hardlinksCopied?: number } {
  const n = Number(layer.annotations?.[HARDLINKS_COPIED_ANNOTATION] ?? 0);
  return Number.isSafeInteger(n) && n > 0 ? { hardlinksCopied: n } : {};
}

export async function verifyImage(
  src: ImageSource,
  onLayer?: (r: LayerReport) => void,
): Promise<LayerReport[]> {
  const docs = await readImage(src);
  if (isComposefsSealed(docs.manifest)) return verifyComposefs(src, docs, onLayer);
  const { manifest, config } = docs;
  const reports: LayerReport[] = [];
  const work = await mkdtemp(join(process.env.SEAL_TMPDIR ?? tmpdir(), 'seal-verify-'));
  try {
    for (const [index, layer] of manifest.layers.entries()) {
      const filesystem = layerFilesystem(layer.mediaType);
      const root = verityRootHash(layer);
      const name = `layer ${index + 1} (${layer.digest})`;
      if (!filesystem || !root) {
        throw new ImageVerifyError(
          'IMAGE_NOT_SEALED',
          `${src.name}: ${name} is ${layer.mediaType} without a verity root hash: not sealed`,
          {
            subject: layer.digest,
          },
        );
      }
      if (config.rootfs.diff_ids[index] !== layer.digest) {
        throw new ImageVerifyError(
          'IMAGE_INCONSISTENT',
          `${src.name}: ${name} is not the config's layer ${index + 1} (${config.rootfs.diff_ids[index]})`,
          {
            subject: layer.digest,
          },
        );
      }
      const path = join(work, `layer-${index}`);
      await pipeline(Readable.from(src.getBlob(layer)), createWriteStream(path));
      const hashOffset = await hashOffsetOf(path, filesystem);
      try {
        const params = await verifyVerity(path, path, root, { hashOffset });
        const report = {
          index,
          digest: layer.digest,
          filesystem,
          rootHash: root,
          dataBlocks: params.dataBlocks,
          ...hardlinkCount(layer),
        };
        reports.push(report);
        onLayer?.(report);
      } catch (error) {
        if (!(error instanceof VerityError)) throw error;
        throw new ImageVerifyError(
          'IMAGE_LAYER_CORRUPT',
          `${src.name}: ${name}: ${error.message.replace(`${path}: `, '')}`,
          {
            subject: layer.digest,
            cause: error,
          },
        );
      } finally {
        await rm(path, { force: true });
      }
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return reports;
}
