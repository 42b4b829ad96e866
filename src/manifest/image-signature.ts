/**
 * Image signatures for the wider ecosystem, as cosign makes them with a key and no transparency
 * log: a Sigstore bundle (v0.3) holding a DSSE envelope over an in-toto statement whose subject is
 * the image manifest digest and whose predicate type is cosign's image-signature type, attached to
 * the image as an OCI artifact through `subject` (cosign's bundle specification). Building and
 * checking bundles is left to the Sigstore project's own libraries.
 */
import type { KeyObject } from 'node:crypto';
import { createHash } from 'node:crypto';
import type { Bundle } from '@sigstore/bundle';
import type { Signer as SigstoreSigner } from '@sigstore/sign';
import type { Descriptor } from '../oci/types.ts';
import { parseManifest } from '../oci/validate.ts';
import { ecdsaSignatureToDer, type Signer } from '../pki/index.ts';
import { type OpenOptions, openSource } from '../store/index.ts';
import { putArtifact } from './artifact.ts';
import { ManifestError } from './errors.ts';

export const SIGSTORE_BUNDLE_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
/** The in-toto predicate type of a cosign image signature. */
export const COSIGN_SIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1';
const IN_TOTO_PAYLOAD = 'application/vnd.in-toto+json';
const IN_TOTO_STATEMENTS = ['https://in-toto.io/Statement/v1', 'https://in-toto.io/Statement/v0.1'];
const MAX_BUNDLE = 1 << 20;

/**
 * The Sigstore libraries, loaded on use: they are most of what the manifest module would load
 * otherwise (some 20 MB resident), and a device verifying its system manifest needs none of them.
 */
const sigstoreLibraries = async () => {
  const [bundle, sign, verify] = await Promise.all([
    import('@sigstore/bundle'),
    import('@sigstore/sign'),
    import('@sigstore/verify'),
  ]);
  return { ...bundle, ...sign, ...verify };
};

/** Sigstore's hint for a key: base64 of the SHA-256 of its SubjectPublicKeyInfo. */
function keyHint(key: KeyObject): string {
  return createHash('sha256')
    .update(key.export({ type: 'spki', format: 'der' }))
    .digest('base64');
}

/** Seal's signer in Sigstore's shape: ECDSA signatures in DER, the public key as the material. */
function sigstoreSigner(signer: Signer): SigstoreSigner {
  if (signer.algorithm !== 'ES256' && signer.algorithm !== 'EdDSA') {
    throw new ManifestError(
      'MANIFEST_KEY_UNSUPPORTED',
      `cosign-compatible signatures need an ECDSA P-256 or Ed25519 key, not ${signer.algorithm}`,
    );
  }
  const publicKey = signer.publicKey.export({ type: 'spki', format: 'pem' }) as string;
  const hint = keyHint(signer.publicKey);
  return {
    async sign(data) {
      const raw = await signer.sign(data);
      const signature = signer.algorithm === 'ES256' ? ecdsaSignatureToDer(raw) : Buffer.from(raw);
      return { signature, key: { $case: 'publicKey', publicKey, hint } };
    },
  };
}

async function resolveImage(
  ref: string,
  transport: OpenOptions,
): Promise<{ target: Descriptor; bytes: Uint8Array }> {
  const src = await openSource(ref, transport);
  try {
    const target = await src.resolve();
    return {
      target: { mediaType: target.mediaType, digest: target.digest, size: target.size },
      bytes: await src.getManifest(target),
    };
  } finally {
    await src.close();
  }
}

/** `seal sign`: signs the image `ref` names and attaches the bundle to it (`transport`: registry options). */
export async function signImage(
  ref: string,
  signer: Signer,
  transport: OpenOptions = {},
): Promise<{ target: Descriptor; signature: Descriptor }> {
  const sigstore = sigstoreSigner(signer);
  const { DSSEBundleBuilder, bundleToJSON } = await sigstoreLibraries();
  const { target } = await resolveImage(ref, transport);
  const [algorithm, hex] = target.digest.split(':') as [string, string];
  const statement = {
    _type: IN_TOTO_STATEMENTS[0],
    subject: [{ digest: { [algorithm]: hex } }],
    predicateType: COSIGN_SIGN_PREDICATE,
    predicate: {},
  };
  const bundle = await new DSSEBundleBuilder({ signer: sigstore, witnesses: [] }).create({
    data: Buffer.from(JSON.stringify(statement)),
    type: IN_TOTO_PAYLOAD,
  });
  const signature = await putArtifact(
    ref,
    {
      artifactType: SIGSTORE_BUNDLE_TYPE,
      layerMediaType: SIGSTORE_BUNDLE_TYPE,
      layer: Buffer.from(JSON.stringify(bundleToJSON(bundle))),
      subject: target,
      annotations: {
        'dev.sigstore.bundle.content': 'dsse-envelope',
        'dev.sigstore.bundle.predicateType': COSIGN_SIGN_PREDICATE,
        'org.opencontainers.image.created': new Date().toISOString(),
      },
    },
    transport,
  );
  return { target, signature };
}

export interface ImageSignatureReport {
  target: Descriptor;
  signatures: Array<{ digest: string; ok: boolean; detail: string }>;
}

/** Checks what a bundle's signature covers: this image's manifest, as an image signature. */
function checkCoverage(bundle: Bundle, target: Descriptor): void {
  if (bundle.content.$case === 'messageSignature') {
    const signed = bundle.content.messageSignature.messageDigest?.digest;
    // The signature itself is checked against the manifest bytes by the verifier.
    if (!signed) throw new Error('it has no message digest');
    return;
  }
  const envelope = bundle.content.dsseEnvelope;
  if (envelope.payloadType !== IN_TOTO_PAYLOAD)
    throw new Error(`its payload is ${envelope.payloadType}, not an in-toto statement`);
  let statement: { _type?: unknown; predicateType?: unknown; subject?: unknown };
  try {
    statement = JSON.parse(Buffer.from(envelope.payload).toString('utf8'));
  } catch {
    throw new Error('its in-toto statement is not JSON');
  }
  if (!IN_TOTO_STATEMENTS.includes(String(statement._type)))
    throw new Error(`its payload is not an in-toto statement (${String(statement._type)})`);
  if (statement.predicateType !== COSIGN_SIGN_PREDICATE)
    throw new Error(`it is an attestation (${String(statement.predicateType)}), not an image signature`);
  const [algorithm, hex] = target.digest.split(':') as [string, string];
  const subjects = Array.isArray(statement.subject) ? statement.subject : [];
  if (!subjects.some((s) => (s as { digest?: Record<string, unknown> })?.digest?.[algorithm] === hex)) {
    throw new Error(`it signs another image, not ${target.digest}`);
  }
}

/** `seal verify-signature`: at least one attached bundle must verify with `publicKey`. */
export async function verifyImageSignature(
  ref: string,
  publicKey: KeyObject,
  transport: OpenOptions = {},
): Promise<ImageSignatureReport> {
  const src = await openSource(ref, transport);
  try {
    const resolved = await src.resolve();
    const target = { mediaType: resolved.mediaType, digest: resolved.digest, size: resolved.size };
    const manifestBytes = Buffer.from(await src.getManifest(target));
    if (!src.referrers)
      throw new ManifestError('MANIFEST_UNSIGNED', `${ref}: this transport cannot list signatures`);
    const attached = await src.referrers(target, SIGSTORE_BUNDLE_TYPE);
    if (attached.length === 0) {
      throw new ManifestError(
        'MANIFEST_UNSIGNED',
        `${ref}: no Sigstore bundle is attached to ${target.digest}`,
        {
          subject: target.digest,
        },
      );
    }
    const { bundleFromJSON, toSignedEntity, toTrustMaterial, Verifier } = await sigstoreLibraries();
    const trust = toTrustMaterial(
      {
        mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
        tlogs: [],
        ctlogs: [],
        certificateAuthorities: [],
        timestampAuthorities: [],
      },
      // As with `cosign verify --key`, the given key is the only one trusted, whatever the hint says.
      () => ({ publicKey, validFor: () => true }),
    );
    const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
    const signatures: ImageSignatureReport['signatures'] = [];
    for (const sig of attached) {
      try {
        const manifest = parseManifest(await src.getManifest(sig), sig.digest);
        const layer = manifest.layers.find((l) =>
          l.mediaType.startsWith('application/vnd.dev.sigstore.bundle'),
        );
        if (!layer || layer.size > MAX_BUNDLE) throw new Error('it holds no Sigstore bundle');
        const parts: Uint8Array[] = [];
        for await (const c of src.getBlob(layer)) parts.push(c);
        let bundle: Bundle;
        try {
          bundle = bundleFromJSON(JSON.parse(Buffer.concat(parts).toString('utf8')));
        } catch (error) {
          throw new Error(`its bundle is malformed: ${(error as Error).message}`);
        }
        checkCoverage(bundle, target);
        try {
          verifier.verify(toSignedEntity(bundle, manifestBytes));
        } catch (error) {
          throw new Error(`its signature does not verify with the key: ${(error as Error).message}`);
        }
        signatures.push({ digest: sig.digest, ok: true, detail: 'valid' });
      } catch (error) {
        signatures.push({ digest: sig.digest, ok: false, detail: (error as Error).message });
      }
    }
    if (!signatures.some((s) => s.ok)) {
      throw new ManifestError(
        'MANIFEST_SIGNATURE_INVALID',
        `${ref}: no valid signature: ${signatures.map((s) => `${s.digest}: ${s.detail}`).join('; ')}`,
        { subject: target.digest },
      );
    }
    return { target, signatures };
  } finally {
    await src.close();
  }
}
