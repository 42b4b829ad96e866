/** The hash algorithms of TPM banks, sessions and names, as TPM_ALG_IDs and node:crypto names. */
import { createHash, createHmac } from 'node:crypto';
import { ALG } from './constants.ts';
import { TpmError } from './errors.ts';

export const HASHES = ['sha1', 'sha256', 'sha384', 'sha512'] as const;
export type HashName = (typeof HASHES)[number];

const IDS: Record<HashName, number> = {
  sha1: ALG.SHA1,
  sha256: ALG.SHA256,
  sha384: ALG.SHA384,
  sha512: ALG.SHA512,
};
const SIZES: Record<HashName, number> = { sha1: 20, sha256: 32, sha384: 48, sha512: 64 };

export function hashId(name: HashName): number {
  return IDS[name];
}

export function digestSize(name: HashName): number {
  return SIZES[name];
}

/** The hash named by a TPM_ALG_ID, or undefined when it is not one Seal knows. */
export function hashNameOf(id: number): HashName | undefined {
  return HASHES.find((h) => IDS[h] === id);
}

export function parseHashName(value: string): HashName {
  const name = value.toLowerCase() as HashName;
  if (!HASHES.includes(name))
    throw new TpmError('TPM_INVALID_ARGUMENT', `hash ${value} is not one of ${HASHES.join(', ')}`, {
      subject: value,
    });
  return name;
}

export function hash(name: HashName, ...parts: Uint8Array[]): Buffer {
  const h = createHash(name);
  for (const p of parts) h.update(p);
  return h.digest();
}

export function hmac(name: HashName, key: Uint8Array, ...parts: Uint8Array[]): Buffer {
  const h = createHmac(name, key);
  for (const p of parts) h.update(p);
  return h.digest();
}
