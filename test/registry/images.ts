/** In-memory images for the registry tests: a seeded random image, and a transport holding blobs in a Map. */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Digester, digestOf } from '../../src/oci/digest.ts';
import { MediaType } from '../../src/oci/mediatypes.ts';
import type { ImageDestination, ImageSource } from '../../src/oci/transport.ts';
import type { Descriptor, Index, Manifest } from '../../src/oci/types.ts';
import {
  type MirrorOptions,
  mirror,
  openRegistryDestination,
  type RegistryOptions,
} from '../../src/registry/index.ts';

/** Deterministic bytes (xorshift32). */
export function randomBytesSeeded(seed: number, size: number): Buffer {
  const out = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

export function describe(mediaType: string, bytes: Uint8Array, extra: Partial<Descriptor> = {}): Descriptor {
  return { mediaType, digest: digestOf(bytes), size: bytes.length, ...extra };
}

/** An image store in memory that is both a source and a destination, verifying what it receives. */
export class MemoryImages implements ImageSource, ImageDestination {
  readonly name: string;
  blobs = new Map<string, Buffer>();
  tags = new Map<string, Descriptor>();
  root: Descriptor | undefined;
  constructor(name = 'memory') {
    this.name = name;
  }
  async resolve(): Promise<Descriptor> {
    if (!this.root) throw new Error('no root');
    return this.root;
  }
  async getManifest(desc: Descriptor): Promise<Uint8Array> {
    const bytes = this.blobs.get(desc.digest);
    if (!bytes) throw new Error(`no manifest ${desc.digest}`);
    return bytes;
  }
  async *getBlob(desc: Descriptor): AsyncGenerator<Uint8Array> {
    const bytes = this.blobs.get(desc.digest);
    if (!bytes) throw new Error(`no blob ${desc.digest}`);
    for (let i = 0; i < bytes.length; i += 65536) yield bytes.subarray(i, i + 65536);
  }
  async referrers(desc: Descriptor): Promise<Descriptor[]> {
    const found: Descriptor[] = [];
    for (const [digest, bytes] of this.blobs) {
      try {
        const doc = JSON.parse(bytes.toString('utf8')) as Manifest;
        if (doc.subject?.digest === desc.digest)
          found.push({
            mediaType: doc.mediaType ?? MediaType.ImageManifest,
            digest,
            size: bytes.length,
            ...(doc.artifactType ? { artifactType: doc.artifactType } : {}),
          });
      } catch {}
    }
    return found;
  }
  async hasBlob(desc: Descriptor): Promise<boolean> {
    return this.blobs.has(desc.digest);
  }
  async putBlob(desc: Descriptor, data: AsyncIterable<Uint8Array>): Promise<void> {
    const digester = new Digester();
    const chunks: Uint8Array[] = [];
    for await (const chunk of data) {
      digester.update(chunk);
      chunks.push(chunk);
    }
    // Only verified content is ever stored.
    if (digester.size !== desc.size || digester.digest() !== desc.digest)
      throw new Error(`bad blob ${JSON.stringify(desc)}: ${digester.size} bytes, ${digester.digest()}`);
    this.blobs.set(desc.digest, Buffer.concat(chunks));
  }
  async putManifest(desc: Descriptor, bytes: Uint8Array, tag?: string): Promise<void> {
    if (digestOf(bytes) !== desc.digest) throw new Error('bad manifest');
    this.blobs.set(desc.digest, Buffer.from(bytes));
    this.root = desc;
    if (tag) this.tags.set(tag, desc);
  }
  async commit(): Promise<void> {}
  async close(): Promise<void> {}

  add(bytes: Uint8Array, mediaType: string, extra: Partial<Descriptor> = {}): Descriptor {
    const desc = describe(mediaType, bytes, extra);
    this.blobs.set(desc.digest, Buffer.from(bytes));
    return desc;
  }
}

/** A seeded image: `layers` random layers of the given sizes, a config, an OCI manifest. */
export function makeImage(images: MemoryImages, seed: number, layerSizes: number[]): Descriptor {
  const layers = layerSizes.map((size, i) =>
    images.add(randomBytesSeeded(seed * 131 + i + 1, size), MediaType.LayerGzip),
  );
  const config = images.add(
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
        seed,
      }),
    ),
    MediaType.ImageConfig,
  );
  const manifest: Manifest = { schemaVersion: 2, mediaType: MediaType.ImageManifest, config, layers };
  const desc = images.add(Buffer.from(JSON.stringify(manifest)), MediaType.ImageManifest);
  images.root = desc;
  return desc;
}

/** An artifact attached to `subject` (a signature, say). */
export function makeReferrer(
  images: MemoryImages,
  subject: Descriptor,
  artifactType: string,
  payload: string,
): Descriptor {
  const layer = images.add(Buffer.from(payload), 'application/octet-stream');
  const config = images.add(Buffer.from('{}'), MediaType.Empty);
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    artifactType,
    config,
    layers: [layer],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
  };
  return images.add(Buffer.from(JSON.stringify(manifest)), MediaType.ImageManifest, { artifactType });
}

export function makeIndex(images: MemoryImages, manifests: Descriptor[]): Descriptor {
  const index: Index = { schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests };
  const desc = images.add(Buffer.from(JSON.stringify(index)), MediaType.ImageIndex);
  images.root = desc;
  return desc;
}

/** Writes an OCI image layout (for skopeo) holding every blob, with `root` tagged `tag`. */
export function writeLayout(images: MemoryImages, dir: string, root: Descriptor, tag: string): void {
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  for (const [digest, bytes] of images.blobs)
    writeFileSync(join(dir, 'blobs', 'sha256', digest.slice(7)), bytes);
  const index = {
    schemaVersion: 2,
    manifests: [{ ...root, annotations: { 'org.opencontainers.image.ref.name': tag } }],
  };
  writeFileSync(join(dir, 'index.json'), JSON.stringify(index));
}

/** Reads an OCI layout written by skopeo into memory; returns the tagged root. */
export function readLayout(dir: string, images: MemoryImages): Descriptor {
  const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as Index;
  const root = index.manifests[0] as Descriptor;
  const load = (desc: Descriptor): void => {
    const bytes = readFileSync(join(dir, 'blobs', 'sha256', desc.digest.slice(7)));
    images.blobs.set(desc.digest, bytes);
    if (desc.mediaType === MediaType.ImageManifest) {
      const m = JSON.parse(bytes.toString('utf8')) as Manifest;
      load(m.config);
      m.layers.forEach(load);
    }
  };
  load(root);
  return { mediaType: root.mediaType, digest: root.digest, size: root.size };
}

/** Pushes what `images` holds to the registry reference `ref` (its root tagged v1 by default). */
export async function pushImages(
  images: MemoryImages,
  ref: string,
  options: RegistryOptions,
  copy: MirrorOptions = { tag: 'v1' },
): Promise<void> {
  const dst = await openRegistryDestination(ref, options);
  try {
    await mirror(images, dst, copy);
  } finally {
    await dst.close();
  }
}
