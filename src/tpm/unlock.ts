/**
 * The device side of the EA design: release the secrets a signed policy opens, in one salted
 * policy session with parameter encryption (nothing secret crosses the bus in clear), then lock
 * PCR 7. Nothing is written anywhere but the PCR extension; on refusal nothing at all is, and
 * the error carries the TPM's reason with what Seal can tell about it.
 */

import { type Tpm, TpmResponseError } from './client.ts';
import { NV, PERMANENT, PT, RH } from './constants.ts';
import { TpmError } from './errors.ts';
import { type HashName, hash } from './hash.ts';
import {
  handleHex,
  MAX_SECRET,
  PCR7_LOCK_EVENT,
  SECRET_ATTRIBUTES,
  SECRET_INDEX,
  type SecretName,
  secretAuthPolicy,
  VERSION_INDEX,
} from './layout.ts';
import type { AuthSession } from './session.ts';
import { checkPolicy, pcrDigestOf, pcrSelectionOf, type SignedPolicy } from './signed-policy.ts';
import { objectName, type PublicArea } from './structures.ts';
import { SRK_HANDLE, srkTemplate } from './templates.ts';

/** A key to salt sessions with: the persistent SRK, or a transient ECC primary (null hierarchy) when there is none. */
export async function saltKey(tpm: Tpm): Promise<{ handle: number; public: PublicArea; transient: boolean }> {
  try {
    const { public: pub } = await tpm.readPublic(SRK_HANDLE);
    return { handle: SRK_HANDLE, public: pub, transient: false };
  } catch (error) {
    if (!(error instanceof TpmResponseError) || error.rcName !== 'TPM_RC_HANDLE') throw error;
    // In the null hierarchy: its authorization is always empty, whoever owns the TPM.
    const created = await tpm.createPrimary(RH.NULL, srkTemplate('ecc'));
    return { handle: created.handle, public: created.public, transient: true };
  }
}

/**
 * `saltKey`, refusing a key whose Name is not `storageKeyName` when given (before any session
 * starts with it; a transient key is flushed first).
 */
export async function pinnedSaltKey(
  tpm: Tpm,
  storageKeyName?: Buffer,
): Promise<{ handle: number; public: PublicArea; transient: boolean }> {
  const salt = await saltKey(tpm);
  if (storageKeyName && !objectName(salt.public).equals(storageKeyName)) {
    if (salt.transient) await tpm.flushContext(salt.handle).catch(() => {});
    throw new TpmError(
      'TPM_REFUSED',
      `the storage key at ${handleHex(SRK_HANDLE)} is not the one provisioned (Name ${objectName(salt.public).toString('hex')}): not starting a session with it`,
      { subject: tpm.address },
    );
  }
  return salt;
}

/** The policy version the TPM holds (its version counter), or undefined when it has none. */
export async function readVersion(tpm: Tpm): Promise<number | undefined> {
  try {
    return Number(await tpm.nvReadCounter(VERSION_INDEX));
  } catch (error) {
    if (
      error instanceof TpmResponseError &&
      (error.rcName === 'TPM_RC_HANDLE' || error.rcName === 'TPM_RC_NV_UNINITIALIZED')
    )
      return undefined;
    throw error;
  }
}

/** The digest `lockPcr7` extends: SHA-n of PCR7_LOCK_EVENT in each bank. */
export function lockDigest(bank: HashName): Buffer {
  return hash(bank, Buffer.from(PCR7_LOCK_EVENT));
}

/**
 * Extends PCR 7 with a fixed value in every given bank (all allocated banks by default), so no
 * policy over the boot's PCR 7 matches again until the next reboot.
 */
export async function lockPcr7(tpm: Tpm, banks?: HashName[]): Promise<void> {
  const chosen = banks ?? (await tpm.pcrBanks()).filter((b) => b.pcrs.includes(7)).map((b) => b.hash);
  const known = chosen.filter((b) => ['sha1', 'sha256', 'sha384', 'sha512'].includes(b));
  await tpm.pcrExtend(
    7,
    known.map((b) => ({ hash: b, digest: lockDigest(b) })),
  );
}

export interface UnlockOptions {
  policy: SignedPolicy;
  /**
   * The secrets to read. Default: for a production policy the device certificate, the device
   * key (when it is not TPM-resident), the LUKS passphrase and the version authorization (the
   * accepted-version counter's authValue, for `raiseAcceptedVersion`; absent on a TPM
   * provisioned without it); for a management policy the owner secret.
   */
  secrets?: SecretName[];
  /** Extend PCR 7 afterwards (every allocated bank) so nothing more can be read in this boot. */
  lockPcr7?: boolean;
  /**
   * The Name of the storage key that salts the session, as provisioning reported it (`srkName`).
   * Given, any other key — one an interposer on the bus could know the private half of — is
   * refused before a session starts; without it, parameter encryption protects against reading
   * the bus, not against a device that impersonates the TPM.
   */
  storageKeyName?: Buffer;
}

export interface Unlocked {
  /** The policy version the TPM accepted. */
  version: number;
  secrets: Partial<Record<SecretName, Buffer>>;
  /** Overwrites the secrets' bytes in memory. */
  wipe(): void;
}

function refused(what: string, error: unknown, diagnosis: string[]): TpmError {
  const reason = error instanceof Error ? error.message : String(error);
  const why = diagnosis.length ? ` — ${diagnosis.join('; ')}` : '';
  return new TpmError('TPM_REFUSED', `the TPM refused ${what}: ${reason}${why}`, {
    cause: error,
    ...(error instanceof TpmError && error.rc !== undefined ? { rc: error.rc } : {}),
  });
}

/** What Seal can tell about a refusal, by reading public TPM state (best effort, never throws). */
async function diagnose(tpm: Tpm, p: SignedPolicy, secrets: SecretName[]): Promise<string[]> {
  const out: string[] = [];
  const check = checkPolicy(p);
  out.push(...check.problems.map((x) => `the policy file: ${x}`));
  try {
    const values = await tpm.pcrRead(pcrSelectionOf(p.pcr));
    for (const [pcr, want] of p.pcr.pcrs) {
      const have = values.find((v) => v.pcr === pcr)?.value;
      if (!have || have.equals(want)) continue;
      const locked = pcr === 7 && have.equals(hash(p.pcr.bank, want, lockDigest(p.pcr.bank)));
      out.push(
        locked
          ? `PCR ${pcr} was locked after the secrets were released in this boot`
          : `PCR ${pcr} (${p.pcr.bank}) is ${have.toString('hex')}, the policy is for ${want.toString('hex')}`,
      );
    }
  } catch {}
  try {
    const { name } = await tpm.nvReadPublic(p.nv.index);
    if (!name.equals(p.nv.name))
      out.push(`NV index ${handleHex(p.nv.index)} is not the one the policy names (redefined?)`);
    else {
      const version = await readVersion(tpm);
      if (version !== undefined && BigInt(version) !== p.nv.operandB.readBigUInt64BE(0))
        out.push(
          `the TPM's policy version is ${version}, the policy is for ${p.policyVersion}${version > p.policyVersion ? ' (revoked)' : ''}`,
        );
    }
  } catch {
    out.push(`the TPM has no NV index ${handleHex(p.nv.index)}`);
  }
  for (const secret of secrets) {
    try {
      const { public: pub } = await tpm.nvReadPublic(SECRET_INDEX[secret]);
      if (!pub.authPolicy.equals(secretAuthPolicy(p.signingKey.public, secret)))
        out.push(`the ${secret} index is not provisioned for this policy's signing key and role`);
    } catch {}
  }
  return out;
}

const DEFAULT_SECRETS: Record<SignedPolicy['role'], SecretName[]> = {
  production: ['deviceCert', 'deviceKey', 'luksPassphrase', 'versionAuth'],
  management: ['ownerSecret'],
};

/**
 * Secrets a default unlock skips when the TPM has no index for them: the device key when the
 * identity key is TPM-resident; the version authorization on a TPM provisioned before Seal kept
 * the accepted manifest version (`readAcceptedVersion` then says TPM_NOT_PROVISIONED).
 */
const OPTIONAL_SECRETS: SecretName[] = ['deviceKey', 'versionAuth'];

/**
 * Satisfies the signed policy and reads the secrets: the library API of the device agent.
 * Commands: ReadPublic(SRK), StartAuthSession (salted, AES-CFB), GetCapability (NV buffer size),
 * NV_ReadPublic per secret, LoadExternal + VerifySignature + FlushContext (the ticket),
 * per chunk PolicyPCR + PolicyNV + PolicyAuthorize + NV_Read (response encrypted), then
 * PCR_Extend(7) when asked, and FlushContext of the session.
 */
export async function unlock(tpm: Tpm, options: UnlockOptions): Promise<Unlocked> {
  const p = options.policy;
  const explicit = options.secrets !== undefined;
  const wanted = options.secrets ?? DEFAULT_SECRETS[p.role];
  const secrets: Partial<Record<SecretName, Buffer>> = {};
  const wipe = () => {
    for (const s of Object.values(secrets)) s?.fill(0);
  };
  let session: AuthSession | undefined;
  let salt: Awaited<ReturnType<typeof saltKey>> | undefined;
  let key: number | undefined;
  let stage = 'to start the policy session';
  try {
    salt = await pinnedSaltKey(tpm, options.storageKeyName);
    session = (await tpm.startAuthSession({ type: 'policy', salt })).encrypting({ encrypt: true });
    if (salt.transient) {
      await tpm.flushContext(salt.handle);
      salt = undefined;
    }
    // Which secrets are there, how large, and defined as Seal defines them.
    const plan: { secret: SecretName; index: number; size: number }[] = [];
    for (const secret of wanted) {
      const index = SECRET_INDEX[secret];
      let pub: Awaited<ReturnType<Tpm['nvReadPublic']>>['public'];
      try {
        pub = (await tpm.nvReadPublic(index)).public;
      } catch (error) {
        if (
          error instanceof TpmResponseError &&
          error.rcName === 'TPM_RC_HANDLE' &&
          !explicit &&
          OPTIONAL_SECRETS.includes(secret)
        )
          continue;
        if (error instanceof TpmResponseError && error.rcName === 'TPM_RC_HANDLE')
          throw new TpmError(
            'TPM_NOT_PROVISIONED',
            `the TPM has no ${secret} (NV index ${handleHex(index)}): it is not provisioned`,
            {
              cause: error,
            },
          );
        throw error;
      }
      const expected = (SECRET_ATTRIBUTES | NV.WRITTEN | NV.WRITELOCKED) >>> 0;
      if (pub.attributes !== expected || pub.nameAlg !== 'sha256' || pub.dataSize > MAX_SECRET)
        throw new TpmError(
          'TPM_REFUSED',
          `NV index ${handleHex(index)} (${secret}) is not defined as Seal provisions it (attributes 0x${pub.attributes.toString(16)}, expected 0x${expected.toString(16)}): redefined by someone else, not released`,
          { subject: `${handleHex(index)}` },
        );
      plan.push({ secret, index, size: pub.dataSize });
    }
    if (p.role === 'production' && plan.length === 0)
      throw new TpmError('TPM_NOT_PROVISIONED', 'the TPM holds none of the requested secrets');
    stage = 'the policy signature';
    const loaded = await tpm.loadExternal(p.signingKey.public, RH.OWNER);
    key = loaded.handle;
    const ticket = await tpm.verifySignature(key, hash('sha256', p.approvedPolicy, p.policyRef), p.signature);
    await tpm.flushContext(key);
    key = undefined;
    const selection = pcrSelectionOf(p.pcr);
    const pcrDigest = pcrDigestOf(p.pcr);
    const s = session;
    const satisfy = async () => {
      await tpm.policyPCR(s, selection, pcrDigest);
      await tpm.policyNV(s, {
        index: p.nv.index,
        operandB: p.nv.operandB,
        offset: p.nv.offset,
        operation: p.nv.operation,
      });
      await tpm.policyAuthorize(s, {
        approvedPolicy: p.approvedPolicy,
        policyRef: p.policyRef,
        keySign: loaded.name,
        checkTicket: ticket,
      });
      return { session: s };
    };
    for (const { secret, index, size } of plan) {
      stage = `to release the ${secret}`;
      secrets[secret] = await tpm.nvRead(index, size, { auth: satisfy });
    }
    if (options.lockPcr7) {
      stage = 'the PCR 7 lock';
      await lockPcr7(tpm);
    }
    await tpm.flushSession(session);
    return { version: p.policyVersion, secrets, wipe };
  } catch (error) {
    wipe();
    for (const handle of [
      session?.open ? session.handle : undefined,
      key,
      salt?.transient ? salt.handle : undefined,
    ])
      if (handle !== undefined) await tpm.flushContext(handle).catch(() => {});
    if (error instanceof TpmResponseError) throw refused(stage, error, await diagnose(tpm, p, wanted));
    throw error;
  }
}

/** Whether the TPM's owner authorization is set (TPMA_PERMANENT.ownerAuthSet). */
export async function ownerAuthSet(tpm: Tpm): Promise<boolean> {
  return (((await tpm.getProperty(PT.PERMANENT)) ?? 0) & PERMANENT.ownerAuthSet) !== 0;
}
