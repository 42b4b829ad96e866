/**
 * Notary Project signature envelopes (JWS, JSON serialization) over a target descriptor, as the
 * Notary Project signature specification defines them for the `notary.x509` signing scheme:
 * protected header with `alg`, `crit`, `cty` and the signing time, the certificate chain in the
 * unprotected `x5c` header, and the payload `{"targetArtifact": descriptor}`.
 */
import type { Descriptor } from '../oci/types.ts';
import { type Certificate, parseCertificate, type Signer, verifySignature } from '../pki/index.ts';

export const NOTARY_ARTIFACT_TYPE = 'application/vnd.cncf.notary.signature';
export const JWS_MEDIA_TYPE = 'application/jose+json';
export const NOTARY_PAYLOAD_TYPE = 'application/vnd.cncf.notary.payload.v1+json';
const SIGNING_SCHEME = 'io.cncf.notary.signingScheme';
const SIGNING_TIME = 'io.cncf.notary.signingTime';
const NOTARY_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512'];

const b64url = (b: Uint8Array | string) => Buffer.from(b).toString('base64url');

export interface Envelope {
  payload: string;
  protected: string;
  header: { x5c: string[]; 'io.cncf.notary.signingAgent'?: string };
  signature: string;
}

export async function createEnvelope(target: Descriptor, signer: Signer, agent: string): Promise<Buffer> {
  if (!NOTARY_ALGORITHMS.includes(signer.algorithm)) {
    throw new Error(
      `${signer.algorithm} keys cannot sign Notary Project envelopes (ECDSA or RSA are needed)`,
    );
  }
  const payload = b64url(
    JSON.stringify({
      targetArtifact: { mediaType: target.mediaType, digest: target.digest, size: target.size },
    }),
  );
  const header = b64url(
    JSON.stringify({
      alg: signer.algorithm,
      crit: [SIGNING_SCHEME],
      cty: NOTARY_PAYLOAD_TYPE,
      [SIGNING_SCHEME]: 'notary.x509',
      [SIGNING_TIME]: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
    }),
  );
  const signature = await signer.sign(Buffer.from(`${header}.${payload}`, 'ascii'));
  const envelope: Envelope = {
    payload,
    protected: header,
    header: {
      x5c: signer.certificates.map((c) => Buffer.from(c.rawData).toString('base64')),
      'io.cncf.notary.signingAgent': agent,
    },
    signature: b64url(signature),
  };
  return Buffer.from(JSON.stringify(envelope));
}

export interface OpenedEnvelope {
  target: Descriptor;
  certificates: Certificate[];
  signingTime?: Date;
}

/** Parses an envelope and checks its signature against its own signing certificate. */
export function openEnvelope(bytes: Uint8Array): OpenedEnvelope {
  let envelope: Envelope;
  let header: Record<string, unknown>;
  let payload: { targetArtifact?: Descriptor };
  try {
    envelope = JSON.parse(Buffer.from(bytes).toString('utf8'));
    header = JSON.parse(Buffer.from(envelope.protected, 'base64url').toString('utf8'));
    payload = JSON.parse(Buffer.from(envelope.payload, 'base64url').toString('utf8'));
  } catch {
    throw new Error('the envelope is not a JWS JSON document');
  }
  if (!Array.isArray(envelope.header?.x5c) || envelope.header.x5c.length === 0)
    throw new Error('the envelope has no x5c chain');
  if (typeof header.alg !== 'string' || !NOTARY_ALGORITHMS.includes(header.alg)) {
    throw new Error(`unsupported signature algorithm ${String(header.alg)}`);
  }
  if (header[SIGNING_SCHEME] !== 'notary.x509') throw new Error('the signing scheme is not notary.x509');
  if (header.cty !== NOTARY_PAYLOAD_TYPE) throw new Error(`unexpected payload type ${String(header.cty)}`);
  const crit = header.crit;
  if (!Array.isArray(crit) || !crit.includes(SIGNING_SCHEME) || crit.some((c) => !(c in header))) {
    throw new Error('the protected header has a bad crit list');
  }
  const certificates = envelope.header.x5c.map((c, i) =>
    parseCertificate(Buffer.from(c, 'base64'), `x5c[${i}]`),
  );
  const signed = Buffer.from(`${envelope.protected}.${envelope.payload}`, 'ascii');
  if (!verifySignature(header.alg, signed, Buffer.from(envelope.signature, 'base64url'), certificates[0]!)) {
    throw new Error(`the signature does not verify with certificate "${certificates[0]!.subject}"`);
  }
  const target = payload.targetArtifact;
  if (!target || typeof target.digest !== 'string' || typeof target.size !== 'number') {
    throw new Error('the payload names no target artifact');
  }
  const time =
    typeof header[SIGNING_TIME] === 'string' ? new Date(header[SIGNING_TIME] as string) : undefined;
  return { target, certificates, ...(time && !Number.isNaN(time.getTime()) ? { signingTime: time } : {}) };
}
