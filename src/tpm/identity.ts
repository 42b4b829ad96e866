/**
 * The TPM-resident device identity: a restricted ECDSA P-256 signing key created in the TPM and
 * made persistent (non-exportable: fixedTPM, fixedParent). Its public key is what the device
 * CA certifies (`seal pki device new --public-key`); it signs challenges (TPM2_Hash then
 * TPM2_Sign with the hash ticket, giving a plain ECDSA-SHA256 signature any verifier checks)
 * and quotes PCRs (attestation).
 */
import { createPublicKey, type KeyObject, verify as nodeVerify } from 'node:crypto';
import { type Tpm, TpmResponseError } from './client.ts';
import { RH } from './constants.ts';
import { TpmError } from './errors.ts';
import { IDENTITY_HANDLE } from './layout.ts';
import type { Authorization } from './session.ts';
import type { Attest, PcrSelection, PublicArea, Signature } from './structures.ts';
import { identityTemplate, publicPem, SRK_HANDLE, signatureDer, srkTemplate } from './templates.ts';

/** The most a challenge may hold (TPM2_Hash takes one MAX_DIGEST_BUFFER). */
export const MAX_CHALLENGE = 1024;

export interface Identity {
  handle: number;
  public: PublicArea;
  name: Buffer;
  /** SubjectPublicKeyInfo PEM, for `seal pki device new --public-key`. */
  pem: string;
}

/** The identity key's public part, or undefined when the TPM has none. */
export async function identityPublic(tpm: Tpm): Promise<Identity | undefined> {
  try {
    const { public: pub, name } = await tpm.readPublic(IDENTITY_HANDLE);
    return { handle: IDENTITY_HANDLE, public: pub, name, pem: publicPem(pub) };
  } catch (error) {
    if (error instanceof TpmResponseError && error.rcName === 'TPM_RC_HANDLE') return undefined;
    throw error;
  }
}

/**
 * Creates the identity key under the storage root key and makes it persistent — before the TPM
 * is provisioned (it needs the owner authorization, empty until then, or `ownerAuth`).
 * Idempotent: an existing identity key is returned as it is.
 */
export async function createIdentity(
  tpm: Tpm,
  { ownerAuth = Buffer.alloc(0) }: { ownerAuth?: Buffer } = {},
): Promise<Identity & { created: boolean }> {
  const existing = await identityPublic(tpm);
  if (existing) return { ...existing, created: false };
  const owner = { password: ownerAuth };
  // The parent: the persistent storage root key, made (in the owner hierarchy) when missing.
  try {
    await tpm.readPublic(SRK_HANDLE);
  } catch (error) {
    if (!(error instanceof TpmResponseError && error.rcName === 'TPM_RC_HANDLE')) throw error;
    const srk = await tpm.createPrimary(RH.OWNER, srkTemplate('ecc'), { auth: owner }).catch((e) => {
      throw ownerError(e);
    });
    try {
      await tpm.evictControl(srk.handle, SRK_HANDLE, { auth: owner });
    } finally {
      await tpm.flushContext(srk.handle);
    }
  }
  const created = await tpm.create(SRK_HANDLE, identityTemplate());
  const loaded = await tpm.load(SRK_HANDLE, created.private, created.public);
  try {
    await tpm.evictControl(loaded.handle, IDENTITY_HANDLE, { auth: owner });
  } catch (error) {
    throw ownerError(error);
  } finally {
    await tpm.flushContext(loaded.handle);
  }
  return {
    handle: IDENTITY_HANDLE,
    public: loaded.public,
    name: loaded.name,
    pem: publicPem(loaded.public),
    created: true,
  };
}

function ownerError(error: unknown): unknown {
  if (
    error instanceof TpmResponseError &&
    (error.rcName === 'TPM_RC_BAD_AUTH' || error.rcName === 'TPM_RC_AUTH_FAIL')
  )
    return new TpmError(
      'TPM_FOREIGN',
      "the TPM's owner authorization is set (it is provisioned): create the identity key before provisioning",
      { cause: error },
    );
  return error;
}

async function requireIdentity(tpm: Tpm): Promise<Identity> {
  const id = await identityPublic(tpm);
  if (!id)
    throw new TpmError(
      'TPM_NOT_PROVISIONED',
      `the TPM has no identity key at 0x${IDENTITY_HANDLE.toString(16)}`,
    );
  return id;
}

/** Signs a challenge with the identity key: an ECDSA-SHA256 signature over the challenge bytes. */
export async function signChallenge(
  tpm: Tpm,
  challenge: Buffer,
  auth: Authorization = { password: Buffer.alloc(0) },
): Promise<{ signature: Signature; der: Buffer }> {
  if (challenge.length === 0 || challenge.length > MAX_CHALLENGE)
    throw new TpmError(
      'TPM_INVALID_ARGUMENT',
      `a challenge is 1 to ${MAX_CHALLENGE} bytes, not ${challenge.length}`,
    );
  await requireIdentity(tpm);
  const { digest, validation } = await tpm.hash(challenge, 'sha256', RH.OWNER);
  const signature = await tpm.sign(IDENTITY_HANDLE, digest, { validation, auth });
  return { signature, der: signatureDer(signature) };
}

/** A quote of PCRs by the identity key, with `nonce` as its qualifying data. */
export async function quoteIdentity(
  tpm: Tpm,
  nonce: Buffer,
  selections: PcrSelection[],
): Promise<{ attestBytes: Buffer; attest: Attest; signature: Signature; der: Buffer }> {
  if (nonce.length > 64) throw new TpmError('TPM_INVALID_ARGUMENT', 'a quote nonce is at most 64 bytes');
  await requireIdentity(tpm);
  const quote = await tpm.quote(IDENTITY_HANDLE, { qualifyingData: nonce, selections });
  return { ...quote, der: signatureDer(quote.signature) };
}

/** Verifies a challenge signature (DER ECDSA-SHA256) with a public key, a PEM key or a certificate. */
export function verifyChallenge(key: KeyObject | string | Buffer, challenge: Buffer, der: Buffer): boolean {
  try {
    const publicKey = typeof key === 'object' && 'asymmetricKeyType' in key ? key : createPublicKey(key);
    return nodeVerify('sha256', challenge, publicKey, der);
  } catch {
    return false;
  }
}
