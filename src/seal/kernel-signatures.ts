/**
 * The two signatures the kernel checks on a sealed image's verity data, both PKCS#7 in the form
 * `fsverity sign` and `openssl smime -sign -noattr -nocerts -binary` make (src/pki/pkcs7.ts):
 *
 * - fs-verity built-in signatures: over the `fsverity_formatted_digest` ("FSVerity", u16
 *   algorithm, u16 digest size, digest), with the digest's own hash; given to
 *   FS_IOC_ENABLE_VERITY and checked against the `.fs-verity` keyring (composefs EROFS images).
 * - dm-verity root-hash signatures: over the root hash as the device-mapper table spells it
 *   (lowercase hex, no newline), SHA-256; given to `veritysetup open --root-hash-signature` (or
 *   the table's `root_hash_sig_key_desc`) and checked against the kernel's trusted keys
 *   (builtin, secondary and, with DM_VERITY_VERIFY_ROOTHASH_SIG_PLATFORM_KEYRING, the UEFI db).
 */
import type { KeyObject } from 'node:crypto';
import {
  type CertificateSource,
  type Pkcs7Verified,
  PkiError,
  signPkcs7,
  verifyPkcs7,
} from '../pki/index.ts';
import { type FsverityAlgorithm, formattedDigest } from '../verity/index.ts';

const DIGEST_SIZES: Record<FsverityAlgorithm, number> = { sha256: 32, sha512: 64 };

export interface KernelSigner {
  certificate: CertificateSource;
  key?: KeyObject;
  /** Certificates to carry in each signature (default none: the kernel's keyring holds the signer). */
  certificates?: CertificateSource[];
  /** A signature made elsewhere (TPM, HSM); see Pkcs7SignOptions.signature. */
  signature?: (data: Buffer, digest: 'sha256' | 'sha384' | 'sha512') => Buffer | Uint8Array;
}

function checkDigest(digest: Uint8Array, algorithm: FsverityAlgorithm): void {
  if (DIGEST_SIZES[algorithm] === undefined)
    throw new PkiError('PKI_INVALID_OPTION', `unsupported fs-verity algorithm ${String(algorithm)}`);
  if (digest.length !== DIGEST_SIZES[algorithm]) {
    throw new PkiError(
      'PKI_INVALID_OPTION',
      `an fs-verity ${algorithm} digest has ${DIGEST_SIZES[algorithm]} bytes, not ${digest.length}`,
    );
  }
}

/** The fs-verity built-in signature of a file digest (bit-identical to `fsverity sign`). */
export function signFsverityDigest(
  digest: Uint8Array,
  signer: KernelSigner,
  algorithm: FsverityAlgorithm = 'sha256',
): Buffer {
  checkDigest(digest, algorithm);
  return signPkcs7(formattedDigest(digest, algorithm), { ...signer, digest: algorithm });
}

/** Checks an fs-verity signature of `digest` against trusted certificates (as the kernel would). */
export function verifyFsveritySignature(
  signature: Uint8Array,
  digest: Uint8Array,
  trusted: CertificateSource[],
  algorithm: FsverityAlgorithm = 'sha256',
  what = 'fs-verity signature',
): Pkcs7Verified {
  checkDigest(digest, algorithm);
  return verifyPkcs7(signature, formattedDigest(digest, algorithm), trusted, what);
}

/** What a dm-verity root-hash signature signs: the root hash in lowercase hex, as in the table. */
export function rootHashMessage(rootHash: string | Uint8Array): Buffer {
  const hex = typeof rootHash === 'string' ? rootHash : Buffer.from(rootHash).toString('hex');
  if (!/^(?:[0-9a-fA-F]{2}){16,64}$/.test(hex))
    throw new PkiError('PKI_INVALID_OPTION', `${JSON.stringify(hex)} is not a dm-verity root hash`);
  return Buffer.from(hex.toLowerCase(), 'latin1');
}

/** The dm-verity root-hash signature (`veritysetup open --root-hash-signature`). */
export function signRootHash(rootHash: string | Uint8Array, signer: KernelSigner): Buffer {
  return signPkcs7(rootHashMessage(rootHash), { ...signer, digest: 'sha256' });
}

export function verifyRootHashSignature(
  signature: Uint8Array,
  rootHash: string | Uint8Array,
  trusted: CertificateSource[],
  what = 'root-hash signature',
): Pkcs7Verified {
  return verifyPkcs7(signature, rootHashMessage(rootHash), trusted, what);
}
