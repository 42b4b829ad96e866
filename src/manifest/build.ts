/**
 * `seal manifest build`: resolves every target of the author's YAML to its sealed image
 * manifest, pins it by digest and size, and stores the canonical system manifest as an OCI
 * artifact (own artifactType, empty config, no subject).
 */
import { digestOf } from '../oci/digest.ts';
import { EMPTY_JSON, MediaType } from '../oci/mediatypes.ts';
import type { Descriptor, Manifest } from '../oci/types.ts';
import { isComposefsSealed, isSealedLayer, layerFilesystem } from '../seal/formats.ts';
import { destinationTag, openDestination, openSource, readImage } from '../store/index.ts';
import { ManifestError } from './errors.ts';
import {
  canonicalJson,
  SYSTEM_ARTIFACT_TYPE,
  SYSTEM_MEDIA_TYPE,
  type SystemManifest,
  type SystemSpec,
  type SystemTarget,
} from './spec.ts';

const bytesOf = (b: Uint8Array) =>
  (async function* () {
    yield b;
  })();

/** The sealing of an image, or an error naming why it is not sealed. */
function sealingOf(name: string, reference: string, manifest: Manifest): string {
  if (isComposefsSealed(manifest)) return 'composefs';
  const unsealed = manifest.layers.findIndex((l) => !isSealedLayer(l));
  if (unsealed >= 0) {
    throw new ManifestError(
      'MANIFEST_NOT_SEALED',
      `target ${name}: ${reference} is not sealed (layer ${unsealed + 1} is ${manifest.layers[unsealed]!.mediaType}); run seal image seal first`,
      { subject: reference },
    );
  }
  return layerFilesystem(manifest.layers[0]!.mediaType) ?? 'unknown';
}

export async function resolveTargets(spec: SystemSpec): Promise<SystemTarget[]> {
  const targets: SystemTarget[] = [];
  for (const t of spec.targets) {
    const src = await openSource(t.image);
    try {
      const docs = await readImage(src);
      targets.push({
        name: t.name,
        role: t.role,
        reference: t.image,
        image: {
          mediaType: docs.descriptor.mediaType,
          digest: docs.descriptor.digest,
          size: docs.descriptor.size,
        },
        sealing: sealingOf(t.name, t.image, docs.manifest),
        ...(t.service ? { service: t.service } : {}),
      });
    } finally {
      await src.close();
    }
  }
  return targets;
}

export interface BuiltSystem {
  descriptor: Descriptor;
  document: SystemManifest;
}

export async function buildSystem(spec: SystemSpec, dest: string): Promise<BuiltSystem> {
  const document: SystemManifest = {
    schemaVersion: 1,
    product: spec.product,
    version: spec.version,
    updateType: spec.updateType,
    targets: await resolveTargets(spec),
    storage: spec.storage,
  };
  const body = Buffer.from(canonicalJson(document));
  const layer: Descriptor = { mediaType: SYSTEM_MEDIA_TYPE, digest: digestOf(body), size: body.length };
  const config: Descriptor = {
    mediaType: EMPTY_JSON.mediaType,
    digest: EMPTY_JSON.digest,
    size: EMPTY_JSON.size,
  };
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    artifactType: SYSTEM_ARTIFACT_TYPE,
    config,
    layers: [layer],
  };
  const bytes = Buffer.from(canonicalJson(manifest));
  const descriptor: Descriptor = {
    mediaType: MediaType.ImageManifest,
    digest: digestOf(bytes),
    size: bytes.length,
    artifactType: SYSTEM_ARTIFACT_TYPE,
  };
  const dst = await openDestination(dest);
  try {
    if (!(await dst.hasBlob(config))) await dst.putBlob(config, bytesOf(Buffer.from('{}')));
    if (!(await dst.hasBlob(layer))) await dst.putBlob(layer, bytesOf(body));
    await dst.putManifest(descriptor, bytes, destinationTag(dest));
    await dst.commit();
  } finally {
    await dst.close();
  }
  return { descriptor, document };
}
