/** `seal manifest sign`: a Notary Project signature attached to a system manifest (referrers). */
import { digestOf } from '../oci/digest.ts';
import type { Descriptor } from '../oci/types.ts';
import { parseManifestOrIndex } from '../oci/validate.ts';
import type { Signer } from '../pki/index.ts';
import { type OpenOptions, openSource } from '../store/index.ts';
import { putArtifact } from './artifact.ts';
import { createEnvelope, JWS_MEDIA_TYPE, NOTARY_ARTIFACT_TYPE } from './envelope.ts';
import { ManifestError } from './errors.ts';
import { SYSTEM_ARTIFACT_TYPE } from './spec.ts';

const AGENT = 'seal/0.1.0';

/** `transport`: registry options, for a `docker://` reference. */
export async function signSystem(
  ref: string,
  signer: Signer,
  transport: OpenOptions = {},
): Promise<{ target: Descriptor; signature: Descriptor }> {
  const src = await openSource(ref, transport);
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
  const thumbprints = signer.certificates.map((c) => digestOf(Buffer.from(c.rawData)).slice(7));
  const signature = await putArtifact(
    ref,
    {
      artifactType: NOTARY_ARTIFACT_TYPE,
      layerMediaType: JWS_MEDIA_TYPE,
      layer: envelope,
      subject,
      annotations: {
        'io.cncf.notary.x509chain.thumbprint#S256': JSON.stringify(thumbprints),
        'org.opencontainers.image.created': new Date().toISOString(),
      },
    },
    transport,
  );
  return { target: subject, signature };
}
