/**
 * Offline policy digests against the TPM's own trial sessions (Seal's client: PolicyGetDigest)
 * and against tpm2-tools' trial sessions (`tpm2_policy* -L`), on one swtpm, and the REFERENCE.md
 * vectors.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  CC,
  externalPublic,
  type HashName,
  hash,
  NT,
  NV,
  OPERATIONS,
  objectName,
  type PcrSelection,
  PolicyBuilder,
  policy,
  RH,
  type Tpm,
} from '../../src/tpm/index.ts';
import { startTestTpm, type TestTpm } from '../helpers/tpm.ts';

let t: TestTpm;
let tpm: Tpm;
let step = 0;

before(async () => {
  t = await startTestTpm();
  tpm = t.tpm;
  // Non-trivial PCR values in both banks used below.
  for (const pcr of [0, 2, 4, 7, 11, 16, 23]) {
    await tpm.pcrExtend(pcr, [
      { hash: 'sha256', digest: hash('sha256', Buffer.from(`pcr ${pcr}`)) },
      { hash: 'sha384', digest: hash('sha384', Buffer.from(`pcr ${pcr}`)) },
    ]);
  }
});
after(() => t.stop());

/** Runs tpm2-tools policy commands in one trial session; returns the digest the last one wrote with -L. */
async function toolsTrial(commands: [string, string[]][], hashName: HashName = 'sha256'): Promise<Buffer> {
  const session = `s${++step}.ctx`;
  const out = `p${step}.dat`;
  await t.tools('tpm2_startauthsession', ['-S', session, '-g', hashName]);
  for (const [command, args] of commands) await t.tools(command, ['-S', session, '-L', out, ...args]);
  await t.tools('tpm2_flushcontext', [session]);
  return readFileSync(join(t.dir, out));
}

/** Seal's trial session: the TPM computes the digest. */
async function sealTrial(
  run: (s: Awaited<ReturnType<Tpm['startAuthSession']>>) => Promise<void>,
  hashName: HashName = 'sha256',
): Promise<Buffer> {
  const session = await tpm.startAuthSession({ type: 'trial', hash: hashName });
  try {
    await run(session);
    return await tpm.policyGetDigest(session);
  } finally {
    await tpm.flushSession(session);
  }
}

function file(name: string, data: Uint8Array): string {
  writeFileSync(join(t.dir, name), data);
  return name;
}

function spec(selections: PcrSelection[]): string {
  return selections.map((s) => `${s.hash}:${s.pcrs.join(',')}`).join('+');
}

async function offlinePcr(selections: PcrSelection[], policyHash: HashName = 'sha256'): Promise<Buffer> {
  const values = await tpm.pcrRead(selections);
  // pcrRead returns values bank by bank, PCRs ascending: the order PolicyPCR hashes them in.
  const ordered = selections.flatMap((s) =>
    [...s.pcrs]
      .sort((a, b) => a - b)
      .map((pcr) => values.find((v) => v.hash === s.hash && v.pcr === pcr)!.value),
  );
  return new PolicyBuilder(policyHash).pcrValues(selections, ordered).digest;
}

test('REFERENCE.md vectors: PolicyPCR(sha256:7) with PCR 7 zero and extended with SHA256("hello")', () => {
  const zero = Buffer.alloc(32);
  assert.equal(
    policy()
      .pcrValues([{ hash: 'sha256', pcrs: [7] }], [zero])
      .digest.toString('hex'),
    '8b5682d81b29435d08d79278150611dc7e5923b2fefcce684a09577b40130a8b',
  );
  const hello = hash('sha256', zero, hash('sha256', Buffer.from('hello')));
  assert.equal(
    policy()
      .pcrValues([{ hash: 'sha256', pcrs: [7] }], [hello])
      .digest.toString('hex'),
    '08d691cd8e2be6c4ac39afa543f135927c883820002c8a4883f4fba73decc964',
  );
});

const PCR_SETS: [PcrSelection[], HashName][] = [
  [[{ hash: 'sha256', pcrs: [7] }], 'sha256'],
  [[{ hash: 'sha256', pcrs: [0, 7] }], 'sha256'],
  [[{ hash: 'sha256', pcrs: [0, 2, 4, 7, 11] }], 'sha256'],
  [[{ hash: 'sha256', pcrs: [16, 23] }], 'sha256'],
  [[{ hash: 'sha384', pcrs: [7] }], 'sha256'],
  [[{ hash: 'sha384', pcrs: [0, 4, 7] }], 'sha256'],
  [
    [
      { hash: 'sha256', pcrs: [7] },
      { hash: 'sha384', pcrs: [0, 7] },
    ],
    'sha256',
  ],
  [[{ hash: 'sha256', pcrs: [4, 7, 11] }], 'sha384'],
];

for (const [selections, policyHash] of PCR_SETS) {
  test(`PolicyPCR ${spec(selections)} in a ${policyHash} policy: offline = TPM trial = tpm2_policypcr`, async () => {
    const offline = await offlinePcr(selections, policyHash);
    const trial = await sealTrial((s) => tpm.policyPCR(s, selections), policyHash);
    const tools = await toolsTrial([['tpm2_policypcr', ['-l', spec(selections)]]], policyHash);
    assert.equal(trial.toString('hex'), offline.toString('hex'));
    assert.equal(tools.toString('hex'), offline.toString('hex'));
  });
}

const NV_INDEX = 0x01500150;

test('PolicyNV, every operation, with and without an offset: offline = TPM trial = tpm2_policynv', async () => {
  await tpm.nvDefineSpace({
    index: NV_INDEX,
    nameAlg: 'sha256',
    attributes: NV.AUTHREAD | NV.AUTHWRITE | NV.NO_DA | NT.ORDINARY,
    authPolicy: Buffer.alloc(0),
    dataSize: 8,
  });
  await tpm.nvWrite(NV_INDEX, Buffer.from('0000000000000001', 'hex'));
  const { name } = await tpm.nvReadPublic(NV_INDEX);
  let cases = 0;
  for (const operation of OPERATIONS) {
    for (const [offset, operand] of [
      [0, Buffer.from('0000000000000001', 'hex')],
      [6, Buffer.from('0001', 'hex')],
    ] as const) {
      const offline = policy().nv(name, operand, offset, operation).digest;
      const trial = await sealTrial((s) =>
        tpm.policyNV(s, { index: NV_INDEX, operandB: operand, offset, operation }),
      );
      const operandFile = file(`operand-${operation}-${offset}.bin`, operand);
      const tools = await toolsTrial([
        [
          'tpm2_policynv',
          [
            '-i',
            operandFile,
            ...(offset ? ['--offset', String(offset)] : []),
            `0x${NV_INDEX.toString(16)}`,
            operation,
          ],
        ],
      ]);
      assert.equal(trial.toString('hex'), offline.toString('hex'), `${operation} at ${offset}`);
      assert.equal(tools.toString('hex'), offline.toString('hex'), `${operation} at ${offset}`);
      cases++;
    }
  }
  assert.equal(cases, 24);
});

for (const keyType of ['ec', 'rsa'] as const) {
  test(`PolicyAuthorize with a ${keyType === 'ec' ? 'P-256' : 'RSA-2048'} key: Seal's key Name = tpm2_loadexternal's, digests equal`, async () => {
    const { publicKey } =
      keyType === 'ec'
        ? generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
        : generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pem = file(
      `key-${keyType}.pem`,
      Buffer.from(publicKey.export({ type: 'spki', format: 'pem' }) as string),
    );
    await t.tools('tpm2_loadexternal', [
      '-C',
      'o',
      '-G',
      keyType === 'ec' ? 'ecc' : 'rsa',
      '-u',
      pem,
      '-c',
      `key-${keyType}.ctx`,
      '-n',
      `key-${keyType}.name`,
    ]);
    await t.tools('tpm2_flushcontext', ['-t']);
    const toolsName = readFileSync(join(t.dir, `key-${keyType}.name`));
    const keyName = objectName(externalPublic(publicKey));
    assert.equal(keyName.toString('hex'), toolsName.toString('hex'));
    const approved = hash('sha256', Buffer.from('some approved policy'));
    for (const ref of [Buffer.alloc(0), Buffer.from('seal:management')]) {
      const offline = policy().authorize(keyName, ref).digest;
      const args = ['-i', file('approved.bin', approved), '-n', `key-${keyType}.name`];
      if (ref.length) args.push('-q', file('ref.bin', ref));
      const tools = await toolsTrial([['tpm2_policyauthorize', args]]);
      const trial = await sealTrial((s) =>
        tpm.policyAuthorize(s, {
          approvedPolicy: approved,
          policyRef: ref,
          keySign: keyName,
          checkTicket: { tag: 0x8022, hierarchy: RH.NULL, digest: Buffer.alloc(0) },
        }),
      );
      assert.equal(tools.toString('hex'), offline.toString('hex'));
      assert.equal(trial.toString('hex'), offline.toString('hex'));
    }
  });
}

test('PolicyAuthorizeNV, PolicyOR, PolicyCommandCode, PolicySecret and compositions', async () => {
  const AUTH_NV = 0x01500151;
  await tpm.nvDefineSpace({
    index: AUTH_NV,
    nameAlg: 'sha256',
    attributes: NV.AUTHREAD | NV.AUTHWRITE | NV.NO_DA,
    authPolicy: Buffer.alloc(0),
    dataSize: 34,
  });
  const stored = policy().commandCode(CC.NV_Read).digest;
  await tpm.nvWrite(AUTH_NV, Buffer.concat([Buffer.from([0, 0x0b]), stored]));
  const authNvName = (await tpm.nvReadPublic(AUTH_NV)).name;
  const versionName = (await tpm.nvReadPublic(NV_INDEX)).name;
  const pcr7: PcrSelection[] = [{ hash: 'sha256', pcrs: [7] }];
  const pcr07: PcrSelection[] = [{ hash: 'sha256', pcrs: [0, 7] }];
  const version = Buffer.from('0000000000000001', 'hex');

  // PolicyAuthorizeNV alone.
  {
    const offline = policy().authorizeNV(authNvName).digest;
    const tools = await toolsTrial([['tpm2_policyauthorizenv', [`0x${AUTH_NV.toString(16)}`]]]);
    const trial = await sealTrial((s) => tpm.policyAuthorizeNV(s, { index: AUTH_NV }));
    assert.equal(tools.toString('hex'), offline.toString('hex'));
    assert.equal(trial.toString('hex'), offline.toString('hex'));
  }
  // Seal's EA policy shape: PolicyPCR(7) ∧ PolicyNV(version == 1), in one session.
  const pcrPart = (await offlinePcr(pcr7)).toString('hex');
  const ea = new PolicyBuilder('sha256', Buffer.from(pcrPart, 'hex')).nv(versionName, version).digest;
  {
    const tools = await toolsTrial([
      ['tpm2_policypcr', ['-l', 'sha256:7']],
      ['tpm2_policynv', ['-i', file('version.bin', version), `0x${NV_INDEX.toString(16)}`, 'eq']],
    ]);
    const trial = await sealTrial(async (s) => {
      await tpm.policyPCR(s, pcr7);
      await tpm.policyNV(s, { index: NV_INDEX, operandB: version });
    });
    assert.equal(tools.toString('hex'), ea.toString('hex'));
    assert.equal(trial.toString('hex'), ea.toString('hex'));
  }
  // PolicyOR of two and of three branches (written by tpm2-tools' own trial runs).
  const other = await offlinePcr(pcr07);
  const third = policy().commandCode(CC.NV_Read).digest;
  for (const branches of [
    [ea, other],
    [ea, other, third],
  ]) {
    const offline = policy().or(branches).digest;
    const names = branches.map((b, i) => file(`branch${i}.dat`, b));
    const tools = await toolsTrial([['tpm2_policyor', [`sha256:${names.join(',')}`]]]);
    const trial = await sealTrial(async (s) => {
      await tpm.policyPCR(s, pcr7);
      await tpm.policyNV(s, { index: NV_INDEX, operandB: version });
      await tpm.policyOR(s, branches);
    });
    assert.equal(tools.toString('hex'), offline.toString('hex'));
    assert.equal(trial.toString('hex'), offline.toString('hex'));
  }
  // PolicyCommandCode after PolicyPCR, and PolicySecret(owner) with a policyRef.
  {
    const offline = new PolicyBuilder('sha256', await offlinePcr(pcr07)).commandCode(CC.NV_Read).digest;
    const tools = await toolsTrial([
      ['tpm2_policypcr', ['-l', 'sha256:0,7']],
      ['tpm2_policycommandcode', ['TPM2_CC_NV_Read']],
    ]);
    const trial = await sealTrial(async (s) => {
      await tpm.policyPCR(s, pcr07);
      await tpm.policyCommandCode(s, CC.NV_Read);
    });
    assert.equal(tools.toString('hex'), offline.toString('hex'));
    assert.equal(trial.toString('hex'), offline.toString('hex'));
  }
  {
    const ownerName = Buffer.from('40000001', 'hex');
    const ref = Buffer.from('a reference');
    const offline = policy().secret(ownerName, ref).digest;
    const tools = await toolsTrial([['tpm2_policysecret', ['-c', 'o', '-q', file('secret-ref.bin', ref)]]]);
    const trial = await sealTrial((s) =>
      tpm.policySecret(s, { authHandle: RH.OWNER, policyRef: ref }).then(() => {}),
    );
    assert.equal(tools.toString('hex'), offline.toString('hex'));
    assert.equal(trial.toString('hex'), offline.toString('hex'));
  }
});

test('the REFERENCE.md vectors from swtpm itself: PCR 7 zero after a power cycle, then extended with SHA256("hello")', async () => {
  await tpm.close();
  await t.swtpm.reboot();
  const pcr7: PcrSelection[] = [{ hash: 'sha256', pcrs: [7] }];
  const zero = '8b5682d81b29435d08d79278150611dc7e5923b2fefcce684a09577b40130a8b';
  const hello = '08d691cd8e2be6c4ac39afa543f135927c883820002c8a4883f4fba73decc964';
  assert.equal((await sealTrial((s) => tpm.policyPCR(s, pcr7))).toString('hex'), zero);
  assert.equal((await toolsTrial([['tpm2_policypcr', ['-l', 'sha256:7']]])).toString('hex'), zero);
  await tpm.pcrExtend(7, [{ hash: 'sha256', digest: hash('sha256', Buffer.from('hello')) }]);
  assert.equal((await sealTrial((s) => tpm.policyPCR(s, pcr7))).toString('hex'), hello);
  assert.equal((await toolsTrial([['tpm2_policypcr', ['-l', 'sha256:7']]])).toString('hex'), hello);
  assert.equal((await offlinePcr(pcr7)).toString('hex'), hello);
});
