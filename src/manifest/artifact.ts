/**
 * Writing a one-layer OCI artifact (empty config, canonical JSON manifest) to any destination:
 * the system manifest itself and the signatures attached to it.
 */
import { digestOf } from '../oci/digest.ts';
import { EMPTY_JSON, MediaType } from '../oci/mediatypes.ts';
import type { Descriptor } from '../oci/types.ts';
import { type OpenOptions, openDestination } from '../store/index.ts';
import { canonicalJson } from './spec.ts';

const once = (b: Uint8Array) =>
  (async function* () {
    yield b;
  })();

export interface ArtifactSpec {
  artifactType: string;
  layerMediaType: string;
  layer: Uint8Array;
  subject?: Descriptor;
  annotations?: Record<string, string>;
  /** Tag at the destination (a signature is found through its subject, untagged). */
  tag?: string;
}

/** `transport`: registry options, for a `docker://` destination. */
export async function putArtifact(
  dest: string,
  spec: ArtifactSpec,
  transport: OpenOptions = {},
): Promise<Descriptor> {
  const layer: Descriptor = {
    mediaType: spec.layerMediaType,
    digest: digestOf(spec.layer),
    size: spec.layer.length,
  };
  const config: Descriptor = {
    mediaType: EMPTY_JSON.mediaType,
    digest: EMPTY_JSON.digest,
    size: EMPTY_JSON.size,
  };
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    artifactType: spec.artifactType,
    config,
    layers: [layer],
    ...(spec.subject ? { subject: spec.subject } : {}),
    ...(spec.annotations ? { annotations: spec.annotations } : {}),
  };
  const bytes = Buffer.from(canonicalJson(manifest));
  const descriptor: Descriptor = {
    mediaType: MediaType.ImageManifest,
    digest: digestOf(bytes),
    size: bytes.length,
    artifactType: spec.artifactType,
  };
  const dst = await openDestination(dest, transport);
  try {
    if (!(await dst.hasBlob(config))) await dst.putBlob(config, once(Buffer.from('{}')));
    if (!(await dst.hasBlob(layer))) await dst.putBlob(layer, once(spec.layer));
    await dst.putManifest(descriptor, bytes, spec.tag);
    await dst.commit();
  } finally {
    await dst.close();
  }
  return descriptor;
}
