/**
 * Signing for manifests and envelopes goes through `Signer`, so a hardware-backed key (TPM,
 * PKCS#11) can be added without touching callers. Algorithms are named as in JWS (RFC 7518);
 * signatures are in JWS form (ECDSA as r||s).
 */
import { constants, createPublicKey, type KeyObject, sign, verify } from 'node:crypto';
import type { Certificate } from './certificates.ts';
import { PkiError } from './errors.ts';
import { keyTypeOf } from './keys.ts';

export type JwsAlgorithm = 'ES256' | 'ES384' | 'PS256' | 'PS384' | 'PS512' | 'EdDSA';

export interface Signer {
  readonly algorithm: JwsAlgorithm;
  /** The signing certificate first, then its issuers (up to, possibly without, the root). */
  readonly certificates: Certificate[];
  /** The public half of the signing key (for key-based schemes without certificates). */
  readonly publicKey: KeyObject;
  sign(data: Uint8Array): Promise<Uint8Array>;
}

/** The JWS algorithm a key signs with (RSA: PSS, as the Notary Project signature spec requires). */
export function jwsAlgorithmFor(key: KeyObject): JwsAlgorithm {
  switch (keyTypeOf(key)) {
    case 'ecdsa-p256':
      return 'ES256';
    case 'ecdsa-p384':
      return 'ES384';
    case 'rsa-2048':
    case 'rsa-3072':
      return 'PS256';
    case 'rsa-4096':
      return 'PS384';
    default:
      return 'EdDSA';
  }
}

function parameters(algorithm: JwsAlgorithm): { hash: string | null; options: Record<string, unknown> } {
  switch (algorithm) {
    case 'ES256':
      return { hash: 'sha256', options: { dsaEncoding: 'ieee-p1363' } };
    case 'ES384':
      return { hash: 'sha384', options: { dsaEncoding: 'ieee-p1363' } };
    case 'PS256':
      return { hash: 'sha256', options: { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 } };
    case 'PS384':
      return { hash: 'sha384', options: { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 } };
    case 'PS512':
      return { hash: 'sha512', options: { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 64 } };
    case 'EdDSA':
      return { hash: null, options: {} };
  }
}

/** A signer holding its private key in memory. */
export class KeySigner implements Signer {
  readonly algorithm: JwsAlgorithm;
  readonly certificates: Certificate[];
  readonly publicKey: KeyObject;
  #key: KeyObject;

  constructor(key: KeyObject, certificates: Certificate[]) {
    this.#key = key;
    this.certificates = certificates;
    this.algorithm = jwsAlgorithmFor(key);
    this.publicKey = createPublicKey(key);
    const leaf = certificates[0];
    if (leaf) {
      const expected = createPublicKey(key).export({ type: 'spki', format: 'der' });
      if (!Buffer.from(leaf.publicKey.rawData).equals(expected)) {
        throw new PkiError('PKI_BAD_KEY', `the key does not belong to certificate "${leaf.subject}"`, {
          subject: leaf.subject,
        });
      }
    }
  }

  async sign(data: Uint8Array): Promise<Uint8Array> {
    const { hash, options } = parameters(this.algorithm);
    return sign(hash, data, { key: this.#key, ...options });
  }
}

/** Checks a JWS-form signature with a certificate's public key. */
export function verifySignature(
  algorithm: string,
  data: Uint8Array,
  signature: Uint8Array,
  certificate: Certificate,
): boolean {
  if (!['ES256', 'ES384', 'PS256', 'PS384', 'PS512', 'EdDSA'].includes(algorithm)) return false;
  const key = createPublicKey({
    key: Buffer.from(certificate.publicKey.rawData),
    format: 'der',
    type: 'spki',
  });
  const { hash, options } = parameters(algorithm as JwsAlgorithm);
  try {
    return verify(hash, data, { key, ...options }, signature);
  } catch {
    return false;
  }
}

/** An ECDSA signature in JWS form (r||s) as the DER `ECDSA-Sig-Value` X.509 and Sigstore use. */
export function ecdsaSignatureToDer(signature: Uint8Array): Buffer {
  const integer = (bytes: Uint8Array) => {
    let i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0) i++;
    const value = Buffer.from(bytes.subarray(i));
    const body = value[0]! & 0x80 ? Buffer.concat([Buffer.of(0), value]) : value;
    return Buffer.concat([Buffer.of(0x02, body.length), body]);
  };
  const half = signature.length / 2;
  const body = Buffer.concat([integer(signature.subarray(0, half)), integer(signature.subarray(half))]);
  // P-256 and P-384 signatures stay below 128 bytes of content, P-521 needs the long length form.
  const length = body.length < 0x80 ? Buffer.of(body.length) : Buffer.of(0x81, body.length);
  return Buffer.concat([Buffer.of(0x30), length, body]);
}
