/**
 * Acceptance of the EA design against swtpm: factory provisioning (idempotent, foreign TPMs
 * refused), unlock for the right PCR 7 and version, and refusals — with the TPM's reason and
 * nothing written — for another PCR 7, after the PCR 7 lock, after a revocation, for a policy
 * signed by another key, for an altered policy file, and for NV indices redefined by someone else.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync, type KeyObject, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { initPki, newDevice } from '../../src/pki/index.ts';
import {
  CC,
  createIdentity,
  hash,
  keyObjectOf,
  lockDigest,
  NV,
  ownerAuthSet,
  POLICY_REF,
  parsePolicy,
  provision,
  quoteIdentity,
  RecordingTransport,
  RH,
  readVersion,
  revoke,
  SECRET_INDEX,
  type SignedPolicy,
  serializePolicy,
  signChallenge,
  signPolicy,
  Tpm,
  TpmError,
  unlock,
  VERSION_INDEX,
  verifyChallenge,
  verifyTpmSignature,
} from '../../src/tpm/index.ts';
import { startTestTpm, type TestTpm } from '../helpers/tpm.ts';

const PRODUCTION_SIGNER = hash('sha256', Buffer.from('db entry that signed the production UKI'));
const MANAGEMENT_SIGNER = hash('sha256', Buffer.from('db entry that signed the management UKI'));
const zero = Buffer.alloc(32);
const PCR7_PRODUCTION = hash('sha256', zero, PRODUCTION_SIGNER);
const PCR7_MANAGEMENT = hash('sha256', zero, MANAGEMENT_SIGNER);
const PCR7_OTHER = hash('sha256', zero, hash('sha256', Buffer.from("someone else's UKI")));

const productKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
const otherKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
let pkiDir: string;
let deviceCert: Buffer;
let deviceKey: Buffer;

before(async () => {
  pkiDir = mkdtempSync(join(tmpdir(), 'seal-ea-pki-'));
  await initPki(pkiDir);
  const files = await newDevice(pkiDir, {
    product: '3b241101-e2bb-4255-8caf-4136c566a962',
    serial: 'SN0001',
  });
  deviceCert = Buffer.from(new X509Certificate(readFileSync(files.certificate)).raw);
  deviceKey = createPrivateKey(readFileSync(files.key!)).export({ type: 'pkcs8', format: 'der' }) as Buffer;
});
after(() => rmSync(pkiDir, { recursive: true, force: true }));

const sign = (
  version: number,
  pcr7: Buffer,
  role: 'production' | 'management' = 'production',
  key: KeyObject = productKey,
) => signPolicy({ key, role, version, pcrs: [[7, pcr7]] });

/** A fresh swtpm, "booted" with the given UKI signer measured into PCR 7. */
async function boot(t: TestTpm, signer: Buffer): Promise<void> {
  await t.tpm.close();
  await t.swtpm.reboot();
  await t.tpm.pcrExtend(7, [{ hash: 'sha256', digest: signer }]);
}

async function provisioned(): Promise<TestTpm & { luks: Buffer }> {
  const t = await startTestTpm();
  await boot(t, PRODUCTION_SIGNER);
  const result = await provision(t.tpm, { policyKey: productKey, deviceCert, deviceKey });
  return Object.assign(t, { luks: result.luksPassphrase! });
}

const pcr7Now = async (tpm: Tpm) => (await tpm.pcrRead([{ hash: 'sha256', pcrs: [7] }]))[0]!.value;

/** unlock must fail with TPM_REFUSED naming `rc` (and the extra pattern), and change nothing. */
async function refused(tpm: Tpm, policy: SignedPolicy, rc: string | undefined, why: RegExp): Promise<void> {
  const before = await pcr7Now(tpm);
  const version = await readVersion(tpm);
  await assert.rejects(unlock(tpm, { policy, lockPcr7: true }), (e: unknown) => {
    assert.ok(e instanceof TpmError, String(e));
    assert.equal(e.code, 'TPM_REFUSED', e.message);
    if (rc) assert.ok(e.message.includes(`${rc} (`), `${e.message} should name ${rc}`);
    if (process.env.SEAL_TEST_VERBOSE) console.log(e.message);
    assert.match(e.message, why);
    return true;
  });
  assert.deepEqual(await pcr7Now(tpm), before, 'a refused unlock extends nothing');
  assert.equal(await readVersion(tpm), version);
}

test('provisioning: version 1, owner auth set, secrets released to the signed policy, none in clear on the wire', async () => {
  const t = await provisioned();
  try {
    assert.equal(await readVersion(t.tpm), 1);
    assert.ok(await ownerAuthSet(t.tpm));
    assert.match(t.luks.toString(), /^[0-9a-f]{64}$/);
    const wire = new RecordingTransport(t.recorder);
    const tpm = new Tpm(wire);
    const policy = parsePolicy(serializePolicy(sign(1, PCR7_PRODUCTION)));
    const { secrets, version } = await unlock(tpm, { policy });
    assert.equal(version, 1);
    assert.deepEqual(secrets.deviceCert, deviceCert);
    assert.deepEqual(secrets.deviceKey, deviceKey);
    assert.deepEqual(secrets.luksPassphrase, t.luks);
    assert.equal(secrets.ownerSecret, undefined);
    assert.equal(secrets.versionAuth?.length, 32);
    const bytes = wire.exchanges.flatMap((e) => [e.command, e.response]);
    for (const secret of [t.luks, deviceKey, deviceCert, secrets.versionAuth!]) {
      for (let at = 0; at + 16 <= secret.length; at += 16)
        assert.ok(
          !bytes.some((b) => b.includes(secret.subarray(at, at + 16))),
          'a secret crossed the bus in clear',
        );
    }
    // The whole unlock is one salted session: SRK public, session, NV buffer size, 4 NV publics,
    // the ticket (3), 4 commands per 1024-byte chunk, the session flush.
    const codes = wire.commandCodes;
    assert.equal(codes.filter((c) => c === CC.StartAuthSession).length, 1);
    assert.equal(codes.filter((c) => c === CC.NV_Read).length, 4);
    assert.ok(codes.length <= 29, `${codes.length} commands`);
  } finally {
    await t.stop();
  }
});

test('provisioning is idempotent, and refuses a TPM provisioned for another key or owned by someone else', async () => {
  const t = await provisioned();
  try {
    const wire = new RecordingTransport(t.recorder);
    const again = await provision(new Tpm(wire), { policyKey: productKey, deviceCert, deviceKey });
    assert.equal(again.status, 'already-provisioned');
    assert.equal(again.version, 1);
    assert.equal(again.luksPassphrase, undefined);
    const writes = [
      CC.NV_DefineSpace,
      CC.NV_Write,
      CC.NV_WriteLock,
      CC.NV_Increment,
      CC.HierarchyChangeAuth,
      CC.NV_UndefineSpace,
      CC.EvictControl,
    ];
    assert.ok(!wire.commandCodes.some((c) => writes.includes(c as never)), 'a re-run writes nothing');
    await assert.rejects(provision(t.tpm, { policyKey: otherKey, deviceCert, deviceKey }), (e: unknown) => {
      assert.ok(e instanceof TpmError && e.code === 'TPM_FOREIGN', String(e));
      assert.match(e.message, /0x01500021 \(deviceCert\)/);
      return true;
    });
  } finally {
    await t.stop();
  }
  // A TPM whose owner set an authorization, without Seal's layout.
  const other = await startTestTpm();
  try {
    await other.tpm.hierarchyChangeAuth(RH.OWNER, Buffer.from('their owner password'));
    await assert.rejects(
      provision(other.tpm, { policyKey: productKey, deviceCert, deviceKey }),
      (e: unknown) =>
        e instanceof TpmError && e.code === 'TPM_FOREIGN' && /owner authorization is set/.test(e.message),
    );
    assert.equal(await readVersion(other.tpm), undefined, 'nothing was defined');
  } finally {
    await other.stop();
  }
});

test('an interrupted provisioning (owner auth still empty) is finished by the next run', async () => {
  const t = await startTestTpm();
  try {
    // Stop the first run after its first secret index is written.
    let writes = 0;
    const flaky = new Tpm({
      address: 'flaky',
      send: async (command: Buffer) => {
        if (command.readUInt32BE(6) === CC.NV_WriteLock && ++writes === 2)
          throw new TpmError('TPM_TRANSPORT', 'power lost');
        return t.recorder.send(command);
      },
      close: async () => {},
    });
    await assert.rejects(provision(flaky, { policyKey: productKey, deviceCert, deviceKey }), /power lost/);
    assert.equal(await ownerAuthSet(t.tpm), false);
    const result = await provision(t.tpm, { policyKey: productKey, deviceCert, deviceKey });
    assert.equal(result.status, 'provisioned');
    assert.equal(result.version, 1);
    await boot(t, PRODUCTION_SIGNER);
    const { secrets } = await unlock(t.tpm, { policy: sign(1, PCR7_PRODUCTION) });
    assert.deepEqual(secrets.luksPassphrase, result.luksPassphrase);
  } finally {
    await t.stop();
  }
});

test('refused for another PCR 7 (TPM_RC_VALUE from PolicyPCR), and after the PCR 7 lock until the next boot', async () => {
  const t = await provisioned();
  try {
    await refused(
      t.tpm,
      sign(1, PCR7_OTHER),
      'TPM_RC_VALUE',
      /PCR 7 \(sha256\) is [0-9a-f]{64}, the policy is for/,
    );
    const first = await unlock(t.tpm, { policy: sign(1, PCR7_PRODUCTION), lockPcr7: true });
    assert.deepEqual(first.secrets.luksPassphrase, t.luks);
    assert.deepEqual(await pcr7Now(t.tpm), hash('sha256', PCR7_PRODUCTION, lockDigest('sha256')));
    await refused(
      t.tpm,
      sign(1, PCR7_PRODUCTION),
      'TPM_RC_VALUE',
      /PCR 7 was locked after the secrets were released in this boot/,
    );
    await boot(t, PRODUCTION_SIGNER);
    assert.deepEqual(
      (await unlock(t.tpm, { policy: sign(1, PCR7_PRODUCTION) })).secrets.luksPassphrase,
      t.luks,
    );
  } finally {
    await t.stop();
  }
});

test('revocation: the management image bumps the version; version-1 policies then fail (TPM_RC_POLICY), version-2 ones work', async () => {
  const t = await provisioned();
  try {
    const v1 = sign(1, PCR7_PRODUCTION);
    assert.ok((await unlock(t.tpm, { policy: v1 })).secrets.luksPassphrase);
    // A production policy never opens the owner secret; a management policy needs the management boot.
    await assert.rejects(unlock(t.tpm, { policy: v1, secrets: ['ownerSecret'] }), /TPM_RC_POLICY_FAIL/);
    await assert.rejects(revoke(t.tpm, sign(1, PCR7_MANAGEMENT, 'management')), /TPM_RC_VALUE/);
    assert.equal(await readVersion(t.tpm), 1);
    await boot(t, MANAGEMENT_SIGNER);
    const result = await revoke(t.tpm, sign(1, PCR7_MANAGEMENT, 'management'));
    assert.deepEqual(result, { from: 1, to: 2 });
    await boot(t, PRODUCTION_SIGNER);
    await refused(
      t.tpm,
      v1,
      'TPM_RC_POLICY',
      /the TPM's policy version is 2, the policy is for 1 \(revoked\)/,
    );
    const v2 = sign(2, PCR7_PRODUCTION);
    assert.deepEqual((await unlock(t.tpm, { policy: v2 })).secrets.luksPassphrase, t.luks);
    // The old management policy is revoked too.
    await boot(t, MANAGEMENT_SIGNER);
    await assert.rejects(revoke(t.tpm, sign(1, PCR7_MANAGEMENT, 'management')), /TPM_RC_POLICY/);
    assert.deepEqual(await revoke(t.tpm, sign(2, PCR7_MANAGEMENT, 'management')), { from: 2, to: 3 });
  } finally {
    await t.stop();
  }
});

test('refused for a policy signed by another key (TPM_RC_POLICY_FAIL) and for altered policy files', async () => {
  const t = await provisioned();
  try {
    await refused(
      t.tpm,
      sign(1, PCR7_PRODUCTION, 'production', otherKey),
      'TPM_RC_POLICY_FAIL',
      /not provisioned for this policy's signing key/,
    );
    const good = serializePolicy(sign(1, PCR7_PRODUCTION));
    const doc = JSON.parse(good);
    // PCR 7 edited to someone else's boot, signature kept: the approved digest no longer matches.
    const pcrEdited = structuredClone(doc);
    pcrEdited.policy[0].pcrs['7'] = PCR7_OTHER.toString('hex');
    await boot(t, hash('sha256', Buffer.from("someone else's UKI")));
    await refused(
      t.tpm,
      parsePolicy(JSON.stringify(pcrEdited)),
      'TPM_RC_VALUE',
      /approvedPolicy is not the digest of the PolicyPCR and PolicyNV steps/,
    );
    // …and approvedPolicy recomputed to match: the signature no longer verifies.
    const { computeApproved } = await import('../../src/tpm/index.ts');
    const reapproved = structuredClone(pcrEdited);
    reapproved.approvedPolicy = computeApproved(parsePolicy(JSON.stringify(pcrEdited))).toString('hex');
    await refused(
      t.tpm,
      parsePolicy(JSON.stringify(reapproved)),
      'TPM_RC_SIGNATURE',
      /the signature does not verify/,
    );
    await boot(t, PRODUCTION_SIGNER);
    // A flipped signature byte, or a management policyRef claimed for a production signature.
    const flipped = structuredClone(doc);
    flipped.signature = flipped.signature.slice(0, -2) + (flipped.signature.endsWith('00') ? '01' : '00');
    await refused(
      t.tpm,
      parsePolicy(JSON.stringify(flipped)),
      'TPM_RC_SIGNATURE',
      /signature does not verify/,
    );
    const reref = structuredClone(doc);
    reref.policyRef = POLICY_REF.management.toString('hex');
    await refused(t.tpm, parsePolicy(JSON.stringify(reref)), 'TPM_RC_SIGNATURE', /signature/);
    // The good one still works after all that.
    assert.deepEqual((await unlock(t.tpm, { policy: parsePolicy(good) })).secrets.luksPassphrase, t.luks);
  } finally {
    await t.stop();
  }
});

test('refused when NV indices were redefined by someone else (with the owner secret in hand)', async () => {
  const t = await provisioned();
  try {
    await boot(t, MANAGEMENT_SIGNER);
    const { secrets } = await unlock(t.tpm, { policy: sign(1, PCR7_MANAGEMENT, 'management') });
    const ownerAuth = { password: secrets.ownerSecret! };
    await boot(t, PRODUCTION_SIGNER);
    const policy = sign(1, PCR7_PRODUCTION);
    // The LUKS index replaced by one holding a passphrase of their choosing, under the same (public)
    // authPolicy but not write-locked: the TPM would release it; Seal refuses on the attributes.
    const luks = SECRET_INDEX.luksPassphrase;
    const { public: pub } = await t.tpm.nvReadPublic(luks);
    await t.tpm.nvUndefineSpace(luks, { auth: ownerAuth });
    await t.tpm.nvDefineSpace(
      {
        ...pub,
        attributes: (pub.attributes & ~(NV.WRITTEN | NV.WRITELOCKED) & ~NV.WRITEDEFINE) >>> 0,
        dataSize: 64,
      },
      { auth: ownerAuth },
    );
    await t.tpm.nvWrite(luks, Buffer.alloc(64, 0x41), { authHandle: RH.OWNER, auth: () => ownerAuth });
    await assert.rejects(
      unlock(t.tpm, { policy }),
      (e: unknown) =>
        e instanceof TpmError &&
        e.code === 'TPM_REFUSED' &&
        /0x01500040 \(luksPassphrase\) is not defined as Seal provisions it/.test(e.message),
    );
    // Under their own policy-signing key: the TPM refuses our signed policy.
    await t.tpm.nvUndefineSpace(luks, { auth: ownerAuth });
    const theirs = signPolicy({
      key: otherKey,
      role: 'production',
      version: 1,
      pcrs: [[7, PCR7_PRODUCTION]],
    });
    const { secretPublic } = await import('../../src/tpm/index.ts');
    const foreign = secretPublic(theirs.signingKey.public, 'luksPassphrase', 64, false);
    await t.tpm.nvDefineSpace(foreign, { auth: ownerAuth });
    await t.tpm.nvWrite(luks, Buffer.alloc(64, 0x42), { authHandle: RH.OWNER, auth: () => ownerAuth });
    await t.tpm.nvWriteLock(luks, { authHandle: RH.OWNER, auth: ownerAuth });
    await refused(
      t.tpm,
      policy,
      'TPM_RC_POLICY_FAIL',
      /luksPassphrase index is not provisioned for this policy's signing key/,
    );
    // The version index redefined as a plain index anyone may write, holding "1".
    const version = await t.tpm.nvReadPublic(VERSION_INDEX);
    await t.tpm.nvUndefineSpace(VERSION_INDEX, { auth: ownerAuth });
    await t.tpm.nvDefineSpace(
      { ...version.public, attributes: NV.AUTHWRITE | NV.AUTHREAD | NV.NO_DA },
      { auth: ownerAuth },
    );
    await t.tpm.nvWrite(VERSION_INDEX, Buffer.from('0000000000000001', 'hex'));
    await refused(
      t.tpm,
      sign(1, PCR7_PRODUCTION),
      'TPM_RC_VALUE',
      /NV index 0x01500020 is not the one the policy names \(redefined\?\)/,
    );
  } finally {
    await t.stop();
  }
});

test('TPM-resident identity: created before provisioning, certified, provisioned without a key index; signs challenges and quotes', async () => {
  const t = await startTestTpm();
  try {
    await boot(t, PRODUCTION_SIGNER);
    const identity = await createIdentity(t.tpm);
    assert.equal(identity.created, true);
    assert.equal((await createIdentity(t.tpm)).created, false, 'idempotent');
    const files = await newDevice(pkiDir, {
      product: '3b241101-e2bb-4255-8caf-4136c566a962',
      serial: 'SN-TPM-1',
      publicKey: identity.pem,
    });
    assert.equal(files.key, undefined);
    const cert = Buffer.from(new X509Certificate(readFileSync(files.certificate)).raw);
    await assert.rejects(
      provision(t.tpm, { policyKey: productKey, deviceCert, deviceKeyInTpm: true }),
      /does not certify the TPM-resident identity key/,
    );
    const result = await provision(t.tpm, { policyKey: productKey, deviceCert: cert, deviceKeyInTpm: true });
    assert.equal(result.status, 'provisioned');
    const { secrets } = await unlock(t.tpm, { policy: sign(1, PCR7_PRODUCTION) });
    assert.deepEqual(secrets.deviceCert, cert);
    assert.equal(secrets.deviceKey, undefined);
    const challenge = Buffer.from('server nonce 8f1c');
    const { der } = await signChallenge(t.tpm, challenge);
    assert.ok(verifyChallenge(new X509Certificate(cert).publicKey, challenge, der));
    assert.ok(!verifyChallenge(new X509Certificate(cert).publicKey, Buffer.from('other'), der));
    const quote = await quoteIdentity(t.tpm, Buffer.from('nonce'), [{ hash: 'sha256', pcrs: [7] }]);
    assert.ok(verifyTpmSignature(keyObjectOf(identity.public), quote.attestBytes, quote.signature));
    assert.deepEqual(quote.attest.quote!.pcrDigest, hash('sha256', PCR7_PRODUCTION));
    // Once the TPM is owned, a new identity key cannot be made without the owner secret.
    await t.tpm
      .evictControl(0x81000002, 0x81000002, { auth: { password: Buffer.from('wrong') } })
      .catch(() => {});
    assert.equal((await createIdentity(t.tpm)).created, false);
  } finally {
    await t.stop();
  }
});

test('an RSA policy-signing key works the same; without a persistent storage key the session is salted by a transient one', async () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 3072 }).privateKey;
  const t = await startTestTpm();
  try {
    await boot(t, PRODUCTION_SIGNER);
    const { luksPassphrase } = await provision(t.tpm, { policyKey: rsa, deviceCert, deviceKey });
    const rsaPolicy = (version: number, pcr7: Buffer, role: 'production' | 'management' = 'production') =>
      signPolicy({ key: rsa, role, version, pcrs: [[7, pcr7]] });
    assert.deepEqual(
      (await unlock(t.tpm, { policy: rsaPolicy(1, PCR7_PRODUCTION) })).secrets.luksPassphrase,
      luksPassphrase,
    );
    await boot(t, MANAGEMENT_SIGNER);
    const owner = (await unlock(t.tpm, { policy: rsaPolicy(1, PCR7_MANAGEMENT, 'management') })).secrets
      .ownerSecret!;
    await t.tpm.evictControl(0x81000001, 0x81000001, { auth: { password: owner } });
    await boot(t, PRODUCTION_SIGNER);
    const wire = new RecordingTransport(t.recorder);
    const { secrets } = await unlock(new Tpm(wire), { policy: rsaPolicy(1, PCR7_PRODUCTION) });
    assert.deepEqual(secrets.luksPassphrase, luksPassphrase);
    assert.ok(wire.commandCodes.includes(CC.CreatePrimary));
    assert.equal(
      wire.commandCodes.filter((c) => c === CC.FlushContext).length,
      3,
      'the primary, the key, the session',
    );
  } finally {
    await t.stop();
  }
});

test('a secret larger than TPM_PT_NV_BUFFER_MAX is read in chunks, each under a fresh policy; a pinned storage key Name is enforced', async () => {
  const t = await startTestTpm();
  try {
    await boot(t, PRODUCTION_SIGNER);
    const big = Buffer.alloc(1900);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7 + 3) & 0xff;
    const result = await provision(t.tpm, {
      policyKey: productKey,
      deviceCert,
      deviceKey,
      luksPassphrase: big,
    });
    const wire = new RecordingTransport(t.recorder);
    const { secrets } = await unlock(new Tpm(wire), {
      policy: sign(1, PCR7_PRODUCTION),
      secrets: ['luksPassphrase'],
      storageKeyName: Buffer.from(result.srkName, 'hex'),
    });
    assert.deepEqual(secrets.luksPassphrase, big);
    const codes = wire.commandCodes;
    const reads = codes.filter((c) => c === CC.NV_Read).length;
    assert.equal(reads, 2, '1024 + 876 bytes');
    // Each NV_Read comes right after its own PolicyPCR, PolicyNV, PolicyAuthorize.
    codes.forEach((c, i) => {
      if (c === CC.NV_Read)
        assert.deepEqual(codes.slice(i - 3, i), [CC.PolicyPCR, CC.PolicyNV, CC.PolicyAuthorize]);
    });
    await assert.rejects(
      unlock(t.tpm, { policy: sign(1, PCR7_PRODUCTION), storageKeyName: Buffer.alloc(34, 1) }),
      (e: unknown) =>
        e instanceof TpmError &&
        e.code === 'TPM_REFUSED' &&
        /storage key at 0x81000001 is not the one provisioned/.test(e.message),
    );
  } finally {
    await t.stop();
  }
});
