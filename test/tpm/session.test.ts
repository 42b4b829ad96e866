/**
 * Sessions against swtpm: password, HMAC (unbound, bound to the entity it authorizes or to
 * another), salted with an ECC P-256 and an RSA-2048 key, policy sessions with PolicyAuthValue
 * and PolicyPassword; parameter encryption proven by recording the bytes on the wire; response
 * HMACs that do not verify are refused.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  type AuthSession,
  CC,
  type CreatedObject,
  NULL_SCHEME,
  NV,
  OBJECT,
  objectName,
  policy,
  RecordingTransport,
  RH,
  srkTemplate,
  Tpm,
  TpmError,
  TpmResponseError,
  type TpmTransport,
} from '../../src/tpm/index.ts';
import { startTestTpm, type TestTpm } from '../helpers/tpm.ts';

let t: TestTpm;
let tpm: Tpm;
let eccSrk: CreatedObject;
let rsaSrk: CreatedObject;
const PW_INDEX = 0x01500170;
const PW = Buffer.from('index password');

before(async () => {
  t = await startTestTpm();
  tpm = t.tpm;
  eccSrk = await tpm.createPrimary(RH.OWNER, srkTemplate('ecc'));
  rsaSrk = await tpm.createPrimary(RH.OWNER, srkTemplate('rsa'));
  await tpm.nvDefineSpace(
    {
      index: PW_INDEX,
      nameAlg: 'sha256',
      attributes: NV.AUTHREAD | NV.AUTHWRITE | NV.NO_DA,
      authPolicy: Buffer.alloc(0),
      dataSize: 64,
    },
    { authValue: PW },
  );
});
after(() => t.stop());

const isRc = (name: string) => (e: unknown) => e instanceof TpmResponseError && e.rcName === name;

test('password sessions: the right password reads and writes, a wrong one is TPM_RC_BAD_AUTH (NO_DA index) in session 1', async () => {
  await tpm.nvWrite(PW_INDEX, Buffer.alloc(64, 1), { auth: () => ({ password: PW }) });
  assert.deepEqual(await tpm.nvRead(PW_INDEX, 64, { auth: () => ({ password: PW }) }), Buffer.alloc(64, 1));
  await assert.rejects(
    tpm.nvRead(PW_INDEX, 64, { auth: () => ({ password: Buffer.from('wrong') }) }),
    (e: unknown) => {
      assert.ok(e instanceof TpmResponseError);
      assert.equal(e.rcName, 'TPM_RC_BAD_AUTH');
      assert.equal(e.session, 1);
      return true;
    },
  );
});

for (const salt of ['none', 'ecc', 'rsa'] as const) {
  for (const bind of [false, true]) {
    test(`HMAC session, salt ${salt}, ${bind ? 'bound to the index' : 'unbound'}: authorizes with the authValue, refuses a wrong one`, async () => {
      const session = await tpm.startAuthSession({
        type: 'hmac',
        ...(salt === 'ecc' ? { salt: eccSrk } : salt === 'rsa' ? { salt: rsaSrk } : {}),
        ...(bind ? { bind: { handle: PW_INDEX, authValue: PW } } : {}),
      });
      try {
        assert.equal(session.salted, salt !== 'none' || bind);
        const data = Buffer.alloc(64, salt.length + (bind ? 1 : 0));
        await tpm.nvWrite(PW_INDEX, data, { auth: () => ({ session, authValue: PW }) });
        assert.deepEqual(await tpm.nvRead(PW_INDEX, 64, { auth: () => ({ session, authValue: PW }) }), data);
        // A wrong authValue fails the HMAC (bound: the caller's bind value no longer matches the
        // entity's, so the wrong value goes into its HMAC key while the TPM leaves the right one out).
        // The index has NO_DA: the failure is TPM_RC_BAD_AUTH, not the DA-counting TPM_RC_AUTH_FAIL.
        await assert.rejects(
          tpm.nvRead(PW_INDEX, 64, { auth: () => ({ session, authValue: Buffer.from('wrong') }) }),
          isRc('TPM_RC_BAD_AUTH'),
        );
      } finally {
        await tpm.flushSession(session).catch(() => {});
      }
    });
  }
}

test("a session bound to one entity authorizes another with that entity's authValue in the HMAC key", async () => {
  const session = await tpm.startAuthSession({
    type: 'hmac',
    bind: { handle: PW_INDEX, authValue: PW },
    salt: eccSrk,
  });
  try {
    // Owner (empty authValue) authorized through a session bound to the index.
    const index = 0x01500171;
    await tpm.nvDefineSpace(
      {
        index,
        nameAlg: 'sha256',
        attributes: NV.OWNERWRITE | NV.OWNERREAD | NV.NO_DA,
        authPolicy: Buffer.alloc(0),
        dataSize: 8,
      },
      { auth: { session, authValue: Buffer.alloc(0) } },
    );
    await tpm.nvUndefineSpace(index, { auth: { session } });
  } finally {
    await tpm.flushSession(session);
  }
});

test('parameter encryption: secrets written to and read from NV, unsealed, or set as hierarchy auth never cross the wire in clear', async () => {
  const recorder = new RecordingTransport(t.recorder);
  const client = new Tpm(recorder);
  const secret = Buffer.from('LUKS-PASSPHRASE-0123456789abcdef-NEVER-IN-CLEAR');
  const session = (await client.startAuthSession({ type: 'hmac', salt: eccSrk })).encrypting({
    decrypt: true,
    encrypt: true,
  });
  const index = 0x01500172;
  await client.nvDefineSpace(
    {
      index,
      nameAlg: 'sha256',
      attributes: NV.OWNERWRITE | NV.OWNERREAD | NV.NO_DA,
      authPolicy: Buffer.alloc(0),
      dataSize: secret.length,
    },
    { auth: { session } },
  );
  await client.nvWrite(index, secret, { authHandle: RH.OWNER, auth: () => ({ session }) });
  assert.deepEqual(
    await client.nvRead(index, secret.length, { authHandle: RH.OWNER, auth: () => ({ session }) }),
    secret,
  );
  // A sealed object: the data goes in Create's sensitive area, comes back from Unseal.
  const sealed = await client.create(
    eccSrk.handle,
    {
      type: 'keyedhash',
      nameAlg: 'sha256',
      attributes: OBJECT.fixedTPM | OBJECT.fixedParent | OBJECT.userWithAuth | OBJECT.noDA,
      authPolicy: Buffer.alloc(0),
      scheme: NULL_SCHEME,
      unique: Buffer.alloc(0),
    },
    { data: secret, auth: { session } },
  );
  const loaded = await client.load(eccSrk.handle, sealed.private, sealed.public, { auth: { session } });
  assert.deepEqual(await client.unseal(loaded.handle, { session }), secret);
  await client.flushContext(loaded.handle);
  // The owner auth set and used under encryption.
  await client.hierarchyChangeAuth(RH.OWNER, secret, { auth: { session } });
  await client.nvUndefineSpace(index, { auth: { session, authValue: secret } });
  await client.hierarchyChangeAuth(RH.OWNER, Buffer.alloc(0), { auth: { session, authValue: secret } });
  await client.flushSession(session);
  const wire = recorder.exchanges.flatMap((e) => [e.command, e.response]);
  assert.ok(recorder.exchanges.length >= 9);
  for (const piece of [secret, secret.subarray(0, 12), secret.subarray(20, 32)])
    assert.ok(!wire.some((b) => b.includes(piece)), `"${piece}" crossed the wire in clear`);
  // The same write without encryption does show it (the check can fail).
  const plain = new RecordingTransport(t.recorder);
  const clear = new Tpm(plain);
  await clear.nvWrite(PW_INDEX, secret.subarray(0, 40), { auth: () => ({ password: PW }) });
  assert.ok(plain.exchanges.some((e) => e.command.includes(secret.subarray(0, 12))));
});

/** Flips one byte of the last `n` bytes of responses to the given command. */
class Tamper implements TpmTransport {
  readonly inner: TpmTransport;
  readonly cc: number;
  readonly fromEnd: number;
  constructor(inner: TpmTransport, cc: number, fromEnd: number) {
    this.inner = inner;
    this.cc = cc;
    this.fromEnd = fromEnd;
  }
  get address() {
    return this.inner.address;
  }
  async send(command: Buffer): Promise<Buffer> {
    const response = await this.inner.send(command);
    if (command.readUInt32BE(6) === this.cc && response.readUInt32BE(6) === 0)
      response[response.length - this.fromEnd]! ^= 1;
    return response;
  }
  close() {
    return this.inner.close();
  }
}

test('a response HMAC, or an encrypted response parameter, altered on the way is TPM_RESPONSE_HMAC', async () => {
  for (const fromEnd of [1, 60]) {
    const client = new Tpm(new Tamper(t.recorder, CC.NV_Read, fromEnd));
    const session = (await client.startAuthSession({ type: 'hmac', salt: eccSrk })).encrypting({
      encrypt: true,
    });
    await assert.rejects(
      client.nvRead(PW_INDEX, 64, { auth: () => ({ session, authValue: PW }) }),
      (e: unknown) => e instanceof TpmError && e.code === 'TPM_RESPONSE_HMAC',
    );
    await client.flushSession(session);
  }
});

test('policy sessions: PolicyAuthValue puts the authValue in the HMAC, PolicyPassword sends it; trial sessions cannot authorize', async () => {
  const index = 0x01500173;
  const authPolicy = policy().commandCode(CC.NV_Read).authValue().digest;
  assert.deepEqual(authPolicy, policy().commandCode(CC.NV_Read).password().digest);
  await tpm.nvDefineSpace(
    {
      index,
      nameAlg: 'sha256',
      attributes: NV.AUTHWRITE | NV.POLICYREAD | NV.NO_DA,
      authPolicy,
      dataSize: 16,
    },
    { authValue: PW },
  );
  await tpm.nvWrite(index, Buffer.alloc(16, 9), { auth: () => ({ password: PW }) });
  for (const kind of ['authValue', 'password'] as const) {
    for (const salted of [false, true]) {
      const session = await tpm.startAuthSession({ type: 'policy', ...(salted ? { salt: eccSrk } : {}) });
      const satisfy = async (s: AuthSession) => {
        await tpm.policyCommandCode(s, CC.NV_Read);
        if (kind === 'authValue') await tpm.policyAuthValue(s);
        else await tpm.policyPassword(s);
      };
      const data = await tpm.nvRead(index, 16, {
        auth: async () => {
          await satisfy(session);
          return { session, authValue: PW };
        },
      });
      assert.deepEqual(data, Buffer.alloc(16, 9));
      // The policy was consumed by the read: without satisfying it again the read fails.
      await assert.rejects(
        tpm.nvRead(index, 16, { auth: () => ({ session, authValue: PW }) }),
        isRc('TPM_RC_POLICY_FAIL'),
      );
      await assert.rejects(
        tpm.nvRead(index, 16, {
          auth: async () => {
            await satisfy(session);
            return { session, authValue: Buffer.from('nope') };
          },
        }),
        isRc('TPM_RC_BAD_AUTH'),
      );
      await tpm.flushSession(session);
    }
  }
  const trial = await tpm.startAuthSession({ type: 'trial' });
  await assert.rejects(
    tpm.nvRead(index, 16, { auth: () => ({ session: trial }) }),
    (e: unknown) => e instanceof TpmError && e.code === 'TPM_INVALID_ARGUMENT',
  );
  await tpm.flushSession(trial);
  assert.ok(objectName(eccSrk.public).equals(eccSrk.name));
});
