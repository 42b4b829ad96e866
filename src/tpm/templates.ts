/**
 * Public-area templates Seal creates keys from, and conversions between TPM structures and
 * node:crypto: public keys (PEM/KeyObject ↔ TPMT_PUBLIC) and signatures (TPMT_SIGNATURE ↔
 * node's signature encodings).
 */
import { createPublicKey, type KeyObject, sign as nodeSign, verify as nodeVerify } from 'node:crypto';
import { ALG, ECC_CURVE, OBJECT } from './constants.ts';
import { curveInfo, publicKeyOf } from './crypto.ts';
import { TpmError } from './errors.ts';
import { type HashName, hashId, hashNameOf } from './hash.ts';
import {
  AES_128_CFB,
  type EccPublic,
  NULL_SCHEME,
  NULL_SYM,
  type PublicArea,
  type RsaPublic,
  type Signature,
} from './structures.ts';

/**
 * The TCG storage root key template (ECC P-256, AES-128-CFB, noDA), as the TCG provisioning
 * guidance and systemd use it: the key that salts Seal's sessions, persisted at SRK_HANDLE.
 */
export function srkTemplate(type: 'ecc' | 'rsa' = 'ecc'): PublicArea {
  const attributes =
    OBJECT.fixedTPM |
    OBJECT.fixedParent |
    OBJECT.sensitiveDataOrigin |
    OBJECT.userWithAuth |
    OBJECT.noDA |
    OBJECT.restricted |
    OBJECT.decrypt;
  const common = {
    nameAlg: 'sha256' as const,
    attributes,
    authPolicy: Buffer.alloc(0),
    symmetric: AES_128_CFB,
    scheme: NULL_SCHEME,
  };
  if (type === 'ecc')
    return {
      type: 'ecc',
      ...common,
      curve: ECC_CURVE.NIST_P256,
      kdf: NULL_SCHEME,
      x: Buffer.alloc(0),
      y: Buffer.alloc(0),
    };
  return { type: 'rsa', ...common, keyBits: 2048, exponent: 0, modulus: Buffer.alloc(0) };
}

/** The conventional persistent handle of the storage root key. */
export const SRK_HANDLE = 0x81000001;

/**
 * A TPM-resident device identity key: ECC P-256, restricted signing (so it signs only digests
 * the TPM hashed, never a forged attestation structure), non-exportable (fixedTPM), usable for
 * quotes and certifications, with ECDSA-SHA256 as its scheme.
 */
export function identityTemplate(): EccPublic {
  return {
    type: 'ecc',
    nameAlg: 'sha256',
    attributes:
      OBJECT.fixedTPM |
      OBJECT.fixedParent |
      OBJECT.sensitiveDataOrigin |
      OBJECT.userWithAuth |
      OBJECT.noDA |
      OBJECT.restricted |
      OBJECT.sign,
    authPolicy: Buffer.alloc(0),
    symmetric: NULL_SYM,
    scheme: { scheme: ALG.ECDSA, hash: ALG.SHA256 },
    curve: ECC_CURVE.NIST_P256,
    kdf: NULL_SCHEME,
    x: Buffer.alloc(0),
    y: Buffer.alloc(0),
  };
}

/**
 * A key that can only be used in one PCR state: a restricted ECC P-256 decryption key (a storage
 * key's shape: AES-128-CFB) made in the TPM, non-exportable, whose USER role needs a policy
 * session satisfying `authPolicy` (no authValue use) — PolicyPCR over the PCRs it is bound to.
 * The verifier of an attestation protects credentials with it (TPM2_ActivateCredential).
 */
export function bindingTemplate(authPolicy: Buffer): EccPublic {
  return {
    type: 'ecc',
    nameAlg: 'sha256',
    attributes:
      OBJECT.fixedTPM |
      OBJECT.fixedParent |
      OBJECT.sensitiveDataOrigin |
      OBJECT.noDA |
      OBJECT.restricted |
      OBJECT.decrypt,
    authPolicy,
    symmetric: AES_128_CFB,
    scheme: NULL_SCHEME,
    curve: ECC_CURVE.NIST_P256,
    kdf: NULL_SCHEME,
    x: Buffer.alloc(0),
    y: Buffer.alloc(0),
  };
}

const CURVE_IDS: Record<string, number> = {
  prime256v1: ECC_CURVE.NIST_P256,
  secp384r1: ECC_CURVE.NIST_P384,
  secp521r1: ECC_CURVE.NIST_P521,
};

/**
 * The public area of an external public key as TPM2_LoadExternal takes it — the same area
 * `tpm2_loadexternal` builds from a PEM key (sign|decrypt|userWithAuth, SHA-256 Name, no
 * scheme), so Names computed by Seal and by tpm2-tools agree.
 */
export function externalPublic(key: KeyObject | string | Buffer, nameAlg: HashName = 'sha256'): PublicArea {
  const pub = typeof key === 'object' && 'asymmetricKeyType' in key ? key : createPublicKey(key);
  const attributes = OBJECT.userWithAuth | OBJECT.decrypt | OBJECT.sign;
  const common = {
    nameAlg,
    attributes,
    authPolicy: Buffer.alloc(0),
    symmetric: NULL_SYM,
    scheme: NULL_SCHEME,
  };
  const publicKey = pub.type === 'private' ? createPublicKey(pub) : pub;
  const jwk = publicKey.export({ format: 'jwk' });
  if (publicKey.asymmetricKeyType === 'ec') {
    const curve = CURVE_IDS[publicKey.asymmetricKeyDetails?.namedCurve ?? ''];
    if (curve === undefined)
      throw new TpmError('TPM_KEY', `curve ${publicKey.asymmetricKeyDetails?.namedCurve} is not supported`);
    return {
      type: 'ecc',
      ...common,
      curve,
      kdf: NULL_SCHEME,
      x: Buffer.from(jwk.x!, 'base64url'),
      y: Buffer.from(jwk.y!, 'base64url'),
    };
  }
  if (publicKey.asymmetricKeyType === 'rsa') {
    const modulus = Buffer.from(jwk.n!, 'base64url');
    const e = Buffer.from(jwk.e!, 'base64url');
    const exponent = e.length <= 4 ? e.readUIntBE(0, e.length) : Number.NaN;
    if (!Number.isFinite(exponent)) throw new TpmError('TPM_KEY', 'RSA exponent too large for a TPM');
    return {
      type: 'rsa',
      ...common,
      keyBits: modulus.length * 8,
      exponent,
      modulus,
    };
  }
  throw new TpmError('TPM_KEY', `${publicKey.asymmetricKeyType} keys cannot be used with a TPM`);
}

/** A node:crypto public key from a TPM public area. */
export function keyObjectOf(p: PublicArea): KeyObject {
  return publicKeyOf(p);
}

/** PEM (SubjectPublicKeyInfo) of a TPM public area. */
export function publicPem(p: PublicArea): string {
  return publicKeyOf(p).export({ type: 'spki', format: 'pem' }) as string;
}

/** The default signature scheme for a key: ECDSA or RSASSA with `hash`. */
function sigAlgFor(key: KeyObject): typeof ALG.ECDSA | typeof ALG.RSASSA {
  if (key.asymmetricKeyType === 'ec') return ALG.ECDSA;
  if (key.asymmetricKeyType === 'rsa') return ALG.RSASSA;
  throw new TpmError('TPM_KEY', `${key.asymmetricKeyType} keys cannot sign for a TPM`);
}

/** Signs `message` (hashed with `hash`) and returns the TPMT_SIGNATURE a TPM verifies. */
export function signForTpm(
  privateKey: KeyObject,
  message: Uint8Array,
  hashName: HashName = 'sha256',
): Signature {
  const alg = sigAlgFor(privateKey);
  if (alg === ALG.ECDSA) {
    const size = curveInfo(CURVE_IDS[privateKey.asymmetricKeyDetails?.namedCurve ?? ''] ?? 0).size;
    const raw = nodeSign(hashName, message, { key: privateKey, dsaEncoding: 'ieee-p1363' });
    return { sigAlg: ALG.ECDSA, hash: hashId(hashName), r: raw.subarray(0, size), s: raw.subarray(size) };
  }
  return { sigAlg: ALG.RSASSA, hash: hashId(hashName), sig: nodeSign(hashName, message, privateKey) };
}

/** Verifies a TPMT_SIGNATURE over `message` with a node:crypto public key. */
export function verifyTpmSignature(publicKey: KeyObject, message: Uint8Array, signature: Signature): boolean {
  if (signature.sigAlg === ALG.NULL || signature.sigAlg === ALG.HMAC) return false;
  const hashName = hashNameOf(signature.hash);
  if (!hashName) return false;
  try {
    if ('r' in signature) {
      if (signature.sigAlg !== ALG.ECDSA) return false;
      const size = curveInfo(CURVE_IDS[publicKey.asymmetricKeyDetails?.namedCurve ?? ''] ?? 0).size;
      const pad = (b: Buffer) => Buffer.concat([Buffer.alloc(Math.max(0, size - b.length)), b]);
      return nodeVerify(
        hashName,
        message,
        { key: publicKey, dsaEncoding: 'ieee-p1363' },
        Buffer.concat([pad(signature.r), pad(signature.s)]),
      );
    }
    if (signature.sigAlg !== ALG.RSASSA) return false;
    return nodeVerify(hashName, message, publicKey, signature.sig);
  } catch {
    return false;
  }
}

/** A DER (X9.62) ECDSA or PKCS#1 RSA signature, as openssl and X.509 verifiers take it. */
export function signatureDer(signature: Signature): Buffer {
  if ('sig' in signature) return signature.sig;
  if (!('r' in signature)) throw new TpmError('TPM_KEY', 'not an ECDSA or RSA signature');
  const integer = (b: Buffer) => {
    let v = b;
    while (v.length > 1 && v[0] === 0 && v[1]! < 0x80) v = v.subarray(1);
    if (v[0]! >= 0x80) v = Buffer.concat([Buffer.from([0]), v]);
    return Buffer.concat([Buffer.from([0x02, v.length]), v]);
  };
  const body = Buffer.concat([integer(signature.r), integer(signature.s)]);
  return Buffer.concat([
    Buffer.from(body.length < 128 ? [0x30, body.length] : [0x30, 0x81, body.length]),
    body,
  ]);
}

export type { RsaPublic };
