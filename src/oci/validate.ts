/**
 * Validation of image-spec documents, rejecting what the image-spec JSON schemas reject:
 * required fields and their types, media type and digest grammars, non-negative integer
 * sizes, string maps for annotations. A missing `mediaType` is tolerated where the spec makes
 * it optional (skopeo and umoci omit it on indexes and manifests).
 */
import { SealError } from '../errors.ts';
import { isDigest } from './digest.ts';
import { MediaType } from './mediatypes.ts';
import type { Descriptor, ImageConfig, Index, Manifest } from './types.ts';

export class ValidationError extends SealError<'OCI_INVALID'> {}

const MEDIA_TYPE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

function fail(subject: string, message: string): never {
  throw new ValidationError('OCI_INVALID', `${subject}: ${message}`, { subject });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkStringMap(v: unknown, subject: string, field: string): void {
  if (v === undefined) return;
  if (!isObject(v) || Object.values(v).some((x) => typeof x !== 'string'))
    fail(subject, `${field} must map strings to strings`);
}

export function validateDescriptor(d: unknown, subject = 'descriptor'): Descriptor {
  if (!isObject(d)) fail(subject, 'descriptor must be an object');
  if (typeof d.mediaType !== 'string' || !MEDIA_TYPE.test(d.mediaType))
    fail(subject, `invalid mediaType ${JSON.stringify(d.mediaType)}`);
  if (typeof d.digest !== 'string' || !isDigest(d.digest))
    fail(subject, `invalid digest ${JSON.stringify(d.digest)}`);
  if (!Number.isSafeInteger(d.size) || (d.size as number) < 0)
    fail(subject, `invalid size ${JSON.stringify(d.size)}`);
  if (d.urls !== undefined && (!Array.isArray(d.urls) || d.urls.some((u) => typeof u !== 'string')))
    fail(subject, 'urls must be strings');
  checkStringMap(d.annotations, subject, 'annotations');
  if (d.data !== undefined && (typeof d.data !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(d.data)))
    fail(subject, 'data must be base64');
  if (
    d.artifactType !== undefined &&
    (typeof d.artifactType !== 'string' || !MEDIA_TYPE.test(d.artifactType))
  ) {
    fail(subject, 'invalid artifactType');
  }
  if (d.platform !== undefined) {
    const p = d.platform;
    if (!isObject(p) || typeof p.architecture !== 'string' || typeof p.os !== 'string')
      fail(subject, 'platform needs architecture and os');
  }
  return d as unknown as Descriptor;
}

function parseJson(bytes: Uint8Array | string, subject: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8'));
  } catch (error) {
    fail(subject, `not valid JSON (${(error as Error).message})`);
  }
  if (!isObject(doc)) fail(subject, 'must be a JSON object');
  return doc;
}

export function validateManifest(doc: unknown, subject = 'manifest'): Manifest {
  if (!isObject(doc)) fail(subject, 'must be a JSON object');
  if (doc.schemaVersion !== 2) fail(subject, 'schemaVersion must be 2');
  if (
    doc.mediaType !== undefined &&
    doc.mediaType !== MediaType.ImageManifest &&
    doc.mediaType !== MediaType.DockerManifest
  ) {
    fail(subject, `unexpected mediaType ${JSON.stringify(doc.mediaType)} for a manifest`);
  }
  validateDescriptor(doc.config, `${subject} config`);
  if (!Array.isArray(doc.layers)) fail(subject, 'layers must be an array');
  doc.layers.forEach((l, i) => {
    validateDescriptor(l, `${subject} layer ${i}`);
  });
  if (doc.subject !== undefined) validateDescriptor(doc.subject, `${subject} subject`);
  checkStringMap(doc.annotations, subject, 'annotations');
  return doc as unknown as Manifest;
}

export function validateIndex(doc: unknown, subject = 'index'): Index {
  if (!isObject(doc)) fail(subject, 'must be a JSON object');
  if (doc.schemaVersion !== 2) fail(subject, 'schemaVersion must be 2');
  if (
    doc.mediaType !== undefined &&
    doc.mediaType !== MediaType.ImageIndex &&
    doc.mediaType !== MediaType.DockerManifestList
  ) {
    fail(subject, `unexpected mediaType ${JSON.stringify(doc.mediaType)} for an index`);
  }
  if (!Array.isArray(doc.manifests)) fail(subject, 'manifests must be an array');
  doc.manifests.forEach((m, i) => {
    validateDescriptor(m, `${subject} manifest ${i}`);
  });
  if (doc.subject !== undefined) validateDescriptor(doc.subject, `${subject} subject`);
  checkStringMap(doc.annotations, subject, 'annotations');
  return doc as unknown as Index;
}

export function validateConfig(doc: unknown, subject = 'config'): ImageConfig {
  if (!isObject(doc)) fail(subject, 'must be a JSON object');
  if (typeof doc.architecture !== 'string' || typeof doc.os !== 'string')
    fail(subject, 'architecture and os are required');
  const rootfs = doc.rootfs;
  if (!isObject(rootfs) || rootfs.type !== 'layers' || !Array.isArray(rootfs.diff_ids))
    fail(subject, 'rootfs must list diff_ids');
  for (const id of rootfs.diff_ids)
    if (typeof id !== 'string' || !isDigest(id)) fail(subject, `invalid diff_id ${JSON.stringify(id)}`);
  if (doc.history !== undefined && !Array.isArray(doc.history)) fail(subject, 'history must be an array');
  return doc as unknown as ImageConfig;
}

export const parseManifest = (bytes: Uint8Array | string, subject?: string) =>
  validateManifest(parseJson(bytes, subject ?? 'manifest'), subject);
export const parseIndex = (bytes: Uint8Array | string, subject?: string) =>
  validateIndex(parseJson(bytes, subject ?? 'index'), subject);
export const parseConfig = (bytes: Uint8Array | string, subject?: string) =>
  validateConfig(parseJson(bytes, subject ?? 'config'), subject);

const MANIFEST_TYPES = new Set<string>([
  MediaType.ImageManifest,
  MediaType.ImageIndex,
  MediaType.DockerManifest,
  MediaType.DockerManifestList,
]);

/** A manifest or index media type (OCI or Docker). */
export function isManifestType(mediaType: string | undefined): boolean {
  return mediaType !== undefined && MANIFEST_TYPES.has(mediaType);
}

export function isIndexType(mediaType: string | undefined): boolean {
  return mediaType === MediaType.ImageIndex || mediaType === MediaType.DockerManifestList;
}

/** Parses a manifest or an index, telling them apart by media type or shape. */
export function parseManifestOrIndex(bytes: Uint8Array, subject: string): Manifest | Index {
  const doc = parseJson(bytes, subject);
  if (isIndexType(doc.mediaType as string) || (doc.mediaType === undefined && Array.isArray(doc.manifests))) {
    return validateIndex(doc, subject);
  }
  return validateManifest(doc, subject);
}
