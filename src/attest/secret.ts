/**
 * A secret released to an attested device, protected so that only its TPM can open it: a fresh
 * 32-byte credential is made for the identity key's Name and protected with the binding key
 * (TPM2_MakeCredential, offline); the secret itself is AES-256-GCM-encrypted under a key derived
 * from the credential (HKDF-SHA256, salted with the nonce, the secret's name in the info and in
 * the additional data). Version 1 of the answer:
 *
 *   { "type": "seal-attest-secret", "version": 1, "name": NAME, "nonce": HEX,
 *     "credentialBlob": BASE64, "encryptedSecret": BASE64, "ciphertext": BASE64 (iv ‖ data ‖ tag) }
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { makeCredential, type PublicArea } from '../tpm/index.ts';
import { AttestError } from './errors.ts';

export const SECRET_TYPE = 'seal-attest-secret';
export const SECRET_VERSION = 1;
/** The largest secret a verifier releases. */
export const MAX_SECRET = 1 << 20;
const CREDENTIAL_SIZE = 32;

export interface ProtectedSecret {
  name: string;
  nonce: Buffer;
  credentialBlob: Buffer;
  encryptedSecret: Buffer;
  ciphertext: Buffer;
}

function keyOf(credential: Uint8Array, nonce: Uint8Array, name: string): Buffer {
  return Buffer.from(
    hkdfSync('sha256', credential, nonce, Buffer.from(`seal-attest secret v1\0${name}`), 32),
  );
}

const aad = (name: string, nonce: Uint8Array) => Buffer.concat([Buffer.from(`${name}\0`), nonce]);

/** Protects `data` for the device whose identity key is `identityName`, with its binding key. */
export function protectSecret(
  binding: PublicArea,
  identityName: Uint8Array,
  nonce: Uint8Array,
  name: string,
  data: Uint8Array,
): ProtectedSecret {
  if (data.length > MAX_SECRET)
    throw new AttestError('ATTEST_SECRET', `secret ${name} is larger than ${MAX_SECRET} bytes`);
  const credential = randomBytes(CREDENTIAL_SIZE);
  try {
    const { credentialBlob, secret } = makeCredential(binding, credential, identityName);
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', keyOf(credential, nonce, name), iv);
    cipher.setAAD(aad(name, nonce));
    const ciphertext = Buffer.concat([iv, cipher.update(data), cipher.final(), cipher.getAuthTag()]);
    return { name, nonce: Buffer.from(nonce), credentialBlob, encryptedSecret: secret, ciphertext };
  } finally {
    credential.fill(0);
  }
}

/** Decrypts a released secret with the credential the TPM gave back. */
export function openSecret(credential: Uint8Array, secret: ProtectedSecret): Buffer {
  const c = secret.ciphertext;
  if (c.length < 28)
    throw new AttestError('ATTEST_SECRET', `secret ${secret.name}: the ciphertext is truncated`);
  try {
    const decipher = createDecipheriv(
      'aes-256-gcm',
      keyOf(credential, secret.nonce, secret.name),
      c.subarray(0, 12),
    );
    decipher.setAAD(aad(secret.name, secret.nonce));
    decipher.setAuthTag(c.subarray(c.length - 16));
    return Buffer.concat([decipher.update(c.subarray(12, c.length - 16)), decipher.final()]);
  } catch (error) {
    throw new AttestError(
      'ATTEST_SECRET',
      `secret ${secret.name} does not decrypt with the credential the TPM released`,
      {
        cause: error,
      },
    );
  }
}

export function encodeSecret(s: ProtectedSecret): string {
  return JSON.stringify({
    type: SECRET_TYPE,
    version: SECRET_VERSION,
    name: s.name,
    nonce: s.nonce.toString('hex'),
    credentialBlob: s.credentialBlob.toString('base64'),
    encryptedSecret: s.encryptedSecret.toString('base64'),
    ciphertext: s.ciphertext.toString('base64'),
  });
}

export function parseSecret(value: unknown, subject = 'the verifier'): ProtectedSecret {
  const fail = (why: string): never => {
    throw new AttestError('ATTEST_PROTOCOL', `${subject} answered with a malformed secret: ${why}`);
  };
  if (typeof value !== 'object' || value === null) return fail('not an object');
  const v = value as Record<string, unknown>;
  if (v.type !== SECRET_TYPE || v.version !== SECRET_VERSION) fail('another type or version');
  if (typeof v.name !== 'string' || !NAME.test(v.name)) fail('no name');
  const b64 = (field: string, max: number) => {
    const s = v[field];
    if (
      typeof s !== 'string' ||
      !/^[A-Za-z0-9+/]*={0,2}$/.test(s) ||
      s.length % 4 !== 0 ||
      s.length > (max / 3) * 4 + 8
    )
      return fail(`${field} is not base64`);
    return Buffer.from(s, 'base64');
  };
  if (typeof v.nonce !== 'string' || !/^(?:[0-9a-f]{2}){1,64}$/.test(v.nonce)) fail('nonce is not hex');
  return {
    name: v.name as string,
    nonce: Buffer.from(v.nonce as string, 'hex'),
    credentialBlob: b64('credentialBlob', 4096),
    encryptedSecret: b64('encryptedSecret', 4096),
    ciphertext: b64('ciphertext', MAX_SECRET + 64),
  };
}

/** Secret names: what `--secret NAME=FILE` and the protocol accept. */
export const NAME = /^[A-Za-z0-9._-]{1,64}$/;
