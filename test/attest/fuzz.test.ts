/**
 * Fuzzing what a verifier reads from devices and files: evidence documents (their JSON, and the
 * bytes inside — TPM structures, signatures, event logs, certificates, binding keys), references
 * and released-secret answers. Thousands of mutated inputs; each must verify, or be refused with
 * an AttestError — never another error, never a hang. Mutated event logs inside otherwise valid
 * evidence reach the replay and the reference comparison, not just the parser.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  AttestError,
  ChainCache,
  parseEvidence,
  parseReference,
  parseSecret,
  quoteEvidence,
  type Reference,
  verifyEvidence,
} from '../../src/attest/index.ts';
import { type Certificate, parseCertificate } from '../../src/pki/index.ts';
import { bootEvents, buildArtifacts, certifyDevice, playBoot } from '../helpers/attest.ts';
import { startTestTpm, type TestTpm } from '../helpers/tpm.ts';
import { prng } from '../helpers/trees.ts';

const work = mkdtempSync(join(tmpdir(), 'seal-attest-fuzz-'));
let t: TestTpm;
let evidence: string;
let referenceText: string;
let reference: Reference;
let deviceCa: Certificate;
const nonce = randomBytes(32);

before(async () => {
  const artifacts = await buildArtifacts(work);
  t = await startTestTpm();
  const device = await certifyDevice(t.tpm, artifacts.pki, 'SN-FUZZ');
  const log = await playBoot(t.tpm, await bootEvents(artifacts.good, artifacts.vars));
  const quoted = await quoteEvidence(t.tpm, { nonce, certificates: [device.der], eventLog: log, bind: true });
  await quoted.binding!.release();
  evidence = quoted.evidence;
  referenceText = readFileSync(artifacts.reference, 'utf8');
  reference = parseReference(referenceText);
  deviceCa = parseCertificate(readFileSync(artifacts.deviceCa, 'utf8'));
});

after(async () => {
  await t?.stop();
  rmSync(work, { recursive: true, force: true });
});

/** Byte mutations: flips, extreme size fields, truncation, extension, splices. */
function mutateBytes(data: Buffer, random: () => number): Buffer {
  const out = Buffer.from(data);
  const pos = () => Math.floor(random() * Math.max(1, out.length));
  const kind = random();
  if (out.length === 0) return Buffer.from([Math.floor(random() * 256)]);
  if (kind < 0.4) {
    for (let i = 0, n = 1 + Math.floor(random() * 4); i < n; i++) out[pos()] = Math.floor(random() * 256);
    return out;
  }
  if (kind < 0.6 && out.length >= 4) {
    const at = Math.min(pos(), out.length - 4);
    const values = [0, 1, 0xff, 0xffff, 0xffffffff, out.length, out.length + 1, 0x80000000];
    const v = values[Math.floor(random() * values.length)]!;
    if (random() < 0.5) out.writeUInt32LE(v >>> 0, at);
    else out.writeUInt32BE(v >>> 0, at);
    return out;
  }
  if (kind < 0.7 && out.length >= 2) {
    out.writeUInt16BE(Math.floor(random() * 0x10000), Math.min(pos(), out.length - 2));
    return out;
  }
  if (kind < 0.8) return out.subarray(0, pos());
  if (kind < 0.9) return Buffer.concat([out, randomBytes(1 + Math.floor(random() * 64))]);
  const a = pos();
  const b = pos();
  return Buffer.concat([out.subarray(0, Math.min(a, b)), out.subarray(Math.max(a, b))]);
}

type Json = Record<string, unknown>;

/** The base64 fields of an evidence document, as [object, key] pairs. */
function binaryFields(doc: Json): [Json, string][] {
  const tpm = doc.tpm as Json;
  const fields: [Json, string][] = [
    [tpm, 'attestationKey'],
    [tpm, 'quote'],
    [tpm, 'signature'],
    [doc, 'eventLog'],
  ];
  const certs = doc.certificates as unknown as Json;
  fields.push([certs, '0']);
  const binding = doc.binding as Json;
  for (const key of ['public', 'certify', 'signature']) fields.push([binding, key]);
  return fields;
}

/** JSON-level mutations: values of the wrong type or size, keys removed. */
function mutateJson(doc: Json, random: () => number): void {
  const paths: [Json, string][] = [];
  const walk = (o: Json) => {
    for (const [k, v] of Object.entries(o)) {
      paths.push([o, k]);
      if (v && typeof v === 'object') walk(v as Json);
    }
  };
  walk(doc);
  const [o, k] = paths[Math.floor(random() * paths.length)]!;
  const replacements: unknown[] = [
    undefined,
    null,
    0,
    -1,
    1e300,
    '',
    'zz',
    '00',
    'AAAA',
    [],
    {},
    'A'.repeat(5000),
    { sha256: {} },
    [1, 2, 3],
    true,
  ];
  const r = replacements[Math.floor(random() * replacements.length)];
  if (r === undefined) delete o[k];
  else o[k] = r;
}

async function outcome(text: string, label: string, chains?: ChainCache): Promise<'verified' | 'refused'> {
  try {
    await verifyEvidence(parseEvidence(text), { deviceCa, reference, nonce, ...(chains ? { chains } : {}) });
    return 'verified';
  } catch (e) {
    assert.ok(e instanceof AttestError, `${label}: untyped ${(e as Error)?.stack ?? e}`);
    return 'refused';
  }
}

test('the unmutated evidence verifies (the fuzzing starts from a good document)', async () => {
  assert.equal(await outcome(evidence, 'seed'), 'verified');
});

test('mutated bytes inside evidence (TPM structures, signatures, event log, certificate, binding) are verified or refused with AttestError', {
  timeout: 300_000,
}, async () => {
  const random = prng(1801);
  const chains = new ChainCache();
  const counts = { verified: 0, refused: 0 };
  for (let i = 0; i < 3000; i++) {
    const doc = JSON.parse(evidence) as Json;
    const fields = binaryFields(doc);
    // The event log half the time: it is the largest and most structured.
    const [o, k] = random() < 0.5 ? [doc, 'eventLog'] : fields[Math.floor(random() * fields.length)]!;
    o[k] = mutateBytes(Buffer.from(o[k] as string, 'base64'), random).toString('base64');
    counts[await outcome(JSON.stringify(doc), `byte mutation ${i} of ${k}`, chains)]++;
  }
  // Mutations that leave the verdict unchanged exist (trailing bytes of an event's data that no
  // check reads are rare), but nearly every one must be refused.
  assert.ok(counts.refused > 2900, JSON.stringify(counts));
});

test('mutated evidence JSON is refused with AttestError', { timeout: 120_000 }, async () => {
  const random = prng(1802);
  let refused = 0;
  for (let i = 0; i < 2000; i++) {
    const doc = JSON.parse(evidence) as Json;
    for (let n = 1 + Math.floor(random() * 3); n > 0; n--) mutateJson(doc, random);
    if ((await outcome(JSON.stringify(doc), `JSON mutation ${i}`)) === 'refused') refused++;
  }
  assert.ok(refused > 1500, `${refused} refused`);
  // Raw text mutations of the document itself.
  const text = Buffer.from(evidence);
  for (let i = 0; i < 500; i++)
    await outcome(mutateBytes(text, random).toString('latin1'), `text mutation ${i}`);
});

test('mutated references and released-secret answers give typed errors or a parse', () => {
  const random = prng(1803);
  for (let i = 0; i < 2000; i++) {
    const doc = JSON.parse(referenceText) as Json;
    mutateJson(doc, random);
    try {
      parseReference(JSON.stringify(doc));
    } catch (e) {
      assert.ok(e instanceof AttestError && e.code === 'ATTEST_REFERENCE', String(e));
    }
  }
  const answer = {
    type: 'seal-attest-secret',
    version: 1,
    name: 'x',
    nonce: 'ab'.repeat(32),
    credentialBlob: 'AAAA',
    encryptedSecret: 'AAAA',
    ciphertext: 'AAAA',
  };
  assert.equal(parseSecret(answer).name, 'x');
  for (let i = 0; i < 2000; i++) {
    const doc = JSON.parse(JSON.stringify(answer)) as Json;
    mutateJson(doc, random);
    try {
      parseSecret(doc);
    } catch (e) {
      assert.ok(e instanceof AttestError && e.code === 'ATTEST_PROTOCOL', String(e));
    }
  }
});
