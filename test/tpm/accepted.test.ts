/**
 * The accepted manifest version (anti-rollback) against swtpm: 0 after provisioning whatever the
 * TPM's counter history, raised by the holder of the version authorization unlock released —
 * also after the PCR 7 lock, and across reboots — never lowered, refused with the TPM's reason
 * for another authValue, read by anyone (and by tpm2-tools, with the same policy), never showing
 * the version authorization on the bus; provisioning idempotent with the new indices, finished
 * after an interruption, and completing a TPM provisioned before the indices existed. Mutated TPM
 * answers give typed errors or the true value, never another one.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { initPki, newDevice } from '../../src/pki/index.ts';
import {
  ACCEPTED_BASE_INDEX,
  ACCEPTED_INDEX,
  CAP,
  CC,
  hash,
  MAX_RAISE,
  NT,
  NV,
  provision,
  publicReadPolicy,
  RecordingTransport,
  RH,
  raiseAcceptedVersion,
  readAcceptedState,
  readAcceptedVersion,
  readVersion,
  SECRET_INDEX,
  signPolicy,
  Tpm,
  TpmError,
  type TpmTransport,
  unlock,
} from '../../src/tpm/index.ts';
import { startTestTpm, type TestTpm } from '../helpers/tpm.ts';
import { prng } from '../helpers/trees.ts';

const PRODUCTION_SIGNER = hash('sha256', Buffer.from('db entry that signed the production UKI'));
const MANAGEMENT_SIGNER = hash('sha256', Buffer.from('db entry that signed the management UKI'));
const PCR7_PRODUCTION = hash('sha256', Buffer.alloc(32), PRODUCTION_SIGNER);
const PCR7_MANAGEMENT = hash('sha256', Buffer.alloc(32), MANAGEMENT_SIGNER);

const productKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
let pkiDir: string;
let deviceCert: Buffer;
let deviceKey: Buffer;

before(async () => {
  pkiDir = mkdtempSync(join(tmpdir(), 'seal-accepted-pki-'));
  await initPki(pkiDir);
  const files = await newDevice(pkiDir, {
    product: '3b241101-e2bb-4255-8caf-4136c566a962',
    serial: 'SN0001',
  });
  deviceCert = Buffer.from(new X509Certificate(readFileSync(files.certificate)).raw);
  deviceKey = createPrivateKey(readFileSync(files.key!)).export({ type: 'pkcs8', format: 'der' }) as Buffer;
});
after(() => rmSync(pkiDir, { recursive: true, force: true }));

const production = (version = 1) =>
  signPolicy({ key: productKey, role: 'production', version, pcrs: [[7, PCR7_PRODUCTION]] });
const management = (version = 1) =>
  signPolicy({ key: productKey, role: 'management', version, pcrs: [[7, PCR7_MANAGEMENT]] });

async function boot(t: TestTpm, signer: Buffer): Promise<void> {
  await t.tpm.close();
  await t.swtpm.reboot();
  await t.tpm.pcrExtend(7, [{ hash: 'sha256', digest: signer }]);
}

async function provisioned(): Promise<TestTpm> {
  const t = await startTestTpm();
  await boot(t, PRODUCTION_SIGNER);
  await provision(t.tpm, { policyKey: productKey, deviceCert, deviceKey });
  return t;
}

/** The version authorization a production boot releases. */
async function versionAuthOf(tpm: Tpm, lockPcr7 = false, version = 1): Promise<Buffer> {
  const { secrets } = await unlock(tpm, { policy: production(version), lockPcr7 });
  assert.ok(secrets.versionAuth, 'unlock released the version authorization');
  return secrets.versionAuth;
}

function rejectsWith(code: string, pattern: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof TpmError, String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, pattern);
    return true;
  };
}

/** A 16-byte window of `secret` anywhere in the recorded bytes. */
function inClear(exchanges: { command: Buffer; response: Buffer }[], secret: Buffer): boolean {
  const bytes = exchanges.flatMap((e) => [e.command, e.response]);
  for (let at = 0; at + 16 <= secret.length; at += 8)
    if (bytes.some((b) => b.includes(secret.subarray(at, at + 16)))) return true;
  return false;
}

test('0 after provisioning; raised by the versionAuth holder, also after the PCR 7 lock; kept across reboots; never lowered', async () => {
  const t = await provisioned();
  try {
    assert.equal(await readAcceptedVersion(t.tpm), 0);
    const state = await readAcceptedState(t.tpm);
    assert.equal(state.counter, state.base);
    // The agent: unlock (PCR 7 locked at once), read, then raise later in the boot.
    const auth = await versionAuthOf(t.tpm, true);
    assert.equal(auth.length, 32);
    await assert.rejects(unlock(t.tpm, { policy: production() }), /PCR 7 was locked/);
    assert.deepEqual(await raiseAcceptedVersion(t.tpm, auth, 3), { from: 0, to: 3 });
    assert.equal(await readAcceptedVersion(t.tpm), 3);
    assert.equal((await readAcceptedState(t.tpm)).counter, state.base + 3n);

    // Equal: a no-op that writes nothing.
    const wire = new RecordingTransport(t.recorder);
    assert.deepEqual(await raiseAcceptedVersion(new Tpm(wire), auth, 3), { from: 3, to: 3 });
    assert.ok(!wire.commandCodes.includes(CC.NV_Increment));

    // Lower: a typed refusal, nothing changed.
    await assert.rejects(
      raiseAcceptedVersion(t.tpm, auth, 2),
      rejectsWith('TPM_ROLLBACK', /accepted manifest version is 3: it cannot be lowered to 2/),
    );
    // Absurd jumps and non-versions are refused before the TPM is touched.
    await assert.rejects(
      raiseAcceptedVersion(t.tpm, auth, 3 + MAX_RAISE + 1),
      rejectsWith('TPM_INVALID_ARGUMENT', /more than 100000 at once is refused/),
    );
    for (const bad of [-1, 2.5, Number.NaN, 2 ** 53])
      await assert.rejects(
        raiseAcceptedVersion(t.tpm, auth, bad),
        rejectsWith('TPM_INVALID_ARGUMENT', /is not a whole number/),
      );
    assert.equal(await readAcceptedVersion(t.tpm), 3);

    // A reboot keeps it; the next boot's unlock hands out the same authorization.
    await boot(t, PRODUCTION_SIGNER);
    assert.equal(await readAcceptedVersion(t.tpm), 3);
    const again = await versionAuthOf(t.tpm);
    assert.deepEqual(again, auth);
    assert.deepEqual(await raiseAcceptedVersion(t.tpm, again, 12), { from: 3, to: 12 });
    assert.equal(await readAcceptedVersion(t.tpm), 12);
  } finally {
    await t.stop();
  }
});

test('another authValue is refused by the TPM (TPM_RC_BAD_AUTH), and so is a password-style write', async () => {
  const t = await provisioned();
  try {
    const auth = await versionAuthOf(t.tpm);
    const wrong = Buffer.from(auth);
    wrong[0]! ^= 1;
    await assert.rejects(raiseAcceptedVersion(t.tpm, wrong, 1), (e: unknown) => {
      assert.ok(e instanceof TpmError && e.code === 'TPM_REFUSED', String(e));
      assert.match(e.message, /TPM2_NV_Increment failed: TPM_RC_BAD_AUTH \(/);
      assert.match(e.message, /after 0 of 1 increments/);
      assert.match(e.message, /not the version authorization the TPM was provisioned with/);
      assert.equal(e.rc !== undefined && (e.rc & 0xbf) === 0xa2, true, `rc ${e.rc}`);
      return true;
    });
    // An empty password or the owner may not increment it; reading needs the policy, not a password.
    await assert.rejects(t.tpm.nvIncrement(ACCEPTED_INDEX), /TPM_RC_BAD_AUTH/);
    await assert.rejects(
      t.tpm.nvIncrement(ACCEPTED_INDEX, { authHandle: RH.OWNER }),
      /TPM_RC_(BAD_AUTH|NV_AUTHORIZATION)/,
    );
    await assert.rejects(t.tpm.nvReadCounter(ACCEPTED_INDEX), /TPM_RC_AUTH_UNAVAILABLE/);
    assert.equal(await readAcceptedVersion(t.tpm), 0);
    await raiseAcceptedVersion(t.tpm, auth, 1);
    assert.equal(await readAcceptedVersion(t.tpm), 1);
  } finally {
    await t.stop();
  }
});

test('the version authorization never crosses the bus in clear (provisioning, unlock, raise)', async () => {
  const t = await startTestTpm();
  try {
    await boot(t, PRODUCTION_SIGNER);
    const wire = new RecordingTransport(t.recorder);
    const tpm = new Tpm(wire);
    await provision(tpm, { policyKey: productKey, deviceCert, deviceKey });
    const { secrets } = await unlock(tpm, { policy: production(), lockPcr7: true });
    const auth = secrets.versionAuth!;
    await raiseAcceptedVersion(tpm, auth, 5);
    assert.equal(await readAcceptedVersion(tpm), 5);
    const codes = wire.commandCodes;
    assert.equal(codes.filter((c) => c === CC.NV_Increment).length, 1 + 1 + 5, 'version, first, 5 raises');
    assert.ok(!inClear(wire.exchanges, auth), 'versionAuth crossed the bus in clear');
    // The check can fail: the same window is found once the secret is sent as a password.
    const leaky = new RecordingTransport(t.recorder);
    await new Tpm(leaky).nvIncrement(ACCEPTED_INDEX, { auth: { password: auth } });
    assert.ok(inClear(leaky.exchanges, auth));
    assert.equal(await readAcceptedVersion(t.tpm), 6);
  } finally {
    await t.stop();
  }
});

test('counted from its base: a TPM whose counters were used before still starts at 0', async () => {
  const t = await startTestTpm();
  try {
    // Someone's counter, incremented to 40 and deleted: every new counter starts above it.
    const old = 0x01500170;
    await t.tpm.nvDefineSpace({
      index: old,
      nameAlg: 'sha256',
      attributes: NT.COUNTER | NV.AUTHWRITE | NV.AUTHREAD | NV.NO_DA,
      authPolicy: Buffer.alloc(0),
      dataSize: 8,
    });
    for (let i = 0; i < 40; i++) await t.tpm.nvIncrement(old);
    await t.tpm.nvUndefineSpace(old);
    await boot(t, PRODUCTION_SIGNER);
    const result = await provision(t.tpm, { policyKey: productKey, deviceCert, deviceKey });
    assert.equal(result.version, 41, 'the policy version counter starts above 40 too');
    assert.equal(result.acceptedVersion, 0);
    assert.ok(result.acceptedBase > 40, `base ${result.acceptedBase}`);
    const state = await readAcceptedState(t.tpm);
    assert.deepEqual(state, {
      version: 0,
      counter: BigInt(result.acceptedBase),
      base: BigInt(result.acceptedBase),
    });
    await raiseAcceptedVersion(t.tpm, await versionAuthOf(t.tpm, false, 41), 2);
    assert.equal(await readAcceptedVersion(t.tpm), 2);
  } finally {
    await t.stop();
  }
});

test('provisioning is idempotent with the new indices, and finishes a run interrupted after the counter', async () => {
  const t = await provisioned();
  try {
    await raiseAcceptedVersion(t.tpm, await versionAuthOf(t.tpm), 4);
    const wire = new RecordingTransport(t.recorder);
    const again = await provision(new Tpm(wire), { policyKey: productKey, deviceCert, deviceKey });
    assert.equal(again.status, 'already-provisioned');
    assert.equal(again.acceptedVersion, 4);
    assert.equal(again.indices.acceptedVersion, '0x01500050');
    assert.equal(again.indices.acceptedBase, '0x01500051');
    assert.equal(again.indices.versionAuth, '0x01500041');
    const writes = [
      CC.NV_DefineSpace,
      CC.NV_Write,
      CC.NV_WriteLock,
      CC.NV_Increment,
      CC.HierarchyChangeAuth,
      CC.NV_UndefineSpace,
    ];
    assert.ok(!wire.commandCodes.some((c) => writes.includes(c as never)), 'a re-run writes nothing');
  } finally {
    await t.stop();
  }

  // Power lost right after the counter's first increment: its authValue is lost with the run.
  const u = await startTestTpm();
  try {
    await boot(u, PRODUCTION_SIGNER);
    const flaky = new Tpm({
      address: 'flaky',
      send: async (command: Buffer) => {
        if (command.readUInt32BE(6) === CC.NV_DefineSpace && command.includes(Buffer.from('01500051', 'hex')))
          throw new TpmError('TPM_TRANSPORT', 'power lost');
        return u.recorder.send(command);
      },
      close: async () => {},
    } satisfies TpmTransport);
    await assert.rejects(provision(flaky, { policyKey: productKey, deviceCert, deviceKey }), /power lost/);
    const left = (await u.tpm.nvReadPublic(ACCEPTED_INDEX)).public;
    assert.ok(left.attributes & NV.WRITTEN);
    await assert.rejects(
      readAcceptedVersion(u.tpm),
      rejectsWith('TPM_NOT_PROVISIONED', /accepted-version base/),
    );
    const result = await provision(u.tpm, { policyKey: productKey, deviceCert, deviceKey });
    assert.equal(result.status, 'provisioned');
    assert.equal(result.version, 1);
    assert.equal(await readAcceptedVersion(u.tpm), 0);
    assert.ok(result.acceptedBase >= 2, 'the redefined counter starts above the deleted one');
    await raiseAcceptedVersion(u.tpm, await versionAuthOf(u.tpm), 1);
    assert.equal(await readAcceptedVersion(u.tpm), 1);
  } finally {
    await u.stop();
  }
});

test('a TPM provisioned before the accepted version existed: typed errors, then completed from the management image', async () => {
  const t = await provisioned();
  try {
    // Make it what an earlier Seal left: no counter, base or versionAuth index.
    await boot(t, MANAGEMENT_SIGNER);
    const owner = (await unlock(t.tpm, { policy: management() })).secrets.ownerSecret!;
    const { counter: oldCounter } = await readAcceptedState(t.tpm);
    for (const index of [ACCEPTED_INDEX, ACCEPTED_BASE_INDEX, SECRET_INDEX.versionAuth])
      await t.tpm.nvUndefineSpace(index, { auth: { password: owner } });
    await boot(t, PRODUCTION_SIGNER);

    await assert.rejects(
      readAcceptedVersion(t.tpm),
      rejectsWith('TPM_NOT_PROVISIONED', /no accepted-version counter \(NV index 0x01500050\)/),
    );
    // The device still unlocks (without a version authorization); the agent's read above fails closed.
    const { secrets } = await unlock(t.tpm, { policy: production() });
    assert.ok(secrets.luksPassphrase);
    assert.equal(secrets.versionAuth, undefined);
    await assert.rejects(
      unlock(t.tpm, { policy: production(), secrets: ['versionAuth'] }),
      rejectsWith('TPM_NOT_PROVISIONED', /no versionAuth \(NV index 0x01500041\)/),
    );
    await assert.rejects(
      provision(t.tpm, { policyKey: productKey, deviceCert, deviceKey }),
      rejectsWith(
        'TPM_NOT_PROVISIONED',
        /provisioned without the accepted manifest version .*management policy for its policy version 1/,
      ),
    );
    // A management policy works only in the management boot (the TPM checks PCR 7).
    await assert.rejects(
      provision(t.tpm, { policyKey: productKey, deviceCert, deviceKey, managementPolicy: management() }),
      rejectsWith('TPM_REFUSED', /TPM_RC_VALUE/),
    );
    await assert.rejects(
      provision(t.tpm, { policyKey: productKey, deviceCert, deviceKey, managementPolicy: production() }),
      rejectsWith('TPM_INVALID_ARGUMENT', /needs a management policy/),
    );
    await boot(t, MANAGEMENT_SIGNER);
    const done = await provision(t.tpm, {
      policyKey: productKey,
      deviceCert,
      deviceKey,
      managementPolicy: management(),
    });
    assert.equal(done.status, 'completed');
    assert.equal(done.acceptedVersion, 0);
    assert.ok(BigInt(done.acceptedBase) > oldCounter, 'the new counter starts above the old one');
    assert.equal(await readVersion(t.tpm), 1);

    await boot(t, PRODUCTION_SIGNER);
    assert.equal(await readAcceptedVersion(t.tpm), 0);
    await raiseAcceptedVersion(t.tpm, await versionAuthOf(t.tpm, true), 7);
    assert.equal(await readAcceptedVersion(t.tpm), 7);
    const again = await provision(t.tpm, { policyKey: productKey, deviceCert, deviceKey });
    assert.equal(again.status, 'already-provisioned');
    assert.equal(again.acceptedVersion, 7);
  } finally {
    await t.stop();
  }
});

test('indices redefined by the owner are not trusted; the storage key can be pinned', async () => {
  const t = await provisioned();
  try {
    const srkName = (await t.tpm.readPublic(0x81000001)).name;
    assert.equal(await readAcceptedVersion(t.tpm, { storageKeyName: srkName }), 0);
    await assert.rejects(
      readAcceptedVersion(t.tpm, { storageKeyName: Buffer.alloc(34, 1) }),
      rejectsWith('TPM_REFUSED', /storage key at 0x81000001 is not the one provisioned/),
    );
    await boot(t, MANAGEMENT_SIGNER);
    const owner = { password: (await unlock(t.tpm, { policy: management() })).secrets.ownerSecret! };
    // A base above the counter (accepted would be negative).
    const { counter } = await readAcceptedState(t.tpm);
    await t.tpm.nvUndefineSpace(ACCEPTED_BASE_INDEX, { auth: owner });
    const base = {
      index: ACCEPTED_BASE_INDEX,
      nameAlg: 'sha256' as const,
      authPolicy: publicReadPolicy(),
      dataSize: 8,
    };
    await t.tpm.nvDefineSpace(
      { ...base, attributes: NV.OWNERWRITE | NV.POLICYREAD | NV.WRITEDEFINE | NV.NO_DA },
      { auth: owner },
    );
    const high = Buffer.alloc(8);
    high.writeBigUInt64BE(counter + 5n);
    await t.tpm.nvWrite(ACCEPTED_BASE_INDEX, high, { authHandle: RH.OWNER, auth: () => owner });
    await assert.rejects(
      readAcceptedVersion(t.tpm),
      rejectsWith('TPM_NOT_PROVISIONED', /accepted-version base .* was never written/),
    );
    await t.tpm.nvWriteLock(ACCEPTED_BASE_INDEX, { authHandle: RH.OWNER, auth: owner });
    await assert.rejects(readAcceptedVersion(t.tpm), rejectsWith('TPM_FOREIGN', /are inconsistent/));
    // A base anyone may rewrite.
    await t.tpm.nvUndefineSpace(ACCEPTED_BASE_INDEX, { auth: owner });
    await t.tpm.nvDefineSpace(
      { ...base, attributes: NV.AUTHWRITE | NV.POLICYREAD | NV.NO_DA },
      { auth: owner },
    );
    await t.tpm.nvWrite(ACCEPTED_BASE_INDEX, high);
    await assert.rejects(
      readAcceptedVersion(t.tpm),
      rejectsWith('TPM_FOREIGN', /0x01500051 .* not defined as Seal provisions it/),
    );
    // Provisioning refuses such a TPM as someone else's.
    await assert.rejects(
      provision(t.tpm, { policyKey: productKey, deviceCert, deviceKey }),
      rejectsWith('TPM_FOREIGN', /0x01500051 \(accepted-version base\)/),
    );
  } finally {
    await t.stop();
  }
});

test('tpm2-tools reads the counter with the same public policy and increments it with the versionAuth', async () => {
  const t = await provisioned();
  try {
    const auth = await versionAuthOf(t.tpm);
    await raiseAcceptedVersion(t.tpm, auth, 2);
    const { counter, base } = await readAcceptedState(t.tpm);
    const pub = (await t.tools('tpm2_nvreadpublic', ['0x1500050'])).toString();
    assert.match(pub, /authwrite/);
    assert.match(pub, /policyread/);
    assert.match(pub, /no_da/);
    assert.match(pub, /nt=(0x1|counter)/);
    assert.doesNotMatch(pub, /authread|ownerwrite|policywrite|orderly|read_stclear/);
    assert.ok(pub.toLowerCase().includes(publicReadPolicy().toString('hex')), pub);
    // Their trial session computes the same read policy.
    await t.tools('tpm2_startauthsession', ['-S', 'trial.ctx']);
    await t.tools('tpm2_policycommandcode', ['-S', 'trial.ctx', '-L', 'read.policy', 'TPM2_CC_NV_Read']);
    await t.tools('tpm2_flushcontext', ['trial.ctx']);
    assert.deepEqual(readFileSync(join(t.dir, 'read.policy')), publicReadPolicy());
    // …and read both indices through it, as anyone can.
    const read = async (index: string) => {
      await t.tools('tpm2_startauthsession', ['--policy-session', '-S', 'read.ctx']);
      await t.tools('tpm2_policycommandcode', ['-S', 'read.ctx', 'TPM2_CC_NV_Read']);
      const out = await t.tools('tpm2_nvread', ['-P', 'session:read.ctx', '-s', '8', index]);
      await t.tools('tpm2_flushcontext', ['read.ctx']);
      return out.readBigUInt64BE(0);
    };
    assert.equal(await read('0x1500050'), counter);
    assert.equal(await read('0x1500051'), base);
    // Their increment with the versionAuth counts; with another authValue it is refused.
    await t.tools('tpm2_nvincrement', ['-P', `hex:${auth.toString('hex')}`, '0x1500050']);
    await assert.rejects(
      t.tools('tpm2_nvincrement', ['-P', `hex:${'00'.repeat(31)}01`, '0x1500050']),
      /0x0*9a2/,
    );
    // Nobody can write-lock it (TPM_RC_ATTRIBUTES), read-lock it or change its authValue with the
    // read policy (TPM_RC_POLICY_CC), or with a policy of its own (TPM_RC_POLICY_FAIL).
    await assert.rejects(
      t.tools('tpm2_nvwritelock', ['-P', `hex:${auth.toString('hex')}`, '0x1500050']),
      /ErrorCode \(0x0*282\)/,
    );
    const withPolicy = async (code: string, command: string, args: string[], rc: string) => {
      await t.tools('tpm2_startauthsession', ['--policy-session', '-S', 'admin.ctx']);
      await t.tools('tpm2_policycommandcode', ['-S', 'admin.ctx', code]);
      await assert.rejects(t.tools(command, args), new RegExp(`ErrorCode \\(0x0*${rc}\\)`));
      await t.tools('tpm2_flushcontext', ['admin.ctx']);
    };
    const changeAuth = ['-c', '0x1500050', '-p', 'session:admin.ctx', 'hex:00'];
    await withPolicy('TPM2_CC_NV_Read', 'tpm2_nvreadlock', ['-P', 'session:admin.ctx', '0x1500050'], '9a4');
    await withPolicy('TPM2_CC_NV_Read', 'tpm2_changeauth', changeAuth, '9a4');
    await withPolicy('TPM2_CC_NV_ChangeAuth', 'tpm2_changeauth', changeAuth, '99d');
    assert.equal(await readAcceptedVersion(t.tpm), 3);
  } finally {
    await t.stop();
  }
});

test('the TPM rate-limiting NV writes (TPM_RC_NV_RATE) is waited out', async () => {
  const t = await provisioned();
  try {
    const auth = await versionAuthOf(t.tpm);
    let limited = 0;
    const slow = new Tpm({
      address: 'rate-limited',
      send: async (command: Buffer) => {
        if (command.readUInt32BE(6) === CC.NV_Increment && limited < 3) {
          limited++;
          const r = Buffer.alloc(10);
          r.writeUInt16BE(0x8001, 0);
          r.writeUInt32BE(10, 2);
          r.writeUInt32BE(0x920, 6);
          return r;
        }
        return t.recorder.send(command);
      },
      close: async () => {},
    } satisfies TpmTransport);
    const waits: number[] = [];
    const result = await raiseAcceptedVersion(slow, auth, 2, {
      sleep: async (ms) => {
        waits.push(ms);
      },
    });
    assert.deepEqual(result, { from: 0, to: 2 });
    assert.equal(waits.length, 3);
    assert.equal(await readAcceptedVersion(t.tpm), 2);
  } finally {
    await t.stop();
  }
});

/** One response of a live exchange replaced by a mutant. */
function mutate(response: Buffer, random: () => number): Buffer {
  const data = Buffer.from(response);
  const kind = random();
  if (kind < 0.5 && data.length > 10) {
    for (let k = 0, n = 1 + Math.floor(random() * 3); k < n; k++)
      data[10 + Math.floor(random() * (data.length - 10))] = Math.floor(random() * 256);
    return data;
  }
  if (kind < 0.7) {
    const cut = data.subarray(0, Math.floor(random() * data.length));
    if (cut.length >= 6) cut.writeUInt32BE(cut.length, 2);
    return cut;
  }
  if (kind < 0.85 && data.length >= 14) {
    const pos = 10 + Math.floor(random() * (data.length - 12));
    data.writeUInt16BE([0, 1, 0xffff, data.length][Math.floor(random() * 4)]!, pos);
    return data;
  }
  const out = Buffer.from(data.subarray(0, 10));
  out.writeUInt32BE([0x18b, 0x98e, 0x14a, 0x922, 0x101][Math.floor(random() * 5)]!, 6);
  out.writeUInt32BE(10, 2);
  return out;
}

test('mutated TPM answers to a read give typed errors or the true value, never another one', async () => {
  const t = await provisioned();
  try {
    await raiseAcceptedVersion(t.tpm, await versionAuthOf(t.tpm), 9);
    const random = prng(50);
    const outcomes = new Map<string, number>();
    for (let i = 0; i < 800; i++) {
      let n = 0;
      let target = -1;
      const live = new Tpm(
        {
          address: 'mutating',
          send: async (command: Buffer) => {
            const response = await t.recorder.send(command);
            return n++ === target ? mutate(response, random) : response;
          },
          close: async () => {},
        } satisfies TpmTransport,
        { retries: 2 },
      );
      target = Math.floor(random() * 9);
      try {
        const v = await readAcceptedVersion(live);
        assert.equal(v, 9, `case ${i}: a mutated answer gave ${v}`);
        outcomes.set('true value', (outcomes.get('true value') ?? 0) + 1);
      } catch (error) {
        assert.ok(error instanceof TpmError, `case ${i}: ${(error as Error).stack}`);
        outcomes.set(error.code, (outcomes.get(error.code) ?? 0) + 1);
        if (process.env.SEAL_TEST_VERBOSE) console.log(target, error.code, error.message.slice(0, 150));
      }
      // What a lost answer left loaded on the TPM is flushed.
      // (Loaded sessions are listed from 0x02000000 whatever their type.)
      for (const start of [0x02000000, 0x80000000]) {
        const { data } = await t.tpm.getCapability(CAP.HANDLES, start, 64);
        if (data.capability === CAP.HANDLES)
          for (const h of data.handles) await t.tpm.flushContext(h).catch(() => {});
      }
    }
    assert.ok((outcomes.get('TPM_MALFORMED') ?? 0) > 50, JSON.stringify([...outcomes]));
    assert.ok((outcomes.get('TPM_RESPONSE_HMAC') ?? 0) > 10, JSON.stringify([...outcomes]));
    assert.ok((outcomes.get('true value') ?? 0) > 10, JSON.stringify([...outcomes]));
    assert.equal(await readAcceptedVersion(t.tpm), 9);
  } finally {
    await t.stop();
  }
});
