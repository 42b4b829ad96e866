import type { Descriptor, Manifest } from '../oci/types.ts';
import { isComposefsSealed, isSealedLayer, layerFilesystem } from '../seal/formats.ts';
import { destinationTag, type OpenOptions, openSource, readImage } from '../store/index.ts';
import { putArtifact } from './artifact.ts';
import { ManifestError } from './errors.ts';
import {
  canonicalJson,
  SYSTEM_ARTIFACT_TYPE,
  SYSTEM_MEDIA_TYPE,
  type SystemManifest,
  type SystemSpec,
  type SystemTarget,
} from './spec.ts';

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

export async function resolveTargets(spec: SystemSpec, transport: OpenOptions = {}): Promise<SystemTarget[]> {
  const targets: SystemTarget[] = [];
  for (const t of spec.targets) {
    const src = await openSource(t.image, transport);
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

/** `transport`: registry options, for `docker://` targets and destination. */
export async function buildSystem(
  spec: SystemSpec,
  dest: string,
  transport: OpenOptions = {},
): Promise<BuiltSystem> {
  const document: SystemManifest = {
    schemaVersion: 1,
    product: spec.product,
    version: spec.version,
    ...(spec.securityVersion !== undefined ? { securityVersion: spec.securityVersion } : {}),
    ...(spec.downgrade ? { downgrade: true } : {}),
    updateType: spec.updateType,
    targets: await resolveTargets(spec, transport),
    storage: spec.storage,
  };
  const descriptor = await putArtifact(
    dest,
    {
      artifactType: SYSTEM_ARTIFACT_TYPE,
      layerMediaType: SYSTEM_MEDIA_TYPE,
      layer: Buffer.from(canonicalJson(document)),
      tag: destinationTag(dest),
    },
    transport,
  );
  return { descriptor, document };
}
