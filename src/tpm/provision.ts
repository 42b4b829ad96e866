/**
 * The factory step of the EA design: take ownership of a device's TPM and store its secrets
 * under the product's policy-signing key. Every write goes through a salted HMAC session with
 * parameter encryption. Idempotent: a TPM provisioned by this key (and layout) is left alone; an
 * interrupted run is finished; a TPM owned or laid out by someone else is refused, unchanged.
 */
import { createPrivateKey, createPublicKey, type KeyObject, randomBytes, X509Certificate } from 'node:crypto';
import { type Tpm, TpmResponseError } from './client.ts';
import { NV, RH } from './constants.ts';
import { TpmError } from './errors.ts';
import {
  handleHex,
  IDENTITY_HANDLE,
  MAX_SECRET,
  SECRET_ATTRIBUTES,
  SECRET_INDEX,
  type SecretName,
  secretPublic,
  VERSION_ATTRIBUTES,
  VERSION_INDEX,
  versionPublic,
} from './layout.ts';
import type { AuthSession } from './session.ts';
import { type NvPublic, objectName, type PublicArea } from './structures.ts';
import { externalPublic, keyObjectOf, SRK_HANDLE, srkTemplate } from './templates.ts';
import { ownerAuthSet, readVersion } from './unlock.ts';

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
}

export interface ProvisionResult {
  status: 'provisioned' | 'already-provisioned';
  /** The policy version the TPM now holds (1 on a TPM whose counters were never used). */
  version: number;
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
function planSecrets(options: ProvisionOptions, ownerSecret: Buffer, luks: Buffer): [SecretName, Buffer][] {
  const list: [SecretName, Buffer][] = [['deviceCert', options.deviceCert]];
  if (options.deviceKey) list.push(['deviceKey', options.deviceKey]);
  list.push(['luksPassphrase', luks], ['ownerSecret', ownerSecret]);
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

export async function provision(tpm: Tpm, options: ProvisionOptions): Promise<ProvisionResult> {
  if (options.deviceKey && options.deviceKeyInTpm)
    throw new TpmError('TPM_INVALID_ARGUMENT', 'the device key is either given or TPM-resident, not both');
  await checkIdentity(tpm, options);
  const keyPublic = externalPublic(options.policyKey);
  const names: SecretName[] = [
    'deviceCert',
    ...(options.deviceKey ? (['deviceKey'] as const) : []),
    'luksPassphrase',
    'ownerSecret',
  ];
  const owned = await ownerAuthSet(tpm);
  const version: Found = { index: VERSION_INDEX, pub: await readNv(tpm, VERSION_INDEX) };
  const found = new Map<SecretName, NvPublic | undefined>();
  for (const name of ['deviceCert', 'deviceKey', 'luksPassphrase', 'ownerSecret'] as const)
    found.set(name, await readNv(tpm, SECRET_INDEX[name]));
  const indices = Object.fromEntries([
    ['version', hex(VERSION_INDEX)],
    ...names.map((n) => [n, hex(SECRET_INDEX[n])]),
  ]);

  // Someone else's layout at Seal's handles is never touched.
  const foreign: string[] = [];
  if (version.pub && !isOurs(version.pub, versionPublic())) foreign.push(`${hex(VERSION_INDEX)} (version)`);
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
  const complete =
    owned &&
    version.pub !== undefined &&
    (version.pub.attributes & NV.WRITTEN) !== 0 &&
    names.every((n) => {
      const pub = found.get(n);
      return pub !== undefined && isFinal(pub, secretPublic(keyPublic, n, pub.dataSize));
    });
  if (owned && !complete)
    throw new TpmError(
      'TPM_FOREIGN',
      "the TPM's owner authorization is set but Seal's provisioning is not complete on it: owned by someone else (or an interrupted run that set the owner auth); clear the TPM to provision it anew",
      { subject: tpm.address },
    );
  if (complete) {
    if (options.deviceKeyInTpm) await checkIdentity(tpm, options);
    const srk = await tpm.readPublic(SRK_HANDLE);
    return {
      status: 'already-provisioned',
      version: (await readVersion(tpm)) ?? 0,
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
  const luks = options.luksPassphrase ?? Buffer.from(randomBytes(32).toString('hex'), 'ascii');
  const plan = planSecrets(options, ownerSecret, luks);
  const session: AuthSession = (await tpm.startAuthSession({ type: 'hmac', salt: srk })).encrypting({
    decrypt: true,
  });
  const owner = { session, authValue: Buffer.alloc(0) };
  try {
    if (!version.pub)
      await tpm.nvDefineSpace({ ...versionPublic(), attributes: VERSION_ATTRIBUTES }, { auth: owner });
    if (!version.pub || !(version.pub.attributes & NV.WRITTEN))
      await tpm.nvIncrement(VERSION_INDEX, { authHandle: RH.OWNER, auth: owner });
    for (const [name, data] of plan) {
      const index = SECRET_INDEX[name];
      // Leftovers of an interrupted run (ours, owner auth still empty) are defined anew.
      if (found.get(name)) await tpm.nvUndefineSpace(index, { auth: owner });
      await tpm.nvDefineSpace(
        { ...secretPublic(keyPublic, name, data.length, false), attributes: SECRET_ATTRIBUTES },
        { auth: owner },
      );
      await tpm.nvWrite(index, data, { authHandle: RH.OWNER, auth: () => owner });
      await tpm.nvWriteLock(index, { authHandle: RH.OWNER, auth: owner });
    }
    // Ownership last: until here a failed run leaves the TPM re-provisionable.
    await tpm.hierarchyChangeAuth(RH.OWNER, ownerSecret, { auth: owner });
    await tpm.flushSession(session);
  } catch (error) {
    await tpm.flushSession(session).catch(() => {});
    throw error;
  } finally {
    ownerSecret.fill(0);
  }
  return {
    status: 'provisioned',
    version: (await readVersion(tpm)) ?? 0,
    srkName: objectName(srk.public).toString('hex'),
    indices,
    luksPassphrase: luks,
  };
}
