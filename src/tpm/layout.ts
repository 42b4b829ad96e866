/**
 * Where Seal keeps a device's secrets in its TPM, and how those NV indices are defined — the
 * EA ("enhanced authorization") layout of Project Machine:
 *
 *   0x01500020  policy version  NV counter; owner writes (increments), anyone reads
 *   0x01500021  device certificate (DER)
 *   0x01500022  device private key (PKCS#8 DER), absent when the key lives in the TPM
 *   0x01500030  owner secret: the owner hierarchy's authValue, random, never printed
 *   0x01500040  LUKS passphrase of the config and data partitions
 *   0x01500041  version authorization: the accepted-version counter's authValue (32 random bytes)
 *   0x01500050  accepted manifest version: NV counter; anyone reads, the versionAuth holder raises
 *   0x01500051  accepted-version base: the counter's value at provisioning, written once, locked
 *   0x81000001  storage root key (ECC P-256), salts every session
 *   0x81000002  TPM-resident device identity key (restricted ECDSA P-256), when chosen
 *
 * Secret indices are owner-written once and write-locked for good (WRITEDEFINE); they are read
 * only through their authPolicy, PolicyAuthorize(product policy-signing key, policyRef): empty
 * policyRef for the device secrets, `seal:management` for the owner secret. The policy the
 * signing key approves is PolicyPCR(PCR 7) ∧ PolicyNV(version == N).
 *
 * Anti-rollback — the highest system-manifest version the device has accepted — is
 *
 *   accepted = counter(0x01500050) − base(0x01500051)
 *
 * An NV counter only goes up, but a new one's first value depends on the TPM's history: it
 * starts above every counter ever deleted from the TPM, TPM2_Clear included (swtpm: a counter
 * deleted at 40 makes the next one start at 41, also after a clear). Provisioning increments it
 * once (a counter is unreadable until then) and records that value as the base, making a fresh
 * device's accepted version 0 whatever the TPM's past. The counter is written with
 * AUTHWRITE, its authValue a random secret the TPM hands out only with the production secrets
 * (index 0x01500041, under the signed policy); the device keeps it in memory so it can raise the
 * counter later in the same boot, after PCR 7 is locked. Both public indices are POLICYREAD under
 * PolicyCommandCode(NV_Read), a policy anyone can satisfy for NV_Read and for nothing else
 * (NV_ChangeAuth needs the ADMIN role, i.e. a policy with its own command code). The counter is
 * not ORDERLY: an orderly counter may jump ahead after a power loss.
 */
import { CC, NT, NV } from './constants.ts';
import { policy } from './policy.ts';
import type { NvPublic, PublicArea } from './structures.ts';
import { nvName, objectName } from './structures.ts';

export const VERSION_INDEX = 0x01500020;
export const IDENTITY_HANDLE = 0x81000002;

export const SECRETS = ['deviceCert', 'deviceKey', 'ownerSecret', 'luksPassphrase', 'versionAuth'] as const;
export type SecretName = (typeof SECRETS)[number];

export const SECRET_INDEX: Record<SecretName, number> = {
  deviceCert: 0x01500021,
  deviceKey: 0x01500022,
  ownerSecret: 0x01500030,
  luksPassphrase: 0x01500040,
  versionAuth: 0x01500041,
};

export type PolicyRole = 'production' | 'management';

/** The policyRef each role's signed policies carry: only a management policy opens the owner secret. */
export const POLICY_REF: Record<PolicyRole, Buffer> = {
  production: Buffer.alloc(0),
  management: Buffer.from('seal:management', 'ascii'),
};

export function roleOf(secret: SecretName): PolicyRole {
  return secret === 'ownerSecret' ? 'management' : 'production';
}

/** The largest secret an index holds (the TPM's NV index limit is usually 2048). */
export const MAX_SECRET = 2048;

export const VERSION_ATTRIBUTES = NT.COUNTER | NV.OWNERWRITE | NV.AUTHREAD | NV.NO_DA;
export const SECRET_ATTRIBUTES = NT.ORDINARY | NV.OWNERWRITE | NV.POLICYREAD | NV.WRITEDEFINE | NV.NO_DA;

/** The version index's public area once incremented (its Name then is what PolicyNV binds). */
export function versionPublic(): NvPublic {
  return {
    index: VERSION_INDEX,
    nameAlg: 'sha256',
    attributes: (VERSION_ATTRIBUTES | NV.WRITTEN) >>> 0,
    authPolicy: Buffer.alloc(0),
    dataSize: 8,
  };
}

export function versionName(): Buffer {
  return nvName(versionPublic());
}

/** PolicyAuthorize(key, policyRef of the secret's role): the authPolicy of a secret index. */
export function secretAuthPolicy(policyKey: PublicArea, secret: SecretName): Buffer {
  return policy('sha256').authorize(objectName(policyKey), POLICY_REF[roleOf(secret)]).digest;
}

/** A secret index's public area: as defined (`final` false) or once written and locked. */
export function secretPublic(
  policyKey: PublicArea,
  secret: SecretName,
  dataSize: number,
  final = true,
): NvPublic {
  return {
    index: SECRET_INDEX[secret],
    nameAlg: 'sha256',
    attributes: (SECRET_ATTRIBUTES | (final ? NV.WRITTEN | NV.WRITELOCKED : 0)) >>> 0,
    authPolicy: secretAuthPolicy(policyKey, secret),
    dataSize,
  };
}

/** The 8-byte operand PolicyNV compares the version counter with. */
export function versionOperand(version: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(version));
  return b;
}

/** The fixed digest extended into PCR 7 once the secrets are read, so no later policy matches. */
export const PCR7_LOCK_EVENT = 'seal: device secrets released, PCR 7 locked';

/** `0x01500020`: a handle as the TPM documents write it. */
export function handleHex(handle: number): string {
  return `0x${(handle >>> 0).toString(16).padStart(8, '0')}`;
}

// ------------------------------------------------------------------ the accepted manifest version

export const ACCEPTED_INDEX = 0x01500050;
export const ACCEPTED_BASE_INDEX = 0x01500051;
/** The size of the counter's authValue (versionAuth): a SHA-256 digest's. */
export const VERSION_AUTH_SIZE = 32;
/** The most increments one `raiseAcceptedVersion` call makes: a larger jump is refused. */
export const MAX_RAISE = 100_000;

export const ACCEPTED_ATTRIBUTES = NT.COUNTER | NV.AUTHWRITE | NV.POLICYREAD | NV.NO_DA;
export const ACCEPTED_BASE_ATTRIBUTES =
  NT.ORDINARY | NV.OWNERWRITE | NV.POLICYREAD | NV.WRITEDEFINE | NV.NO_DA;

/** PolicyCommandCode(NV_Read): the authPolicy that lets anyone read the two public indices. */
export function publicReadPolicy(): Buffer {
  return policy('sha256').commandCode(CC.NV_Read).digest;
}

/** The counter's public area: as defined (`written` false) or once incremented. */
export function acceptedPublic(written = true): NvPublic {
  return {
    index: ACCEPTED_INDEX,
    nameAlg: 'sha256',
    attributes: (ACCEPTED_ATTRIBUTES | (written ? NV.WRITTEN : 0)) >>> 0,
    authPolicy: publicReadPolicy(),
    dataSize: 8,
  };
}

/** The base index's public area: as defined (`final` false) or once written and locked. */
export function acceptedBasePublic(final = true): NvPublic {
  return {
    index: ACCEPTED_BASE_INDEX,
    nameAlg: 'sha256',
    attributes: (ACCEPTED_BASE_ATTRIBUTES | (final ? NV.WRITTEN | NV.WRITELOCKED : 0)) >>> 0,
    authPolicy: publicReadPolicy(),
    dataSize: 8,
  };
}
