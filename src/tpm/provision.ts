/**
 * The factory step of the EA design: take ownership of a device's TPM and store its secrets
 * under the product's policy-signing key. Every write goes through a salted HMAC session with
 * parameter encryption. Idempotent: a TPM provisioned by this key (and layout) is left alone; an
 * interrupted run is finished; a TPM owned or laid out by someone else is refused, unchanged.
 *
 * Provisioning also sets up the accepted manifest version (layout.ts, accepted.ts): the counter
 * with a fresh random authValue, incremented once, its value recorded as the base and locked,
 * and the authValue stored as the `versionAuth` secret. A TPM provisioned before Seal kept the
 * accepted version (owned, every other index Seal's) is completed by running provisioning again
 * with a management policy: the owner secret it releases — only in the management boot — is what
 * defining NV indices on an owned TPM takes.
 */
import { createPrivateKey, createPublicKey, type KeyObject, randomBytes, X509Certificate } from 'node:crypto';
import { readAcceptedState, readPublicCounter, withReadSession } from './accepted.ts';
import { type Tpm, TpmResponseError } from './client.ts';
import { NV, RH } from './constants.ts';
import { TpmError } from './errors.ts';
import {
  ACCEPTED_BASE_INDEX,
  ACCEPTED_INDEX,
  acceptedBasePublic,
  acceptedPublic,
  handleHex,
  IDENTITY_HANDLE,
  MAX_SECRET,
  SECRET_ATTRIBUTES,
  SECRET_INDEX,
  type SecretName,
  secretPublic,
  VERSION_ATTRIBUTES,
  VERSION_AUTH_SIZE,
  VERSION_INDEX,
  versionOperand,
  versionPublic,
} from './layout.ts';
import type { Authorization, AuthSession } from './session.ts';
import type { SignedPolicy } from './signed-policy.ts';
import { type NvPublic, objectName, type PublicArea } from './structures.ts';
import { externalPublic, keyObjectOf, SRK_HANDLE, srkTemplate } from './templates.ts';
import { ownerAuthSet, readVersion, saltKey, unlock } from './unlock.ts';

export interface ProvisionOptions {
  /** The product's policy-signing key (its public half is enough). */
  policyKey: KeyObject;
  /** The device certificate, DER. */
  deviceCert: Buffer;
  /** The device private key, PKCS#8 DER; absent when the identity key lives in the TPM. */
  deviceKey?: Buffer;
  /** The identity key is the TPM-resident one at IDENTITY_HANDLE (made by `createIdentity`). */
  deviceKeyInTpm?: boolean;
  /** The LUKS passphrase; default 64 random hex characters. */
  luksPassphrase?: Buffer;
  /**
   * A management policy (same signing key) for the TPM's current policy version, to complete a
   * TPM provisioned without the accepted manifest version; it opens the owner secret only when
   * the management image is booted. Not needed (nor used) otherwise.
   */
  managementPolicy?: SignedPolicy;
}

export interface ProvisionResult {
  /** `completed`: the accepted-version indices were added to an earlier provisioning. */
  status: 'provisioned' | 'already-provisioned' | 'completed';
  /** The policy version the TPM now holds (1 on a TPM whose counters were never used). */
  version: number;
  /** The accepted manifest version (0 after provisioning). */
  acceptedVersion: number;
  /** The accepted-version counter's value at provisioning, which it is counted from. */
  acceptedBase: number;
  srkName: string;
  indices: Record<string, string>;
  /** The LUKS passphrase stored (only when this run stored it). */
  luksPassphrase?: Buffer;
}

interface Found {
  index: number;
  pub: NvPublic | undefined;
}

async function readNv(tpm: Tpm, index: number): Promise<NvPublic | undefined> {
  try {
    return (await tpm.nvReadPublic(index)).public;
  } catch (error) {
    if (error instanceof TpmResponseError && error.rcName === 'TPM_RC_HANDLE') return undefined;
    throw error;
  }
}

const hex = handleHex;

/** Whether an index is Seal's for this key: its layout, with or without WRITTEN/WRITELOCKED. */
function isOurs(pub: NvPublic, expected: NvPublic): boolean {
  const strip = (a: number) => (a & ~(NV.WRITTEN | NV.WRITELOCKED)) >>> 0;
  return (
    pub.nameAlg === expected.nameAlg &&
    strip(pub.attributes) === strip(expected.attributes) &&
    pub.authPolicy.equals(expected.authPolicy)
  );
}

function isFinal(pub: NvPublic, expected: NvPublic): boolean {
  return isOurs(pub, expected) && pub.attributes === expected.attributes;
}

/** The secrets this provisioning stores, by name. */
function planSecrets(
  options: ProvisionOptions,
  ownerSecret: Buffer,
  luks: Buffer,
  versionAuth: Buffer,
): [SecretName, Buffer][] {
  const list: [SecretName, Buffer][] = [['deviceCert', options.deviceCert]];
  if (options.deviceKey) list.push(['deviceKey', options.deviceKey]);
  list.push(['luksPassphrase', luks], ['versionAuth', versionAuth], ['ownerSecret', ownerSecret]);
  for (const [name, data] of list)
    if (data.length === 0 || data.length > MAX_SECRET)
      throw new TpmError(
        'TPM_INVALID_ARGUMENT',
        `the ${name} is ${data.length} bytes: an NV index holds 1 to ${MAX_SECRET}`,
      );
  return list;
}

/** Checks the identity key the certificate must name (TPM-resident) or the key file matches it. */
async function checkIdentity(tpm: Tpm, options: ProvisionOptions): Promise<void> {
  let certKey: KeyObject;
  try {
    certKey = new X509Certificate(options.deviceCert).publicKey;
  } catch (error) {
    throw new TpmError(
      'TPM_INVALID_ARGUMENT',
      `the device certificate does not parse: ${(error as Error).message}`,
      { cause: error },
    );
  }
  const spki = (k: KeyObject) => k.export({ type: 'spki', format: 'der' }) as Buffer;
  if (options.deviceKeyInTpm) {
    let pub: PublicArea;
    try {
      pub = (await tpm.readPublic(IDENTITY_HANDLE)).public;
    } catch (error) {
      throw new TpmError(
        'TPM_NOT_PROVISIONED',
        `the TPM has no identity key at ${hex(IDENTITY_HANDLE)}: run seal tpm identity create first`,
        {
          cause: error,
        },
      );
    }
    if (!spki(keyObjectOf(pub)).equals(spki(certKey)))
      throw new TpmError(
        'TPM_INVALID_ARGUMENT',
        'the device certificate does not certify the TPM-resident identity key',
      );
  } else if (options.deviceKey) {
    let key: KeyObject;
    try {
      key = createPublicKey(createPrivateKey({ key: options.deviceKey, format: 'der', type: 'pkcs8' }));
    } catch (error) {
      throw new TpmError(
        'TPM_INVALID_ARGUMENT',
        `the device key is not a PKCS#8 key: ${(error as Error).message}`,
        { cause: error },
      );
    }
    if (!spki(key).equals(spki(certKey)))
      throw new TpmError('TPM_INVALID_ARGUMENT', 'the device certificate does not certify the device key');
  } else {
    throw new TpmError('TPM_INVALID_ARGUMENT', 'give the device key, or say it lives in the TPM');
  }
}

/** A secret index defined anew (a leftover of ours removed first), written, write-locked. */
async function storeSecret(
  tpm: Tpm,
  owner: Authorization,
  keyPublic: PublicArea,
  name: SecretName,
  data: Buffer,
  leftover: boolean,
): Promise<void> {
  const index = SECRET_INDEX[name];
  if (leftover) await tpm.nvUndefineSpace(index, { auth: owner });
  await tpm.nvDefineSpace(
    { ...secretPublic(keyPublic, name, data.length, false), attributes: SECRET_ATTRIBUTES },
    { auth: owner },
  );
  await tpm.nvWrite(index, data, { authHandle: RH.OWNER, auth: () => owner });
  await tpm.nvWriteLock(index, { authHandle: RH.OWNER, auth: owner });
}

/**
 * The accepted-version counter (authValue `versionAuth`), incremented once, and its base: the
 * value it then holds, written and locked. Leftovers of an interrupted run are defined anew (the
 * authValue they were defined with is gone); a redefined counter starts above the deleted one.
 */
async function defineAccepted(
  tpm: Tpm,
  session: AuthSession,
  owner: Authorization,
  versionAuth: Buffer,
  leftovers: { counter: boolean; base: boolean },
): Promise<bigint> {
  if (leftovers.counter) await tpm.nvUndefineSpace(ACCEPTED_INDEX, { auth: owner });
  if (leftovers.base) await tpm.nvUndefineSpace(ACCEPTED_BASE_INDEX, { auth: owner });
  await tpm.nvDefineSpace(acceptedPublic(false), { authValue: versionAuth, auth: owner });
  await tpm.nvIncrement(ACCEPTED_INDEX, { auth: { session, authValue: versionAuth } });
  const base = await withReadSession(tpm, {}, (s) => readPublicCounter(tpm, s, ACCEPTED_INDEX));
  await tpm.nvDefineSpace(acceptedBasePublic(false), { auth: owner });
  await tpm.nvWrite(ACCEPTED_BASE_INDEX, versionOperand(base), { authHandle: RH.OWNER, auth: () => owner });
  await tpm.nvWriteLock(ACCEPTED_BASE_INDEX, { authHandle: RH.OWNER, auth: owner });
  return base;
}

export async function provision(tpm: Tpm, options: ProvisionOptions): Promise<ProvisionResult> {
  if (options.deviceKey && options.deviceKeyInTpm)
    throw new TpmError('TPM_INVALID_ARGUMENT', 'the device key is either given or TPM-resident, not both');
  await checkIdentity(tpm, options);
  const keyPublic = externalPublic(options.policyKey);
  const names: SecretName[] = [
    'deviceCert',
    ...(options.deviceKey ? (['deviceKey'] as const) : []),
    'luksPassphrase',
    'versionAuth',
    'ownerSecret',
  ];
  const owned = await ownerAuthSet(tpm);
  const version: Found = { index: VERSION_INDEX, pub: await readNv(tpm, VERSION_INDEX) };
  const found = new Map<SecretName, NvPublic | undefined>();
  for (const name of ['deviceCert', 'deviceKey', 'luksPassphrase', 'versionAuth', 'ownerSecret'] as const)
    found.set(name, await readNv(tpm, SECRET_INDEX[name]));
  const counter = await readNv(tpm, ACCEPTED_INDEX);
  const base = await readNv(tpm, ACCEPTED_BASE_INDEX);
  const indices = Object.fromEntries([
    ['version', hex(VERSION_INDEX)],
    ...names.map((n) => [n, hex(SECRET_INDEX[n])]),
    ['acceptedVersion', hex(ACCEPTED_INDEX)],
    ['acceptedBase', hex(ACCEPTED_BASE_INDEX)],
  ]);

  // Someone else's layout at Seal's handles is never touched.
  const foreign: string[] = [];
  if (version.pub && !isOurs(version.pub, versionPublic())) foreign.push(`${hex(VERSION_INDEX)} (version)`);
  if (counter && !isOurs(counter, acceptedPublic()))
    foreign.push(`${hex(ACCEPTED_INDEX)} (accepted-version counter)`);
  if (base && !isOurs(base, acceptedBasePublic()))
    foreign.push(`${hex(ACCEPTED_BASE_INDEX)} (accepted-version base)`);
  for (const [name, pub] of found) {
    if (!pub) continue;
    if (!isOurs(pub, secretPublic(keyPublic, name, pub.dataSize)))
      foreign.push(`${hex(SECRET_INDEX[name])} (${name})`);
    else if (!names.includes(name))
      foreign.push(`${hex(SECRET_INDEX[name])} (${name}: this provisioning has no such secret)`);
  }
  if (foreign.length)
    throw new TpmError(
      'TPM_FOREIGN',
      `the TPM holds NV indices Seal did not define for this policy-signing key: ${foreign.join(', ')} — provisioned by someone else (or for another key); clear the TPM to provision it anew`,
      { subject: tpm.address },
    );
  const final = (n: SecretName) => {
    const pub = found.get(n);
    return pub !== undefined && isFinal(pub, secretPublic(keyPublic, n, pub.dataSize));
  };
  // Everything but the accepted version (what provisioning did before Seal kept it), then that.
  const earlier =
    owned &&
    version.pub !== undefined &&
    (version.pub.attributes & NV.WRITTEN) !== 0 &&
    names.filter((n) => n !== 'versionAuth').every(final);
  const acceptedDone =
    counter !== undefined &&
    isFinal(counter, acceptedPublic()) &&
    base !== undefined &&
    isFinal(base, acceptedBasePublic()) &&
    final('versionAuth');
  if (owned && !(earlier && acceptedDone)) {
    if (!earlier)
      throw new TpmError(
        'TPM_FOREIGN',
        "the TPM's owner authorization is set but Seal's provisioning is not complete on it: owned by someone else (or an interrupted run that set the owner auth); clear the TPM to provision it anew",
        { subject: tpm.address },
      );
    if (!options.managementPolicy)
      throw new TpmError(
        'TPM_NOT_PROVISIONED',
        `the TPM was provisioned without the accepted manifest version (${hex(ACCEPTED_INDEX)}, ${hex(ACCEPTED_BASE_INDEX)}, ${hex(SECRET_INDEX.versionAuth)}): run provisioning again with a management policy for its policy version ${(await readVersion(tpm)) ?? '?'}, booted in the management image, to add them`,
        { subject: tpm.address },
      );
    return complete(tpm, options, keyPublic, indices, {
      counter: counter !== undefined,
      base: base !== undefined,
      secret: found.get('versionAuth') !== undefined,
    });
  }
  if (owned) {
    if (options.deviceKeyInTpm) await checkIdentity(tpm, options);
    const srk = await tpm.readPublic(SRK_HANDLE);
    const state = await readAcceptedState(tpm);
    return {
      status: 'already-provisioned',
      version: (await readVersion(tpm)) ?? 0,
      acceptedVersion: state.version,
      acceptedBase: Number(state.base),
      srkName: srk.name.toString('hex'),
      indices,
    };
  }

  // Not owned: define what is missing, finish what an interrupted run left, owner auth last.
  let srk: { handle: number; public: PublicArea };
  try {
    srk = { handle: SRK_HANDLE, public: (await tpm.readPublic(SRK_HANDLE)).public };
    const a = srk.public.attributes;
    if (
      (srk.public.type !== 'ecc' && srk.public.type !== 'rsa') ||
      !(a & 0x30000) ||
      (a & 0x30000) !== 0x30000
    )
      throw new TpmError(
        'TPM_FOREIGN',
        `the object at ${hex(SRK_HANDLE)} is not a storage key: it cannot salt sessions`,
      );
  } catch (error) {
    if (!(error instanceof TpmResponseError && error.rcName === 'TPM_RC_HANDLE')) throw error;
    const created = await tpm.createPrimary(RH.OWNER, srkTemplate('ecc'));
    await tpm.evictControl(created.handle, SRK_HANDLE);
    await tpm.flushContext(created.handle);
    srk = { handle: SRK_HANDLE, public: created.public };
  }
  const ownerSecret = randomBytes(32);
  const versionAuth = randomBytes(VERSION_AUTH_SIZE);
  const luks = options.luksPassphrase ?? Buffer.from(randomBytes(32).toString('hex'), 'ascii');
  const plan = planSecrets(options, ownerSecret, luks, versionAuth);
  const session: AuthSession = (await tpm.startAuthSession({ type: 'hmac', salt: srk })).encrypting({
    decrypt: true,
  });
  const owner = { session, authValue: Buffer.alloc(0) };
  let acceptedBase: bigint;
  try {
    if (!version.pub)
      await tpm.nvDefineSpace({ ...versionPublic(), attributes: VERSION_ATTRIBUTES }, { auth: owner });
    if (!version.pub || !(version.pub.attributes & NV.WRITTEN))
      await tpm.nvIncrement(VERSION_INDEX, { authHandle: RH.OWNER, auth: owner });
    acceptedBase = await defineAccepted(tpm, session, owner, versionAuth, {
      counter: counter !== undefined,
      base: base !== undefined,
    });
    // Leftovers of an interrupted run (ours, owner auth still empty) are defined anew.
    for (const [name, data] of plan)
      await storeSecret(tpm, owner, keyPublic, name, data, found.get(name) !== undefined);
    // Ownership last: until here a failed run leaves the TPM re-provisionable.
    await tpm.hierarchyChangeAuth(RH.OWNER, ownerSecret, { auth: owner });
    await tpm.flushSession(session);
  } catch (error) {
    await tpm.flushSession(session).catch(() => {});
    throw error;
  } finally {
    ownerSecret.fill(0);
    versionAuth.fill(0);
  }
  return {
    status: 'provisioned',
    version: (await readVersion(tpm)) ?? 0,
    acceptedVersion: 0,
    acceptedBase: Number(acceptedBase),
    srkName: objectName(srk.public).toString('hex'),
    indices,
    luksPassphrase: luks,
  };
}

/**
 * Adds the accepted-version indices to a TPM provisioned without them: the management policy
 * releases the owner secret (so this runs in the management boot), which authorizes the
 * definitions; leftovers of an interrupted completion are defined anew.
 */
async function complete(
  tpm: Tpm,
  options: ProvisionOptions,
  keyPublic: PublicArea,
  indices: Record<string, string>,
  leftovers: { counter: boolean; base: boolean; secret: boolean },
): Promise<ProvisionResult> {
  const policy = options.managementPolicy!;
  if (policy.role !== 'management')
    throw new TpmError(
      'TPM_INVALID_ARGUMENT',
      `completing a provisioning needs a management policy, not a ${policy.role} one`,
    );
  if (!objectName(policy.signingKey.public).equals(objectName(keyPublic)))
    throw new TpmError(
      'TPM_INVALID_ARGUMENT',
      'the management policy is not signed by the product policy-signing key given',
    );
  const unlocked = await unlock(tpm, { policy, secrets: ['ownerSecret'] });
  const versionAuth = randomBytes(VERSION_AUTH_SIZE);
  let session: AuthSession | undefined;
  const salt = await saltKey(tpm);
  let acceptedBase: bigint;
  try {
    session = (await tpm.startAuthSession({ type: 'hmac', salt })).encrypting({ decrypt: true });
    if (salt.transient) await tpm.flushContext(salt.handle);
    const owner = { session, authValue: unlocked.secrets.ownerSecret! };
    acceptedBase = await defineAccepted(tpm, session, owner, versionAuth, leftovers);
    await storeSecret(tpm, owner, keyPublic, 'versionAuth', versionAuth, leftovers.secret);
    await tpm.flushSession(session);
  } catch (error) {
    if (session?.open) await tpm.flushContext(session.handle).catch(() => {});
    if (salt.transient) await tpm.flushContext(salt.handle).catch(() => {});
    throw error;
  } finally {
    unlocked.wipe();
    versionAuth.fill(0);
  }
  const srk = await tpm.readPublic(SRK_HANDLE);
  return {
    status: 'completed',
    version: (await readVersion(tpm)) ?? 0,
    acceptedVersion: 0,
    acceptedBase: Number(acceptedBase),
    srkName: srk.name.toString('hex'),
    indices,
  };
}
