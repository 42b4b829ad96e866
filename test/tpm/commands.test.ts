/**
 * The commands against swtpm, their results checked independently: signatures and quotes
 * verified with node:crypto, PCR values recomputed, NV locking, counters, persistence, and the
 * TPM's refusals decoded (TPM_RC_NV_LOCKED, TPM_RC_POLICY, TPM_RC_PCR_CHANGED, TPM_RC_NV_DEFINED).
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, test } from 'node:test';
import {
  ALG,
  CC,
  externalPublic,
  HT,
  hash,
  identityTemplate,
  keyObjectOf,
  NT,
  NV,
  PT,
  Reader,
  RH,
  readAttest,
  ST,
  signForTpm,
  srkTemplate,
  TPM_GENERATED_VALUE,
  type Tpm,
  TpmResponseError,
  verifyTpmSignature,
} from '../../src/tpm/index.ts';
import { startTestTpm, type TestTpm } from '../helpers/tpm.ts';

let t: TestTpm;
let tpm: Tpm;
before(async () => {
  t = await startTestTpm();
  tpm = t.tpm;
});
after(() => t.stop());

const isRc = (name: string) => (e: unknown) => e instanceof TpmResponseError && e.rcName === name;

test('GetCapability: properties, PCR banks, handles; GetRandom of any length', async () => {
  assert.equal(await tpm.getProperty(PT.NV_BUFFER_MAX), 1024);
  assert.equal(await tpm.getProperty(PT.FAMILY_INDICATOR), 0x322e3000); // "2.0"
  const banks = await tpm.pcrBanks();
  assert.deepEqual(
    banks.map((b) => b.hash),
    ['sha1', 'sha256', 'sha384', 'sha512'],
  );
  assert.equal(banks[1]!.pcrs.length, 24);
  const random = await tpm.getRandom(100);
  assert.equal(random.length, 100);
  assert.notDeepEqual(random.subarray(0, 32), random.subarray(32, 64));
});

test('PCR_Extend and PCR_Read: values are the hash chain, more than 8 PCRs come in several reads', async () => {
  const data = hash('sha256', Buffer.from('measured'));
  await tpm.pcrExtend(9, [
    { hash: 'sha256', digest: data },
    { hash: 'sha1', digest: hash('sha1', Buffer.from('x')) },
  ]);
  const pcrs = Array.from({ length: 24 }, (_, i) => i);
  const values = await tpm.pcrRead([
    { hash: 'sha256', pcrs },
    { hash: 'sha1', pcrs: [9] },
  ]);
  assert.equal(values.length, 25);
  assert.deepEqual(
    values.find((v) => v.hash === 'sha256' && v.pcr === 9)!.value,
    hash('sha256', Buffer.alloc(32), data),
  );
  assert.deepEqual(values.find((v) => v.hash === 'sha256' && v.pcr === 17)!.value, Buffer.alloc(32, 0xff));
  await assert.rejects(tpm.pcrExtend(9, [{ hash: 'sha256', digest: Buffer.alloc(20) }]), /32 bytes, not 20/);
});

test('CreatePrimary, ReadPublic, EvictControl to a persistent handle and back, FlushContext', async () => {
  const srk = await tpm.createPrimary(RH.OWNER, srkTemplate());
  const read = await tpm.readPublic(srk.handle);
  assert.deepEqual(read.name, srk.name);
  await tpm.evictControl(srk.handle, 0x81000010);
  assert.ok((await tpm.handles(HT.PERSISTENT)).includes(0x81000010));
  assert.deepEqual((await tpm.readPublic(0x81000010)).name, srk.name);
  await tpm.flushContext(srk.handle);
  await assert.rejects(tpm.readPublic(srk.handle), isRc('TPM_RC_REFERENCE_H0'));
  await tpm.evictControl(0x81000010, 0x81000010);
  assert.ok(!(await tpm.handles(HT.PERSISTENT)).includes(0x81000010));
});

test('a restricted signing key: Hash + Sign, Quote and Certify, each verified with node:crypto', async () => {
  const srk = await tpm.createPrimary(RH.OWNER, srkTemplate());
  const created = await tpm.create(srk.handle, identityTemplate());
  const key = await tpm.load(srk.handle, created.private, created.public);
  const publicKey = keyObjectOf(key.public);
  const challenge = Buffer.from('prove you are the device');
  const { digest, validation } = await tpm.hash(challenge);
  assert.equal(validation.tag, ST.HASHCHECK);
  const signature = await tpm.sign(key.handle, digest, { validation });
  assert.ok(verifyTpmSignature(publicKey, challenge, signature));
  assert.ok(!verifyTpmSignature(publicKey, Buffer.from('something else'), signature));
  // Without the hash ticket a restricted key refuses to sign.
  await assert.rejects(tpm.sign(key.handle, digest), isRc('TPM_RC_TICKET'));

  const quote = await tpm.quote(key.handle, {
    qualifyingData: challenge.subarray(0, 16),
    selections: [{ hash: 'sha256', pcrs: [7, 9] }],
  });
  assert.ok(verifyTpmSignature(publicKey, quote.attestBytes, quote.signature));
  assert.equal(quote.attest.magic, TPM_GENERATED_VALUE);
  assert.equal(quote.attest.type, ST.ATTEST_QUOTE);
  assert.deepEqual(quote.attest.extraData, challenge.subarray(0, 16));
  const values = await tpm.pcrRead([{ hash: 'sha256', pcrs: [7, 9] }]);
  assert.deepEqual(quote.attest.quote!.pcrDigest, hash('sha256', ...values.map((v) => v.value)));

  const certified = await tpm.certify(key.handle, key.handle, { qualifyingData: Buffer.from('nonce') });
  assert.ok(verifyTpmSignature(publicKey, certified.attestBytes, certified.signature));
  assert.deepEqual(certified.attest.certify!.name, key.name);
  assert.deepEqual(readAttest(new Reader(certified.attestBytes, 'again')).certify!.name, key.name);
  await tpm.flushContext(key.handle);
  await tpm.flushContext(srk.handle);
});

test('LoadExternal + VerifySignature: a ticket for a good signature, TPM_RC_SIGNATURE for a bad one', async () => {
  for (const pair of [
    generateKeyPairSync('ec', { namedCurve: 'prime256v1' }),
    generateKeyPairSync('rsa', { modulusLength: 2048 }),
  ]) {
    const key = await tpm.loadExternal(externalPublic(pair.publicKey));
    const message = Buffer.from('approved policy');
    const signature = signForTpm(pair.privateKey, message);
    const ticket = await tpm.verifySignature(key.handle, hash('sha256', message), signature);
    assert.equal(ticket.tag, ST.VERIFIED);
    assert.equal(ticket.hierarchy, RH.OWNER);
    await assert.rejects(
      tpm.verifySignature(key.handle, hash('sha256', Buffer.from('other')), signature),
      isRc('TPM_RC_SIGNATURE'),
    );
    await tpm.flushContext(key.handle);
  }
  assert.equal(
    signForTpm(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey, Buffer.from('x')).sigAlg,
    ALG.ECDSA,
  );
});

test('NV: define, write, write-lock (TPM_RC_NV_LOCKED), counters, redefinition (TPM_RC_NV_DEFINED), undefine', async () => {
  const index = 0x01500180;
  const pub = {
    index,
    nameAlg: 'sha256' as const,
    attributes: NV.OWNERWRITE | NV.OWNERREAD | NV.WRITEDEFINE | NV.NO_DA,
    authPolicy: Buffer.alloc(0),
    dataSize: 2000,
  };
  await tpm.nvDefineSpace(pub);
  await assert.rejects(tpm.nvDefineSpace(pub), isRc('TPM_RC_NV_DEFINED'));
  await assert.rejects(tpm.nvRead(index, 8, { authHandle: RH.OWNER }), isRc('TPM_RC_NV_UNINITIALIZED'));
  const data = Buffer.alloc(2000);
  for (let i = 0; i < data.length; i++) data[i] = i % 251;
  await tpm.nvWrite(index, data, { authHandle: RH.OWNER });
  assert.deepEqual(await tpm.nvRead(index, 2000, { authHandle: RH.OWNER }), data);
  assert.deepEqual(
    await tpm.nvRead(index, 10, { authHandle: RH.OWNER, offset: 1500 }),
    data.subarray(1500, 1510),
  );
  await tpm.nvWriteLock(index, { authHandle: RH.OWNER });
  const after = await tpm.nvReadPublic(index);
  assert.equal(after.public.attributes & (NV.WRITTEN | NV.WRITELOCKED), NV.WRITTEN | NV.WRITELOCKED);
  await assert.rejects(
    tpm.nvWrite(index, Buffer.from('x'), { authHandle: RH.OWNER }),
    isRc('TPM_RC_NV_LOCKED'),
  );
  await tpm.nvUndefineSpace(index);
  await assert.rejects(tpm.nvReadPublic(index), isRc('TPM_RC_HANDLE'));

  const counter = 0x01500181;
  await tpm.nvDefineSpace({
    index: counter,
    nameAlg: 'sha256',
    attributes: NT.COUNTER | NV.AUTHWRITE | NV.AUTHREAD | NV.NO_DA,
    authPolicy: Buffer.alloc(0),
    dataSize: 8,
  });
  await tpm.nvIncrement(counter);
  const first = await tpm.nvReadCounter(counter);
  await tpm.nvIncrement(counter);
  assert.equal(await tpm.nvReadCounter(counter), first + 1n);
  await assert.rejects(tpm.nvWrite(counter, Buffer.alloc(8)), isRc('TPM_RC_ATTRIBUTES'));
});

test('policy failures the TPM reports: TPM_RC_POLICY (PolicyNV comparison), TPM_RC_PCR_CHANGED, TPM_RC_VALUE', async () => {
  const counter = 0x01500182;
  await tpm.nvDefineSpace({
    index: counter,
    nameAlg: 'sha256',
    attributes: NT.COUNTER | NV.AUTHWRITE | NV.AUTHREAD | NV.NO_DA,
    authPolicy: Buffer.alloc(0),
    dataSize: 8,
  });
  await tpm.nvIncrement(counter);
  const value = await tpm.nvRead(counter, 8);
  const session = await tpm.startAuthSession({ type: 'policy' });
  await tpm.policyNV(session, { index: counter, operandB: value });
  const other = Buffer.from(value);
  other[7]! ^= 1;
  await assert.rejects(tpm.policyNV(session, { index: counter, operandB: other }), isRc('TPM_RC_POLICY'));
  await tpm.policyNV(session, { index: counter, operandB: other, operation: 'neq' });
  // PolicyPCR, then the PCR changes before the policy is used (PCR 11: 16 and 23 do not count
  // as changes in the PC client profile, they leave the TPM's PCR update counter alone).
  const secret = 0x01500183;
  const pcr11 = [{ hash: 'sha256' as const, pcrs: [11] }];
  await tpm.policyRestart(session);
  await tpm.policyPCR(session, pcr11);
  await tpm.nvDefineSpace({
    index: secret,
    nameAlg: 'sha256',
    attributes: NV.OWNERWRITE | NV.POLICYREAD | NV.NO_DA,
    authPolicy: await tpm.policyGetDigest(session),
    dataSize: 4,
  });
  await tpm.nvWrite(secret, Buffer.from('abcd'), { authHandle: RH.OWNER });
  await tpm.pcrExtend(11, [{ hash: 'sha256', digest: Buffer.alloc(32, 3) }]);
  await assert.rejects(tpm.nvRead(secret, 4, { auth: () => ({ session }) }), isRc('TPM_RC_PCR_CHANGED'));
  // A pcrDigest that is not the current PCRs' is TPM_RC_VALUE on parameter 1.
  await tpm.policyRestart(session);
  await assert.rejects(
    tpm.policyPCR(session, pcr11, Buffer.alloc(32, 1)),
    (e: unknown) => isRc('TPM_RC_VALUE')(e) && (e as TpmResponseError).parameter === 1,
  );
  await tpm.flushSession(session);
  assert.equal(CC.PolicyPCR, 0x17f);
});
