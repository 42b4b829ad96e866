/**
 * Mutated TPM responses give typed errors, never a crash or a hang: a scenario touching every
 * response parser (capabilities, PCRs, keys, NV, sessions and policies, signatures, quotes,
 * certifications, credentials) is recorded against swtpm, then replayed thousands of times with
 * one response mutated — bytes flipped, size fields rewritten, truncated, extended, response
 * codes replaced.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, test } from 'node:test';
import {
  ALG,
  externalPublic,
  HT,
  hash,
  identityTemplate,
  NT,
  NV,
  objectName,
  PolicyBuilder,
  PT,
  parsePolicy,
  policy,
  RH,
  serializePolicy,
  signForTpm,
  signPolicy,
  srkTemplate,
  Tpm,
  TpmError,
} from '../../src/tpm/index.ts';
import { ReplayTransport, startTestTpm, type TestTpm } from '../helpers/tpm.ts';
import { prng } from '../helpers/trees.ts';

const policyKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const keyPublic = externalPublic(policyKey.publicKey);
const COUNTER = 0x01500160;
const SECRET = 0x01500161;

async function scenario(tpm: Tpm): Promise<void> {
  await tpm.getProperty(PT.NV_BUFFER_MAX);
  await tpm.pcrBanks();
  await tpm.handles(HT.NV_INDEX);
  await tpm.getRandom(48);
  await tpm.pcrRead([
    { hash: 'sha256', pcrs: [0, 7] },
    { hash: 'sha384', pcrs: [7] },
  ]);
  const srk = await tpm.createPrimary(RH.OWNER, srkTemplate());
  await tpm.readPublic(srk.handle);
  const created = await tpm.create(srk.handle, identityTemplate());
  const id = await tpm.load(srk.handle, created.private, created.public);
  const challenge = Buffer.from('a challenge');
  const { digest, validation } = await tpm.hash(challenge);
  await tpm.sign(id.handle, digest, { validation });
  await tpm.quote(id.handle, { qualifyingData: challenge, selections: [{ hash: 'sha256', pcrs: [7] }] });
  await tpm.certify(id.handle, id.handle, { qualifyingData: challenge });
  const credential = await tpm.makeCredential(srk.handle, Buffer.alloc(32, 5), id.name);
  await tpm.activateCredential(id.handle, srk.handle, credential.credentialBlob, credential.secret);
  await tpm.flushContext(id.handle);
  await tpm.flushContext(srk.handle);
  const counter = await tpm.nvReadPublic(COUNTER);
  const value = await tpm.nvRead(COUNTER, 8);
  const external = await tpm.loadExternal(keyPublic);
  const pcrs = await tpm.pcrRead([{ hash: 'sha256', pcrs: [7] }]);
  const approved = new PolicyBuilder()
    .pcrValues([{ hash: 'sha256', pcrs: [7] }], [pcrs[0]!.value])
    .nv(counter.name, value).digest;
  const ticket = await tpm.verifySignature(
    external.handle,
    hash('sha256', approved),
    signForTpm(policyKey.privateKey, approved),
  );
  await tpm.flushContext(external.handle);
  const session = await tpm.startAuthSession({ type: 'policy', symmetric: { alg: ALG.NULL } });
  const secret = await tpm.nvReadPublic(SECRET);
  await tpm.nvRead(SECRET, secret.public.dataSize, {
    auth: async () => {
      await tpm.policyPCR(session, [{ hash: 'sha256', pcrs: [7] }]);
      await tpm.policyNV(session, { index: COUNTER, operandB: value });
      await tpm.policyAuthorize(session, {
        approvedPolicy: approved,
        keySign: external.name,
        checkTicket: ticket,
      });
      return { session };
    },
  });
  await tpm.policyGetDigest(session);
  await tpm.flushSession(session);
}

let t: TestTpm;
let recorded: Buffer[];

before(async () => {
  t = await startTestTpm();
  const { tpm } = t;
  await tpm.nvDefineSpace({
    index: COUNTER,
    nameAlg: 'sha256',
    attributes: NT.COUNTER | NV.AUTHREAD | NV.AUTHWRITE | NV.NO_DA,
    authPolicy: Buffer.alloc(0),
    dataSize: 8,
  });
  await tpm.nvIncrement(COUNTER);
  await tpm.nvDefineSpace({
    index: SECRET,
    nameAlg: 'sha256',
    attributes: NV.OWNERWRITE | NV.POLICYREAD | NV.NO_DA,
    authPolicy: policy().authorize(objectName(keyPublic)).digest,
    dataSize: 1500,
  });
  await tpm.nvWrite(SECRET, Buffer.alloc(1500, 7), { authHandle: RH.OWNER });
  const start = t.recorder.exchanges.length;
  await scenario(new Tpm(t.recorder));
  recorded = t.recorder.exchanges.slice(start).map((e) => e.response);
});
after(() => t.stop());

test('the scenario replays cleanly from its recording', async () => {
  assert.ok(recorded.length > 30, `${recorded.length} responses`);
  await scenario(new Tpm(new ReplayTransport(recorded), { retries: 3 }));
});

function mutate(response: Buffer, random: () => number): Buffer {
  const data = Buffer.from(response);
  const at = () => Math.floor(random() * data.length);
  const kind = random();
  const fixSize = (b: Buffer) => {
    if (b.length >= 6 && random() < 0.7) b.writeUInt32BE(b.length, 2);
    return b;
  };
  if (kind < 0.35) {
    for (let k = 0, n = 1 + Math.floor(random() * 4); k < n; k++)
      data[10 + (at() % Math.max(1, data.length - 10))] = Math.floor(random() * 256);
    return data;
  }
  if (kind < 0.55) {
    // A size field (u16 or u32) somewhere past the header set to an extreme.
    const pos = 10 + Math.floor(random() * Math.max(1, data.length - 12));
    const value = [0, 1, 0xff, 0xffff, data.length, 0x7fff][Math.floor(random() * 6)]!;
    if (random() < 0.6 && pos + 2 <= data.length) data.writeUInt16BE(value & 0xffff, pos);
    else if (pos + 4 <= data.length) data.writeUInt32BE(value, pos);
    return data;
  }
  if (kind < 0.7) return fixSize(data.subarray(0, Math.floor(random() * data.length)));
  if (kind < 0.8) {
    const extra = Buffer.alloc(1 + Math.floor(random() * 40));
    for (let i = 0; i < extra.length; i++) extra[i] = Math.floor(random() * 256);
    return fixSize(Buffer.concat([data, extra]));
  }
  if (kind < 0.9) {
    const codes = [0x922, 0x908, 0x90a, 0x101, 0x98e, 0x9a2, 0x1d1d, 0x14b, 0x148, 0xdeadbeef];
    const out = Buffer.from(data.subarray(0, 10));
    out.writeUInt32BE(codes[Math.floor(random() * codes.length)]! >>> 0, 6);
    out.writeUInt32BE(10, 2);
    return out;
  }
  // Header fields: tag, size.
  data.writeUInt16BE([0x8001, 0x8002, 0x00c4, 0][Math.floor(random() * 4)]!, 0);
  if (random() < 0.5) data.writeUInt32BE(Math.floor(random() * 0x20000), 2);
  return data;
}

test('mutated responses give typed errors, never a crash or a hang', async () => {
  const random = prng(15);
  let refused = 0;
  const codes = new Map<string, number>();
  for (let i = 0; i < 4000; i++) {
    const k = Math.floor(random() * recorded.length);
    const responses = recorded.map((r, j) => (j === k ? mutate(r, random) : r));
    try {
      await scenario(new Tpm(new ReplayTransport(responses), { retries: 3 }));
    } catch (error) {
      assert.ok(error instanceof TpmError, `case ${i} (response ${k}): ${(error as Error).stack}`);
      codes.set(error.code, (codes.get(error.code) ?? 0) + 1);
      refused++;
    }
  }
  assert.ok(refused > 2000, `only ${refused} mutants were refused`);
  assert.ok((codes.get('TPM_MALFORMED') ?? 0) > 500, JSON.stringify([...codes]));
  assert.ok((codes.get('TPM_RESPONSE') ?? 0) > 100, JSON.stringify([...codes]));
});

test('mutated signed policy files give TPM_POLICY_FILE errors or parse, never a crash or a hang', () => {
  const random = prng(16);
  const good = serializePolicy(
    signPolicy({
      key: policyKey.privateKey,
      role: 'production',
      version: 1,
      pcrs: [[7, Buffer.alloc(32, 7)]],
    }),
  );
  const doc = JSON.parse(good);
  const values: unknown[] = [
    null,
    true,
    0,
    -1,
    1.5,
    2 ** 60,
    '',
    'zz',
    '00',
    [],
    {},
    'a'.repeat(70000),
    '0x01500020',
    'eq',
    'sha384',
  ];
  const paths: string[][] = [];
  const walk = (v: unknown, path: string[]) => {
    paths.push(path);
    if (v && typeof v === 'object') for (const [k, c] of Object.entries(v)) walk(c, [...path, k]);
  };
  walk(doc, []);
  let parsed = 0;
  let refused = 0;
  for (let i = 0; i < 3000; i++) {
    let text: string;
    const kind = random();
    if (kind < 0.5) {
      // A field replaced, removed, or given a sibling.
      const copy = structuredClone(doc);
      const path = paths[Math.floor(random() * paths.length)]!;
      if (path.length === 0) text = JSON.stringify(values[Math.floor(random() * values.length)]);
      else {
        let parent = copy;
        for (const k of path.slice(0, -1)) parent = parent[k];
        const last = path.at(-1)!;
        const r = random();
        if (r < 0.6) parent[last] = values[Math.floor(random() * values.length)];
        else if (r < 0.8) delete parent[last];
        else parent[`${last}x`] = 1;
        text = JSON.stringify(copy);
      }
    } else {
      const bytes = Buffer.from(good);
      for (let k = 0, n = 1 + Math.floor(random() * 4); k < n; k++)
        bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
      text =
        random() < 0.2
          ? bytes.subarray(0, Math.floor(random() * bytes.length)).toString('latin1')
          : bytes.toString('latin1');
    }
    try {
      parsePolicy(text, 'mutant.json');
      parsed++;
    } catch (error) {
      assert.ok(
        error instanceof TpmError && error.code === 'TPM_POLICY_FILE',
        `case ${i}: ${(error as Error).stack}`,
      );
      assert.match(error.message, /^mutant\.json: /);
      refused++;
    }
  }
  assert.ok(refused > 2000 && parsed > 10, `${refused} refused, ${parsed} parsed`);
});
