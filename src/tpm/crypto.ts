/**
 * The session cryptography of TPM 2.0 (Part 1, 11.4): KDFa (SP 800-108 counter mode with HMAC),
 * KDFe (SP 800-56A concatenation KDF), salts encrypted to a TPM key (ECDH on its curve or
 * RSA-OAEP), and AES-CFB parameter encryption. Everything comes from node:crypto.
 */
import {
  createCipheriv,
  createDecipheriv,
  createPublicKey,
  constants as cryptoConstants,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
  publicEncrypt,
  randomBytes,
} from 'node:crypto';
import { ECC_CURVE } from './constants.ts';
import { TpmError } from './errors.ts';
import { digestSize, type HashName, hash, hmac } from './hash.ts';
import { marshal } from './marshal.ts';
import type { PublicArea } from './structures.ts';

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

/** A label as KDFs take it: the ASCII text and a terminating NUL. */
function label(text: string): Buffer {
  return Buffer.from(`${text}\0`, 'latin1');
}

/** KDFa(hash, key, label, contextU, contextV, bits). */
export function kdfa(
  hashName: HashName,
  key: Uint8Array,
  text: string,
  contextU: Uint8Array,
  contextV: Uint8Array,
  bits: number,
): Buffer {
  const out: Buffer[] = [];
  const bytes = Math.ceil(bits / 8);
  for (let i = 1, have = 0; have < bytes; i++) {
    const block = hmac(hashName, key, u32(i), label(text), contextU, contextV, u32(bits));
    out.push(block);
    have += block.length;
  }
  const result = Buffer.concat(out).subarray(0, bytes);
  if (bits % 8) result[0]! &= (1 << (bits % 8)) - 1;
  return result;
}

/** KDFe(hash, Z, label, partyUInfo, partyVInfo, bits). */
export function kdfe(
  hashName: HashName,
  z: Uint8Array,
  text: string,
  partyU: Uint8Array,
  partyV: Uint8Array,
  bits: number,
): Buffer {
  const out: Buffer[] = [];
  const bytes = Math.ceil(bits / 8);
  for (let i = 1, have = 0; have < bytes; i++) {
    const block = hash(hashName, u32(i), z, label(text), partyU, partyV);
    out.push(block);
    have += block.length;
  }
  return Buffer.concat(out).subarray(0, bytes);
}

/** AES-CFB with the key and IV KDFa derives from the session (Part 1, 21.3). */
export function cfb(
  direction: 'encrypt' | 'decrypt',
  hashName: HashName,
  keyBits: number,
  sessionValue: Uint8Array,
  nonceNewer: Uint8Array,
  nonceOlder: Uint8Array,
  data: Uint8Array,
): Buffer {
  const material = kdfa(hashName, sessionValue, 'CFB', nonceNewer, nonceOlder, keyBits + 128);
  const key = material.subarray(0, keyBits / 8);
  const iv = material.subarray(keyBits / 8);
  const algorithm = `aes-${keyBits}-cfb`;
  const cipher =
    direction === 'encrypt' ? createCipheriv(algorithm, key, iv) : createDecipheriv(algorithm, key, iv);
  return Buffer.concat([cipher.update(data), cipher.final()]);
}

const CURVES: Record<number, { name: string; jwk: string; size: number }> = {
  [ECC_CURVE.NIST_P256]: { name: 'prime256v1', jwk: 'P-256', size: 32 },
  [ECC_CURVE.NIST_P384]: { name: 'secp384r1', jwk: 'P-384', size: 48 },
  [ECC_CURVE.NIST_P521]: { name: 'secp521r1', jwk: 'P-521', size: 66 },
};

export function curveInfo(curve: number): { name: string; jwk: string; size: number } {
  const info = CURVES[curve];
  if (!info) throw new TpmError('TPM_KEY', `ECC curve 0x${curve.toString(16)} is not supported`);
  return info;
}

function pad(b: Uint8Array, size: number): Buffer {
  if (b.length >= size) return Buffer.from(b);
  return Buffer.concat([Buffer.alloc(size - b.length), b]);
}

/** The node:crypto public key of an ECC or RSA public area. */
export function publicKeyOf(p: PublicArea): KeyObject {
  if (p.type === 'ecc') {
    const { jwk, size } = curveInfo(p.curve);
    return createPublicKey({
      key: {
        kty: 'EC',
        crv: jwk,
        x: pad(p.x, size).toString('base64url'),
        y: pad(p.y, size).toString('base64url'),
      },
      format: 'jwk',
    });
  }
  if (p.type === 'rsa') {
    const e = Buffer.alloc(4);
    e.writeUInt32BE(p.exponent || 65537);
    return createPublicKey({
      key: {
        kty: 'RSA',
        n: p.modulus.toString('base64url'),
        e: e.subarray(e.findIndex((b) => b !== 0)).toString('base64url'),
      },
      format: 'jwk',
    });
  }
  throw new TpmError('TPM_KEY', `a ${p.type} object has no public key`);
}

export interface Salt {
  /** The salt itself: the session key derives from it. */
  salt: Buffer;
  /** TPM2B_ENCRYPTED_SECRET's contents for TPM2_StartAuthSession. */
  encryptedSalt: Buffer;
}

/** A fresh salt, encrypted to a TPM key (restricted decryption key: ECC or RSA) as Part 1, annex B/C say. */
export function makeSalt(tpmKey: PublicArea): Salt {
  const { seed, encrypted } = makeSeed(tpmKey, 'SECRET');
  return { salt: seed, encryptedSalt: encrypted };
}

/**
 * A fresh seed (the size of the key's Name digest) that only the TPM holding `tpmKey`'s private
 * part can recover, and its TPM2B_ENCRYPTED_SECRET contents (Part 1, annex B and C): ECC — an
 * ephemeral point, the seed KDFe(Z, label, its x, the key's x); RSA — OAEP with `label`.
 * `SECRET` salts sessions; `IDENTITY` protects credentials; `DUPLICATE` protects imports.
 */
export function makeSeed(tpmKey: PublicArea, text: string): { seed: Buffer; encrypted: Buffer } {
  const size = digestSize(tpmKey.nameAlg);
  if (tpmKey.type === 'ecc') {
    const { name, size: coordinate } = curveInfo(tpmKey.curve);
    const ephemeral = generateKeyPairSync('ec', { namedCurve: name });
    const z = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: publicKeyOf(tpmKey) });
    const jwk = ephemeral.publicKey.export({ format: 'jwk' });
    const x = pad(Buffer.from(jwk.x!, 'base64url'), coordinate);
    const y = pad(Buffer.from(jwk.y!, 'base64url'), coordinate);
    const seed = kdfe(tpmKey.nameAlg, z, text, x, pad(tpmKey.x, coordinate), size * 8);
    return { seed, encrypted: marshal((w) => w.b(x).b(y)) };
  }
  if (tpmKey.type === 'rsa') {
    const seed = randomBytes(size);
    const encrypted = publicEncrypt(
      {
        key: publicKeyOf(tpmKey),
        padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING,
        oaepHash: tpmKey.nameAlg,
        oaepLabel: label(text),
      },
      seed,
    );
    return { seed, encrypted };
  }
  throw new TpmError('TPM_KEY', `a ${tpmKey.type} key cannot receive an encrypted seed`);
}
