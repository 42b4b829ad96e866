/**
 * The accepted manifest version: the highest system-manifest version this device has accepted,
 * kept in the TPM so that restoring an older disk cannot roll it back. It is
 * `counter(0x01500050) − base(0x01500051)` (layout.ts says why there is a base): 0 on a freshly
 * provisioned device, never lower afterwards.
 *
 * Anyone reads it (the agent before verifying a manifest, `seal tpm status`); only the holder
 * of the version authorization — released by `unlock` with the production secrets, i.e. to a boot
 * the signed policy approves — raises it, and may do so for the rest of that boot, after the PCR 7
 * lock (the authValue stays valid; the policy would not). Every session is salted with the
 * storage key, so what a read returns is authenticated by the response HMAC (an interposer on the
 * bus cannot show a lower value without the salt, given `storageKeyName`), and the version
 * authorization only ever keys HMACs: it never crosses the bus.
 */
import { type Tpm, TpmResponseError } from './client.ts';
import { CC, NV } from './constants.ts';
import { TpmError } from './errors.ts';
import {
  ACCEPTED_BASE_INDEX,
  ACCEPTED_INDEX,
  acceptedBasePublic,
  acceptedPublic,
  handleHex,
  MAX_RAISE,
} from './layout.ts';
import type { Authorization, AuthSession } from './session.ts';
import type { NvPublic } from './structures.ts';
import { pinnedSaltKey } from './unlock.ts';

export interface AcceptedVersionOptions {
  /**
   * The Name of the storage key that salts the sessions (provisioning's `srkName`): another key
   * is refused before a session starts (see `UnlockOptions.storageKeyName`).
   */
  storageKeyName?: Buffer;
  /** How to wait when the TPM rate-limits NV writes (TPM_RC_NV_RATE); default: setTimeout. */
  sleep?: (ms: number) => Promise<void>;
}

export interface AcceptedState {
  /** counter − base: the accepted manifest version. */
  version: number;
  counter: bigint;
  base: bigint;
}

function sameLayout(pub: NvPublic, expected: NvPublic): boolean {
  return (
    pub.nameAlg === expected.nameAlg &&
    pub.attributes === expected.attributes &&
    pub.dataSize === expected.dataSize &&
    pub.authPolicy.equals(expected.authPolicy)
  );
}

/** The index's public area, checked to be Seal's as provisioning leaves it. */
async function checkedPublic(tpm: Tpm, expected: NvPublic, what: string): Promise<void> {
  const index = expected.index;
  let pub: NvPublic;
  try {
    pub = (await tpm.nvReadPublic(index)).public;
  } catch (error) {
    if (error instanceof TpmResponseError && error.rcName === 'TPM_RC_HANDLE')
      throw new TpmError(
        'TPM_NOT_PROVISIONED',
        `the TPM has no ${what} (NV index ${handleHex(index)}): it was provisioned without the accepted manifest version (re-run seal tpm provision with --management-policy to add it) or not at all`,
        { subject: handleHex(index), cause: error },
      );
    throw error;
  }
  if (sameLayout(pub, expected)) return;
  // Seal's layout short of WRITTEN / WRITELOCKED: a provisioning that stopped half-way.
  const progress = (a: number) => (a | NV.WRITTEN | NV.WRITELOCKED) >>> 0;
  if (
    sameLayout(
      { ...pub, attributes: progress(pub.attributes) },
      { ...expected, attributes: progress(expected.attributes) },
    )
  )
    throw new TpmError(
      'TPM_NOT_PROVISIONED',
      `the ${what} (NV index ${handleHex(index)}) was never ${expected.attributes & NV.WRITELOCKED ? 'written and locked' : 'written'}: provisioning did not finish`,
      { subject: handleHex(index) },
    );
  throw new TpmError(
    'TPM_FOREIGN',
    `NV index ${handleHex(index)} (${what}) is not defined as Seal provisions it (attributes 0x${pub.attributes.toString(16)}, expected 0x${expected.attributes.toString(16)}; authPolicy ${pub.authPolicy.toString('hex') || 'empty'}): not trusted`,
    { subject: handleHex(index) },
  );
}

/** Reads an 8-byte index readable under PolicyCommandCode(NV_Read), satisfying it in `session`. */
export async function readPublicCounter(tpm: Tpm, session: AuthSession, index: number): Promise<bigint> {
  const data = await tpm.nvRead(index, 8, {
    auth: async () => {
      await tpm.policyCommandCode(session, CC.NV_Read);
      return { session };
    },
  });
  return data.readBigUInt64BE(0);
}

/**
 * Runs `use` with a salted policy session, flushed afterwards. Its responses are authenticated
 * (the response HMAC is keyed with the salted session key) but not encrypted: the values are
 * public, and a TPM keys response encryption with the index's authValue — the counter's is the
 * version authorization, which a reader does not have (libtpms does; older reference code did
 * not, so it could not even be relied on).
 */
export async function withReadSession<T>(
  tpm: Tpm,
  options: AcceptedVersionOptions,
  use: (session: AuthSession) => Promise<T>,
): Promise<T> {
  const salt = await pinnedSaltKey(tpm, options.storageKeyName);
  let session: AuthSession | undefined;
  try {
    session = await tpm.startAuthSession({ type: 'policy', salt });
    if (salt.transient) await tpm.flushContext(salt.handle);
    const result = await use(session);
    await tpm.flushSession(session);
    return result;
  } catch (error) {
    if (session?.open) await tpm.flushContext(session.handle).catch(() => {});
    if (salt.transient) await tpm.flushContext(salt.handle).catch(() => {});
    throw error;
  }
}

/** The counter, its base and the accepted version, after checking both indices are Seal's. */
export async function readAcceptedState(
  tpm: Tpm,
  options: AcceptedVersionOptions = {},
): Promise<AcceptedState> {
  await checkedPublic(tpm, acceptedPublic(), 'accepted-version counter');
  await checkedPublic(tpm, acceptedBasePublic(), 'accepted-version base');
  const { counter, base } = await withReadSession(tpm, options, async (session) => ({
    base: await readPublicCounter(tpm, session, ACCEPTED_BASE_INDEX),
    counter: await readPublicCounter(tpm, session, ACCEPTED_INDEX),
  }));
  const version = counter - base;
  if (version < 0n || version > BigInt(Number.MAX_SAFE_INTEGER))
    throw new TpmError(
      'TPM_FOREIGN',
      `the accepted-version counter (${counter}) and its base (${base}) are inconsistent: not provisioned by Seal`,
      { subject: handleHex(ACCEPTED_INDEX) },
    );
  return { version: Number(version), counter, base };
}

/**
 * The highest manifest version this device accepted (0 when none yet). Throws TpmError
 * `TPM_NOT_PROVISIONED` when the TPM does not hold the counter, `TPM_FOREIGN` when its indices
 * are not Seal's.
 */
export async function readAcceptedVersion(tpm: Tpm, options: AcceptedVersionOptions = {}): Promise<number> {
  return (await readAcceptedState(tpm, options)).version;
}

/** How long `raiseAcceptedVersion` waits, in all, for one increment the TPM rate-limits. */
const NV_RATE_PATIENCE_MS = 120_000;

async function incrementOnce(tpm: Tpm, auth: Authorization, sleep: (ms: number) => Promise<void>) {
  for (let waited = 0, attempt = 0; ; attempt++) {
    try {
      await tpm.nvIncrement(ACCEPTED_INDEX, { auth });
      return;
    } catch (error) {
      if (
        !(error instanceof TpmResponseError && error.rcName === 'TPM_RC_NV_RATE') ||
        waited >= NV_RATE_PATIENCE_MS
      )
        throw error;
      const ms = Math.min(2000, 10 * 2 ** attempt);
      await sleep(ms);
      waited += ms;
    }
  }
}

/**
 * Raises the accepted manifest version to `to` by incrementing the counter `to − current` times
 * in one salted HMAC session keyed with `versionAuth`; `to` equal to the current version does
 * nothing. Refused with TpmError `TPM_ROLLBACK` when `to` is lower, `TPM_INVALID_ARGUMENT` when it
 * is not a whole number or more than MAX_RAISE above the current version, `TPM_REFUSED` (with
 * the TPM's response code: TPM_RC_BAD_AUTH for another authValue) when the TPM refuses. Each
 * increment is atomic: an interrupted raise leaves a version between the old one and `to`, and
 * calling again finishes it. Returns the version before and the version the counter then says.
 */
export async function raiseAcceptedVersion(
  tpm: Tpm,
  versionAuth: Uint8Array,
  to: number,
  options: AcceptedVersionOptions = {},
): Promise<{ from: number; to: number }> {
  if (!Number.isSafeInteger(to) || to < 0)
    throw new TpmError('TPM_INVALID_ARGUMENT', `accepted version ${to} is not a whole number ≥ 0`);
  const from = (await readAcceptedState(tpm, options)).version;
  if (to < from)
    throw new TpmError(
      'TPM_ROLLBACK',
      `the accepted manifest version is ${from}: it cannot be lowered to ${to}`,
      { subject: handleHex(ACCEPTED_INDEX) },
    );
  if (to === from) return { from, to };
  if (to - from > MAX_RAISE)
    throw new TpmError(
      'TPM_INVALID_ARGUMENT',
      `raising the accepted manifest version from ${from} to ${to} takes ${to - from} increments: more than ${MAX_RAISE} at once is refused`,
      { subject: handleHex(ACCEPTED_INDEX) },
    );
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const salt = await pinnedSaltKey(tpm, options.storageKeyName);
  let session: AuthSession | undefined;
  let done = 0;
  try {
    // NV_Increment has no parameter to encrypt; the salt keeps the session key, and so the
    // HMACs keyed with it and versionAuth, away from whoever records the bus.
    session = await tpm.startAuthSession({ type: 'hmac', salt });
    if (salt.transient) await tpm.flushContext(salt.handle);
    const auth: Authorization = { session, authValue: versionAuth };
    for (; done < to - from; done++) await incrementOnce(tpm, auth, sleep);
    await tpm.flushSession(session);
  } catch (error) {
    if (session?.open) await tpm.flushContext(session.handle).catch(() => {});
    if (salt.transient) await tpm.flushContext(salt.handle).catch(() => {});
    if (!(error instanceof TpmResponseError)) throw error;
    const hint =
      error.rcName === 'TPM_RC_BAD_AUTH' || error.rcName === 'TPM_RC_AUTH_FAIL'
        ? ' — this is not the version authorization the TPM was provisioned with'
        : '';
    throw new TpmError(
      'TPM_REFUSED',
      `the TPM refused to raise the accepted manifest version from ${from} to ${to} (after ${done} of ${to - from} increments): ${error.message}${hint}`,
      { cause: error, subject: handleHex(ACCEPTED_INDEX) },
    );
  }
  const now = (await readAcceptedState(tpm, options)).version;
  if (now < to)
    throw new TpmError(
      'TPM_MALFORMED',
      `the accepted-version counter says ${now} after ${to - from} increments from ${from}: the TPM (or what answers for it) is not counting`,
      { subject: handleHex(ACCEPTED_INDEX) },
    );
  return { from, to: now };
}
