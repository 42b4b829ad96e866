/**
 * Key pairs for the product PKI: generation, PEM/PKCS#8 files (optionally passphrase-encrypted)
 * and the Web Crypto algorithms each key type signs with. Keys live in node:crypto; @peculiar/x509
 * uses them through Web Crypto.
 */
import { createPrivateKey, createPublicKey, type KeyObject, webcrypto } from 'node:crypto';
import { PkiError } from './errors.ts';

export const KEY_TYPES = ['ecdsa-p256', 'ecdsa-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096', 'ed25519'] as const;
export type KeyType = (typeof KEY_TYPES)[number];

type Algorithm = webcrypto.RsaHashedImportParams | webcrypto.EcKeyImportParams | { name: 'Ed25519' };

/** The Web Crypto algorithm of a key type, for generation and import. */
function algorithmOf(type: KeyType): Algorithm & Record<string, unknown> {
  switch (type) {
    case 'ecdsa-p256':
      return { name: 'ECDSA', namedCurve: 'P-256' };
    case 'ecdsa-p384':
      return { name: 'ECDSA', namedCurve: 'P-384' };
    case 'ed25519':
      return { name: 'Ed25519' };
    default:
      return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  }
}

/** How certificates are signed with a key of this type. */
export function signingAlgorithm(type: KeyType): Record<string, unknown> {
  switch (type) {
    case 'ecdsa-p256':
      return { name: 'ECDSA', hash: 'SHA-256' };
    case 'ecdsa-p384':
      return { name: 'ECDSA', hash: 'SHA-384' };
    case 'ed25519':
      return { name: 'Ed25519' };
    default:
      return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  }
}

export function parseKeyType(value: string | undefined): KeyType {
  const type = (value ?? 'ecdsa-p256') as KeyType;
  if (!KEY_TYPES.includes(type)) {
    throw new PkiError('PKI_INVALID_OPTION', `key type must be one of ${KEY_TYPES.join(', ')}`, {
      subject: value,
    });
  }
  return type;
}

/** The key type of a node:crypto key. */
export function keyTypeOf(key: KeyObject): KeyType {
  const details = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case 'ec':
      if (details.namedCurve === 'prime256v1') return 'ecdsa-p256';
      if (details.namedCurve === 'secp384r1') return 'ecdsa-p384';
      break;
    case 'ed25519':
      return 'ed25519';
    case 'rsa': {
      const bits = details.modulusLength ?? 0;
      if (bits === 2048 || bits === 3072 || bits === 4096) return `rsa-${bits}`;
      break;
    }
  }
  throw new PkiError('PKI_BAD_KEY', `unsupported key (${key.asymmetricKeyType} ${JSON.stringify(details)})`);
}

export interface KeyPair {
  type: KeyType;
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export async function generateKeyPair(type: KeyType): Promise<KeyPair> {
  const algorithm = algorithmOf(type);
  const params = type.startsWith('rsa-')
    ? { ...algorithm, modulusLength: Number(type.slice(4)), publicExponent: new Uint8Array([1, 0, 1]) }
    : algorithm;
  const pair = (await webcrypto.subtle.generateKey(
    params as unknown as webcrypto.RsaHashedKeyGenParams,
    true,
    ['sign', 'verify'],
  )) as webcrypto.CryptoKeyPair;
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', pair.privateKey));
  const privateKey = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
  return { type, privateKey, publicKey: createPublicKey(privateKey) };
}

/** PKCS#8 PEM, encrypted with AES-256-CBC (PBES2) when a passphrase is given. */
export function privateKeyPem(key: KeyObject, passphrase?: string): string {
  return key.export(
    passphrase
      ? { type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase }
      : { type: 'pkcs8', format: 'pem' },
  ) as string;
}

export function loadPrivateKey(pem: string | Buffer, passphrase?: string, subject?: string): KeyObject {
  try {
    return createPrivateKey({ key: pem, format: 'pem', ...(passphrase !== undefined ? { passphrase } : {}) });
  } catch (error) {
    const encrypted = String(pem).includes('ENCRYPTED');
    throw new PkiError(
      'PKI_BAD_KEY',
      encrypted && passphrase === undefined
        ? `${subject ?? 'the key'} is encrypted: give its passphrase`
        : `cannot read ${subject ?? 'the key'}: ${(error as Error).message}`,
      { subject, cause: error },
    );
  }
}

/** The key as a Web Crypto key for signing (certificates, JWS). */
export function toCryptoKey(key: KeyObject, usage: 'sign' | 'verify') {
  return key.toCryptoKey(algorithmOf(keyTypeOf(key)) as unknown as webcrypto.AlgorithmIdentifier, true, [
    usage,
  ]);
}
