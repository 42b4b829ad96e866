/** `seal manifest sign`: a Notary Project signature attached to a system manifest (referrers). */
import { digestOf } from '../oci/digest.ts';
import { EMPTY_JSON, MediaType } from '../oci/mediatypes.ts';
import type { Descriptor } from '../oci/types.ts';
import { parseManifestOrIndex } from '../oci/validate.ts';
import type { Signer } from '../pki/index.ts';
import { openDestination, openSource } from '../store/index.ts';
import { createEnvelope, JWS_MEDIA_TYPE, NOTARY_ARTIFACT_TYPE } from './envelope.ts';
import { ManifestError } from './errors.ts';
import { canonicalJson, SYSTEM_ARTIFACT_TYPE } from './spec.ts';

const AGENT = 'seal/0.1.0';

const bytesOf = (b: Uint8Array) =>
  (async function* () {
    yield b;
  })();

export async function signSystem(
  ref: string,
  signer: Signer,
): Promise<{ target: Descriptor; signature: Descriptor }> {
  const src = await openSource(ref);
  let target: Descriptor;
  try {
    target = await src.resolve();
    const doc = parseManifestOrIndex(await src.getManifest(target), target.digest);
    if (doc.artifactType !== SYSTEM_ARTIFACT_TYPE) {
      throw new ManifestError(
        'MANIFEST_NOT_A_SYSTEM',
        `${ref} is not a system manifest (artifactType ${doc.artifactType ?? 'none'})`,
        {
          subject: ref,
        },
      );
    }
  } finally {
    await src.close();
  }
  const subject: Descriptor = { mediaType: target.mediaType, digest: target.digest, size: target.size };
  const envelope = await createEnvelope(subject, signer, AGENT);
  const layer: Descriptor = { mediaType: JWS_MEDIA_TYPE, digest: digestOf(envelope), size: envelope.length };
  const config: Descriptor = {
    mediaType: EMPTY_JSON.mediaType,
    digest: EMPTY_JSON.digest,
    size: EMPTY_JSON.size,
  };
  const thumbprints = signer.certificates.map((c) => digestOf(Buffer.from(c.rawData)).slice(7));
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    artifactType: NOTARY_ARTIFACT_TYPE,
    config,
    layers: [layer],
    subject,
    annotations: {
      'io.cncf.notary.x509chain.thumbprint#S256': JSON.stringify(thumbprints),
      'org.opencontainers.image.created': new Date().toISOString(),
    },
  };
  const bytes = Buffer.from(canonicalJson(manifest));
  const signature: Descriptor = {
    mediaType: MediaType.ImageManifest,
    digest: digestOf(bytes),
    size: bytes.length,
    artifactType: NOTARY_ARTIFACT_TYPE,
  };
  const dst = await openDestination(ref);
  try {
    if (!(await dst.hasBlob(config))) await dst.putBlob(config, bytesOf(Buffer.from('{}')));
    await dst.putBlob(layer, bytesOf(envelope));
    await dst.putManifest(signature, bytes);
    await dst.commit();
  } finally {
    await dst.close();
  }
  return { target: subject, signature };
}
