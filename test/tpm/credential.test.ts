/**
 * Credential protection against swtpm and tpm2-tools: Seal's offline makeCredential is opened by
 * the TPM (TPM2_ActivateCredential, Seal's command and tpm2_activatecredential); tpm2-tools'
 * offline tpm2_makecredential and the TPM's own TPM2_MakeCredential are opened by Seal's
 * activateCredential; a credential made for another Name, or protected with another key, or
 * altered, is refused by the TPM; a key bound to PCR values releases nothing once a PCR moves.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  bindingTemplate,
  createIdentity,
  hash,
  IDENTITY_HANDLE,
  makeCredential,
  marshal,
  policy,
  publicBytes,
  SRK_HANDLE,
  TpmError,
  TpmResponseError,
} from '../../src/tpm/index.ts';
import { startTestTpm, type TestTpm } from '../helpers/tpm.ts';

let t: TestTpm;
let srkName: Buffer;
let akName: Buffer;

before(async () => {
  t = await startTestTpm();
  const id = await createIdentity(t.tpm);
  akName = id.name;
  srkName = (await t.tpm.readPublic(SRK_HANDLE)).name;
});
after(() => t?.stop());

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
/** tpm2-tools' credential file: magic 0xBADCC0DE, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET. */
const toolsFile = (blob: Buffer, secret: Buffer) =>
  Buffer.concat([u32(0xbadcc0de), u32(1), marshal((w) => w.b(blob).b(secret))]);
function fromToolsFile(file: Buffer): { blob: Buffer; secret: Buffer } {
  assert.equal(file.readUInt32BE(0), 0xbadcc0de);
  const blobSize = file.readUInt16BE(8);
  const blob = file.subarray(10, 10 + blobSize);
  const secretSize = file.readUInt16BE(10 + blobSize);
  return { blob, secret: file.subarray(12 + blobSize, 12 + blobSize + secretSize) };
}

test("Seal's offline credential is opened by the TPM, through Seal and through tpm2_activatecredential", async () => {
  const srk = await t.tpm.readPublic(SRK_HANDLE);
  const credential = randomBytes(32);
  const made = makeCredential(srk.public, credential, akName);
  const got = await t.tpm.activateCredential(IDENTITY_HANDLE, SRK_HANDLE, made.credentialBlob, made.secret);
  assert.deepEqual(got, credential);
  // A second credential, opened by tpm2-tools.
  const other = randomBytes(20);
  const again = makeCredential(srk.public, other, akName);
  writeFileSync(join(t.dir, 'seal.cred'), toolsFile(again.credentialBlob, again.secret));
  await t.tools('tpm2_activatecredential', [
    '-c',
    '0x81000002',
    '-C',
    '0x81000001',
    '-i',
    'seal.cred',
    '-o',
    'seal.certinfo',
  ]);
  assert.deepEqual(readFileSync(join(t.dir, 'seal.certinfo')), other);
});

test("tpm2_makecredential's and the TPM's credentials are opened by Seal's activateCredential", async () => {
  const srk = await t.tpm.readPublic(SRK_HANDLE);
  writeFileSync(
    join(t.dir, 'srk.pub'),
    marshal((w) => w.b(publicBytes(srk.public))),
  );
  const secret = Buffer.from('a credential made by tpm2-tools');
  writeFileSync(join(t.dir, 'secret.bin'), secret);
  await t.tools('tpm2_makecredential', [
    '-T',
    'none',
    '-u',
    'srk.pub',
    '-s',
    'secret.bin',
    '-n',
    akName.toString('hex'),
    '-o',
    'tools.cred',
  ]);
  const { blob, secret: seed } = fromToolsFile(readFileSync(join(t.dir, 'tools.cred')));
  assert.deepEqual(await t.tpm.activateCredential(IDENTITY_HANDLE, SRK_HANDLE, blob, seed), secret);
  const tpmMade = await t.tpm.makeCredential(SRK_HANDLE, secret, akName);
  assert.deepEqual(
    await t.tpm.activateCredential(IDENTITY_HANDLE, SRK_HANDLE, tpmMade.credentialBlob, tpmMade.secret),
    secret,
  );
});

test('a credential for another Name, for another key or altered is refused by the TPM', async () => {
  const srk = await t.tpm.readPublic(SRK_HANDLE);
  const credential = randomBytes(32);
  const refusedWith = async (blob: Buffer, seed: Buffer, rc: RegExp) => {
    const error = await t.tpm.activateCredential(IDENTITY_HANDLE, SRK_HANDLE, blob, seed).then(
      () => assert.fail('activated'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof TpmResponseError, String(error));
    assert.match(error.rcName, rc);
  };
  // Made for the SRK's Name, not the identity key's: the integrity HMAC fails.
  const wrongName = makeCredential(srk.public, credential, srkName);
  await refusedWith(wrongName.credentialBlob, wrongName.secret, /TPM_RC_INTEGRITY/);
  // Protected with another TPM's storage key: the seed does not decrypt to the right value.
  const other = await startTestTpm();
  try {
    await createIdentity(other.tpm);
    const otherSrk = await other.tpm.readPublic(SRK_HANDLE);
    const foreign = makeCredential(otherSrk.public, credential, akName);
    await refusedWith(foreign.credentialBlob, foreign.secret, /TPM_RC_(INTEGRITY|ECC_POINT|VALUE|NO_RESULT)/);
  } finally {
    await other.stop();
  }
  // One byte of the encrypted credential changed.
  const made = makeCredential(srk.public, credential, akName);
  const altered = Buffer.from(made.credentialBlob);
  altered[altered.length - 1]! ^= 1;
  await refusedWith(altered, made.secret, /TPM_RC_INTEGRITY/);
});

test('a binding key bound to PCR values opens a credential in that state only', async () => {
  const selection = [{ hash: 'sha256' as const, pcrs: [7, 11] }];
  const values = await t.tpm.pcrRead(selection);
  const digest = hash('sha256', ...values.sort((a, b) => a.pcr - b.pcr).map((v) => v.value));
  const authPolicy = policy('sha256').pcr(selection, digest).digest;
  const created = await t.tpm.create(SRK_HANDLE, bindingTemplate(authPolicy));
  const key = await t.tpm.load(SRK_HANDLE, created.private, created.public);
  const credential = randomBytes(32);
  const made = makeCredential(key.public, credential, akName);
  const activate = async () => {
    const session = await t.tpm.startAuthSession({ type: 'policy' });
    try {
      await t.tpm.policyPCR(session, selection, digest);
      return await t.tpm.activateCredential(IDENTITY_HANDLE, key.handle, made.credentialBlob, made.secret, {
        keyAuth: { session },
      });
    } finally {
      await t.tpm.flushSession(session).catch(() => {});
    }
  };
  assert.deepEqual(await activate(), credential);
  // The key refuses its authValue: only the policy opens it.
  await assert.rejects(
    t.tpm.activateCredential(IDENTITY_HANDLE, key.handle, made.credentialBlob, made.secret),
    (e: unknown) => e instanceof TpmResponseError && e.rcName === 'TPM_RC_AUTH_UNAVAILABLE',
  );
  await t.tpm.pcrExtend(11, [{ hash: 'sha256', digest: hash('sha256', Buffer.from('later')) }]);
  await assert.rejects(
    activate(),
    (e: unknown) => e instanceof TpmResponseError && e.rcName === 'TPM_RC_VALUE',
  );
  await t.tpm.flushContext(key.handle);
});

test('offline credentials refuse what the TPM would refuse', async () => {
  const srk = await t.tpm.readPublic(SRK_HANDLE);
  const id = await t.tpm.readPublic(IDENTITY_HANDLE);
  assert.throws(() => makeCredential(srk.public, randomBytes(33), akName), /1 to 32 bytes/);
  assert.throws(() => makeCredential(srk.public, Buffer.alloc(0), akName), /1 to 32 bytes/);
  assert.throws(
    () => makeCredential(id.public, randomBytes(32), akName),
    (e: unknown) => e instanceof TpmError && e.code === 'TPM_KEY',
  );
});
