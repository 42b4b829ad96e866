/**
 * The artifacts that carry kernel-checked signatures beside a sealed image, attached to its
 * manifest through `subject` (OCI referrers), one artifact per signer:
 *
 * - composefs images: the composefs OCI sealing specification's metadata artifact
 *   (artifactType `application/vnd.composefs.metadata.v1`, empty config), one layer of type
 *   `application/vnd.composefs.signature.v1+pkcs7` per signed object, in the order manifest,
 *   config, each layer's EROFS (in image order), merged EROFS; each layer's annotation names the
 *   object's role and fs-verity digest (`composefs.{role}[.erofs.v1].fsverity-sha256-12`), its
 *   blob is the PKCS#7 fs-verity signature of that digest.
 * - squashfs/EROFS images with dm-verity: Seal's artifact (artifactType
 *   `application/vnd.seal.verity.signatures.v1`, empty config), one layer of type
 *   `application/vnd.seal.verity.signature.v1+pkcs7` per image layer, annotated with the root
 *   hash it signs (`seal.verity.root-hash`) and the layer it belongs to (`seal.verity.layer`,
 *   the layer descriptor's digest); its blob is the dm-verity root-hash signature.
 *
 * See docs/signatures.md. The manifests are written with a fixed key order and no timestamps, so
 * the same signer signing the same image (with an RSA key) makes the same artifact.
 */
import { SealError } from '../errors.ts';
import { digestOf } from '../oci/digest.ts';
import { EMPTY_JSON, MediaType } from '../oci/mediatypes.ts';
import type { ImageDestination } from '../oci/transport.ts';
import type { Descriptor, Manifest } from '../oci/types.ts';

export const COMPOSEFS_METADATA_ARTIFACT_TYPE = 'application/vnd.composefs.metadata.v1';
export const COMPOSEFS_SIGNATURE_MEDIA_TYPE = 'application/vnd.composefs.signature.v1+pkcs7';
export const VERITY_SIGNATURES_ARTIFACT_TYPE = 'application/vnd.seal.verity.signatures.v1';
export const VERITY_SIGNATURE_MEDIA_TYPE = 'application/vnd.seal.verity.signature.v1+pkcs7';
export const VERITY_ROOT_HASH_ANNOTATION = 'seal.verity.root-hash';
export const VERITY_LAYER_ANNOTATION = 'seal.verity.layer';

/** A PKCS#7 signature blob is small; anything larger is not one. */
export const MAX_SIGNATURE_SIZE = 64 << 10;

export class SignatureArtifactError extends SealError<'SIGNATURE_ARTIFACT_INVALID'> {}

/** What a composefs signature entry covers. */
export type ComposefsRole = 'manifest' | 'config' | 'layer' | 'merged' | 'merged.bootable';
const ROLE_ORDER: ComposefsRole[] = ['manifest', 'config', 'layer', 'merged', 'merged.bootable'];

/** The annotation key of a role (SHA-256 fs-verity digests over 4 KiB blocks, as Seal seals). */
export function composefsRoleKey(role: ComposefsRole, algorithm = 'sha256-12'): string {
  return role === 'manifest' || role === 'config'
    ? `composefs.${role}.fsverity-${algorithm}`
    : `composefs.${role}.erofs.v1.fsverity-${algorithm}`;
}

const ROLE_KEY =
  /^composefs\.(manifest|config|layer|merged|merged\.bootable)(\.erofs\.v1)?\.fsverity-(sha256|sha512)-(12|16)$/;

export interface ComposefsSignatureEntry {
  role: ComposefsRole;
  /** The fs-verity digest of the object, lowercase hex. */
  digest: string;
  /** 'sha256-12', 'sha512-12'... (Seal signs sha256-12). */
  algorithm: string;
  signature: Buffer;
}

export interface VeritySignatureEntry {
  /** The layer descriptor's digest. */
  layer: string;
  /** The dm-verity root hash signed, lowercase hex. */
  rootHash: string;
  signature: Buffer;
}

export interface BuiltArtifact {
  descriptor: Descriptor;
  bytes: Buffer;
  blobs: { descriptor: Descriptor; data: Buffer }[];
}

function build(
  artifactType: string,
  subject: Descriptor,
  layers: { mediaType: string; data: Buffer; annotations: Record<string, string> }[],
): BuiltArtifact {
  const blobs = layers.map((l) => ({
    descriptor: {
      mediaType: l.mediaType,
      digest: digestOf(l.data),
      size: l.data.length,
      annotations: l.annotations,
    },
    data: l.data,
  }));
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    artifactType,
    config: { mediaType: EMPTY_JSON.mediaType, digest: EMPTY_JSON.digest, size: EMPTY_JSON.size },
    layers: blobs.map((b) => b.descriptor),
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  return {
    descriptor: {
      mediaType: MediaType.ImageManifest,
      digest: digestOf(bytes),
      size: bytes.length,
      artifactType,
    },
    bytes,
    blobs,
  };
}

/** The composefs metadata artifact of one signer (entries are put in the specification's order). */
export function composefsSignatureArtifact(
  subject: Descriptor,
  entries: ComposefsSignatureEntry[],
): BuiltArtifact {
  const ordered = entries
    .map((e, i) => ({ e, i }))
    .sort((a, b) => ROLE_ORDER.indexOf(a.e.role) - ROLE_ORDER.indexOf(b.e.role) || a.i - b.i)
    .map(({ e }) => e);
  return build(
    COMPOSEFS_METADATA_ARTIFACT_TYPE,
    subject,
    ordered.map((e) => ({
      mediaType: COMPOSEFS_SIGNATURE_MEDIA_TYPE,
      data: e.signature,
      annotations: { [composefsRoleKey(e.role, e.algorithm)]: e.digest },
    })),
  );
}

/** Seal's dm-verity root-hash signature artifact of one signer. */
export function veritySignatureArtifact(subject: Descriptor, entries: VeritySignatureEntry[]): BuiltArtifact {
  return build(
    VERITY_SIGNATURES_ARTIFACT_TYPE,
    subject,
    entries.map((e) => ({
      mediaType: VERITY_SIGNATURE_MEDIA_TYPE,
      data: e.signature,
      annotations: { [VERITY_ROOT_HASH_ANNOTATION]: e.rootHash, [VERITY_LAYER_ANNOTATION]: e.layer },
    })),
  );
}

const once = (b: Uint8Array) =>
  (async function* () {
    yield b;
  })();

/** Writes an artifact (untagged: it is found through its subject) to a destination. */
export async function putSignatureArtifact(dst: ImageDestination, artifact: BuiltArtifact): Promise<void> {
  const config: Descriptor = {
    mediaType: EMPTY_JSON.mediaType,
    digest: EMPTY_JSON.digest,
    size: EMPTY_JSON.size,
  };
  if (!(await dst.hasBlob(config))) await dst.putBlob(config, once(Buffer.from('{}')));
  for (const blob of artifact.blobs)
    if (!(await dst.hasBlob(blob.descriptor))) await dst.putBlob(blob.descriptor, once(blob.data));
  await dst.putManifest(artifact.descriptor, artifact.bytes);
}

function invalid(name: string, message: string): SignatureArtifactError {
  return new SignatureArtifactError('SIGNATURE_ARTIFACT_INVALID', `${name}: ${message}`, { subject: name });
}

/** The layers of a composefs metadata artifact as entries (signatures still to be fetched). */
export function composefsEntriesOf(
  manifest: Manifest,
  name: string,
): { descriptor: Descriptor; role: ComposefsRole; digest: string; algorithm: string }[] {
  if (manifest.artifactType !== COMPOSEFS_METADATA_ARTIFACT_TYPE)
    throw invalid(
      name,
      `artifactType is ${manifest.artifactType ?? 'missing'}, not ${COMPOSEFS_METADATA_ARTIFACT_TYPE}`,
    );
  return manifest.layers.map((layer, i) => {
    if (layer.mediaType !== COMPOSEFS_SIGNATURE_MEDIA_TYPE)
      throw invalid(name, `layer ${i + 1} is ${layer.mediaType}, not a composefs signature`);
    if (layer.size > MAX_SIGNATURE_SIZE) throw invalid(name, `layer ${i + 1} is too large for a signature`);
    const found = Object.entries(layer.annotations ?? {})
      .map(([k, v]) => ({ m: ROLE_KEY.exec(k), v }))
      .filter((x) => x.m);
    if (found.length !== 1) throw invalid(name, `layer ${i + 1} does not name one composefs digest`);
    const { m, v } = found[0]!;
    const role = m![1] as ComposefsRole;
    const erofs = m![2] !== undefined;
    if (erofs === (role === 'manifest' || role === 'config'))
      throw invalid(name, `layer ${i + 1}: annotation key for ${role} is malformed`);
    const size = m![3] === 'sha512' ? 128 : 64;
    if (!new RegExp(`^[0-9a-f]{${size}}$`).test(v))
      throw invalid(name, `layer ${i + 1}: ${JSON.stringify(v)} is not a ${m![3]} digest`);
    return { descriptor: layer, role, digest: v, algorithm: `${m![3]}-${m![4]}` };
  });
}

/** The layers of a Seal verity signature artifact as entries (signatures still to be fetched). */
export function verityEntriesOf(
  manifest: Manifest,
  name: string,
): { descriptor: Descriptor; layer: string; rootHash: string }[] {
  if (manifest.artifactType !== VERITY_SIGNATURES_ARTIFACT_TYPE)
    throw invalid(
      name,
      `artifactType is ${manifest.artifactType ?? 'missing'}, not ${VERITY_SIGNATURES_ARTIFACT_TYPE}`,
    );
  return manifest.layers.map((layer, i) => {
    if (layer.mediaType !== VERITY_SIGNATURE_MEDIA_TYPE)
      throw invalid(name, `layer ${i + 1} is ${layer.mediaType}, not a verity signature`);
    if (layer.size > MAX_SIGNATURE_SIZE) throw invalid(name, `layer ${i + 1} is too large for a signature`);
    const rootHash = layer.annotations?.[VERITY_ROOT_HASH_ANNOTATION];
    const of = layer.annotations?.[VERITY_LAYER_ANNOTATION];
    if (!rootHash || !/^(?:[0-9a-f]{2}){16,64}$/.test(rootHash))
      throw invalid(name, `layer ${i + 1} does not name a root hash`);
    if (!of || !/^sha256:[0-9a-f]{64}$/.test(of))
      throw invalid(name, `layer ${i + 1} does not name its layer`);
    return { descriptor: layer, layer: of, rootHash };
  });
}
