/**
 * Evidence and its verification against swtpm: a boot of a signed UKI played into the TPM's
 * PCRs (the events `seal pcr predict` gives, as OVMF logs them), quoted by the TPM-resident
 * identity key certified by the device CA. The good evidence verifies (library and CLI), and
 * tpm2_checkquote accepts the quote it carries; each tampering is refused with its own code,
 * naming the reason: another nonce, a key the device CA did not certify (another CA, another key
 * under the right CA), an edited event (digest, or data), a UKI not in the reference (naming the
 * first event that differs), a device of another product, PCR values that are not the quoted
 * ones, a flipped signature, a non-restricted key.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  AttestError,
  type AttestErrorCode,
  type Evidence,
  parseEvidence,
  parseReference,
  quoteEvidence,
  type Reference,
  verifyEvidence,
} from '../../src/attest/index.ts';
import { type Certificate, initPki, newDevice, parseCertificate } from '../../src/pki/index.ts';
import { identityPublic, OBJECT, publicBytes, publicPem, Reader, readPublic } from '../../src/tpm/index.ts';
import {
  type AttestFixture,
  bootEvents,
  buildArtifacts,
  certifyDevice,
  OTHER_PRODUCT,
  PRODUCT,
  playBoot,
} from '../helpers/attest.ts';
import { runSeal } from '../helpers/cli.ts';
import { startTestTpm, type TestTpm } from '../helpers/tpm.ts';

const work = mkdtempSync(join(tmpdir(), 'seal-attest-'));
const f = (name: string) => join(work, name);
let fx: AttestFixture;
let t: TestTpm;
let deviceCa: Certificate;
let reference: Reference;
let certDer: Buffer;
let log: Buffer;
const nonce = randomBytes(32);
let good: string;

before(async () => {
  const artifacts = await buildArtifacts(work);
  t = await startTestTpm();
  const device = await certifyDevice(t.tpm, artifacts.pki, 'SN-0001');
  fx = { ...artifacts, deviceCert: device.cert, serial: 'SN-0001' };
  certDer = device.der;
  deviceCa = parseCertificate(readFileSync(fx.deviceCa, 'utf8'));
  reference = parseReference(readFileSync(fx.reference), fx.reference);
  log = await playBoot(t.tpm, await bootEvents(fx.good, fx.vars));
  good = (await quoteEvidence(t.tpm, { nonce, certificates: [certDer], eventLog: log })).evidence;
  writeFileSync(f('good.json'), good);
});

after(async () => {
  await t?.stop();
  rmSync(work, { recursive: true, force: true });
});

/** The evidence document's JSON, as far as the tests edit it. */
interface EvidenceJson {
  type: unknown;
  version: unknown;
  tpm: {
    attestationKey: string;
    quote: string;
    signature: string;
    pcrs: Record<string, Record<string, string>>;
  };
  eventLog: string;
  certificates: string[];
}

/** The evidence document as JSON, edited by `edit`, parsed again. */
function edited(edit: (doc: EvidenceJson) => void, text = good): Evidence {
  const doc = JSON.parse(text);
  edit(doc);
  return parseEvidence(JSON.stringify(doc));
}

async function refusal(
  evidence: Evidence,
  code: AttestErrorCode,
  options: { reference?: Reference; nonce?: Buffer } = {},
) {
  const error = await verifyEvidence(evidence, {
    deviceCa,
    reference: options.reference ?? reference,
    nonce: options.nonce ?? nonce,
  }).then(
    () => assert.fail(`verified; expected ${code}`),
    (e: unknown) => e,
  );
  assert.ok(error instanceof AttestError, String(error));
  assert.equal(error.code, code, error.message);
  if (process.env.SHOW) console.log(`${code}: ${error.message}`);
  return error;
}

test('evidence of a booted reference UKI verifies: product, serial and the matched system are reported', async () => {
  const verdict = await verifyEvidence(parseEvidence(good), { deviceCa, reference, nonce });
  assert.equal(verdict.product, PRODUCT);
  assert.equal(verdict.serial, 'SN-0001');
  assert.equal(verdict.system, 'good.efi');
  assert.deepEqual(Object.keys(verdict.pcrs).map(Number), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11]);
  // PCRs 8 and 9 were not extended: zeros, and no event explains them.
  assert.deepEqual(verdict.unlogged, [8, 9]);
  assert.equal(verdict.pcrs[8], '00'.repeat(32));
  const r = runSeal([
    'attest',
    'verify',
    f('good.json'),
    '--device-ca',
    fx.deviceCa,
    '--reference',
    fx.reference,
    '--nonce',
    nonce.toString('hex'),
  ]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`verified: product ${PRODUCT}, serial SN-0001, booted "good.efi"`));
  const json = runSeal([
    'attest',
    'verify',
    f('good.json'),
    '--device-ca',
    fx.deviceCa,
    '--reference',
    fx.reference,
    '--nonce',
    nonce.toString('hex'),
    '--json',
  ]);
  const result = JSON.parse(json.stdout);
  assert.equal(result.verified, true);
  assert.equal(result.serial, 'SN-0001');
});

test('tpm2_checkquote accepts the quote, signature and nonce the evidence carries', async () => {
  const doc = JSON.parse(good);
  const id = await identityPublic(t.tpm);
  writeFileSync(join(t.dir, 'ak.pem'), publicPem(id!.public));
  writeFileSync(join(t.dir, 'quote.bin'), Buffer.from(doc.tpm.quote, 'base64'));
  writeFileSync(join(t.dir, 'quote.sig'), Buffer.from(doc.tpm.signature, 'base64'));
  const out = await t.tools('tpm2_checkquote', [
    '-u',
    'ak.pem',
    '-m',
    'quote.bin',
    '-s',
    'quote.sig',
    '-g',
    'sha256',
    '-q',
    nonce.toString('hex'),
  ]);
  assert.match(out.toString(), /pcrs:|sig:/);
  await assert.rejects(
    t.tools('tpm2_checkquote', [
      '-u',
      'ak.pem',
      '-m',
      'quote.bin',
      '-s',
      'quote.sig',
      '-g',
      'sha256',
      '-q',
      'ab'.repeat(32),
    ]),
  );
});

/** Power-cycles the TPM (PCRs back to their start values), as a reboot of the device would. */
async function reboot(): Promise<void> {
  // Seal's client reconnects by itself on its next command.
  await t.tpm.close();
  await t.swtpm.reboot();
}

test('another nonce: a replayed quote is refused', async () => {
  const e = await refusal(parseEvidence(good), 'ATTEST_NONCE', { nonce: randomBytes(32) });
  assert.match(e.message, /answers nonce .* not this verifier's/);
  const r = runSeal([
    'attest',
    'verify',
    f('good.json'),
    '--device-ca',
    fx.deviceCa,
    '--reference',
    fx.reference,
    '--nonce',
    'ab'.repeat(32),
    '--json',
  ]);
  assert.equal(r.status, 1);
  assert.equal(JSON.parse(r.stdout).code, 'ATTEST_NONCE');
  assert.match(r.stderr, /\[ATTEST_NONCE\]/);
});

test('a quote by a key the device CA did not certify is refused', async () => {
  // The same TPM key certified by another CA (same CA name, other key).
  const foreign = f('foreign-pki');
  await initPki(foreign);
  const id = await identityPublic(t.tpm);
  const issued = await newDevice(foreign, { product: PRODUCT, serial: 'SN-0001', publicKey: id!.pem });
  const foreignDer = Buffer.from(parseCertificate(readFileSync(issued.certificate, 'utf8')).rawData);
  const e1 = await refusal(
    edited((d) => {
      d.certificates = [foreignDer.toString('base64')];
    }),
    'ATTEST_UNTRUSTED_KEY',
  );
  assert.match(e1.message, /does not chain to the trusted CA/);
  // A certificate of the right CA, for another key: the quote is not by the certified key.
  const other = await newDevice(fx.pki, { product: PRODUCT, serial: 'SN-OTHER' });
  const otherDer = Buffer.from(parseCertificate(readFileSync(other.certificate, 'utf8')).rawData);
  const e2 = await refusal(
    edited((d) => {
      d.certificates = [otherDer.toString('base64')];
    }),
    'ATTEST_UNTRUSTED_KEY',
  );
  assert.match(e2.message, /not the key certified by/);
});

test('an event log with one event edited is refused: a digest (naming the PCR and the event), or the data', async () => {
  const doc = JSON.parse(good);
  const bytes = Buffer.from(doc.eventLog, 'base64');
  const parsed = (await import('../../src/measure/index.ts')).parseEventLog(bytes);
  // The digest of the UKI's image event (PCR 4) changed.
  const app = parsed.events.find((e) => e.type === 0x80000003)!;
  const changed = Buffer.from(bytes);
  const at = bytes.indexOf(app.digests.sha256!);
  changed[at]! ^= 1;
  const e1 = await refusal(
    edited((d) => {
      d.eventLog = changed.toString('base64');
    }),
    'ATTEST_EVENT_LOG',
  );
  assert.match(e1.message, /does not replay to the quoted PCR 4/);
  assert.equal(e1.event?.index, app.index);
  // The data of the db variable event (PCR 7) changed, its digest kept.
  const db = parsed.events.find(
    (e) => e.pcr === 7 && e.type === 0x80000001 && e.data.includes(Buffer.from('d\0b\0', 'latin1')),
  )!;
  const changedData = Buffer.from(bytes);
  const dataAt = bytes.indexOf(db.data);
  changedData[dataAt + db.data.length - 1]! ^= 1;
  const e2 = await refusal(
    edited((d) => {
      d.eventLog = changedData.toString('base64');
    }),
    'ATTEST_EVENT_LOG',
  );
  assert.match(
    e2.message,
    new RegExp(
      `event ${db.index} \\(PCR 7, EV_EFI_VARIABLE_DRIVER_CONFIG, db .*does not hash to its sha256 digest`,
    ),
  );
  // A truncated log: the parser's reason.
  const e3 = await refusal(
    edited((d) => {
      d.eventLog = bytes.subarray(0, bytes.length - 3).toString('base64');
    }),
    'ATTEST_EVENT_LOG',
  );
  assert.match(e3.message, /runs past the end/);
});

test('the boot of a UKI not in the reference is refused, naming the first event that differs; a reference with both accepts it', async () => {
  await reboot();
  const otherLog = await playBoot(t.tpm, await bootEvents(fx.other, fx.vars));
  const n = randomBytes(32);
  const evidence = (await quoteEvidence(t.tpm, { nonce: n, certificates: [certDer], eventLog: otherLog }))
    .evidence;
  const e = await refusal(parseEvidence(evidence), 'ATTEST_REFERENCE_MISMATCH', { nonce: n });
  // The UKI's image digest (PCR 4) is the first measurement that differs in log order.
  assert.equal(e.event?.pcr, 4);
  assert.equal(e.event?.type, 'EV_EFI_BOOT_SERVICES_APPLICATION');
  assert.match(
    e.message,
    /differs from the reference: system "good.efi" expects EV_EFI_BOOT_SERVICES_APPLICATION/,
  );
  writeFileSync(f('other.json'), evidence);
  const r = runSeal([
    'attest',
    'verify',
    f('other.json'),
    '--device-ca',
    fx.deviceCa,
    '--reference',
    fx.reference,
    '--nonce',
    n.toString('hex'),
    '--json',
  ]);
  assert.equal(r.status, 1);
  const out = JSON.parse(r.stdout);
  assert.equal(out.code, 'ATTEST_REFERENCE_MISMATCH');
  assert.equal(out.event.pcr, 4);
  // Accepted once the reference also names other.efi.
  const both = f('both.json');
  const made = runSeal([
    'attest',
    'reference',
    '--product',
    PRODUCT,
    '--uki',
    fx.other,
    '--vars',
    fx.vars,
    '--merge',
    fx.reference,
    both,
  ]);
  assert.equal(made.status, 0, made.stderr);
  const verdict = await verifyEvidence(parseEvidence(evidence), {
    deviceCa,
    reference: parseReference(readFileSync(both)),
    nonce: n,
  });
  assert.equal(verdict.system, 'other.efi');
  // Only PCR 11 governed: the first difference is then a PCR 11 section.
  const only11 = f('ref11.json');
  assert.equal(
    runSeal([
      'attest',
      'reference',
      '--product',
      PRODUCT,
      '--uki',
      fx.good,
      '--vars',
      fx.vars,
      '--pcrs',
      '11',
      only11,
    ]).status,
    0,
  );
  const e11 = await refusal(parseEvidence(evidence), 'ATTEST_REFERENCE_MISMATCH', {
    nonce: n,
    reference: parseReference(readFileSync(only11)),
  });
  assert.equal(e11.event?.pcr, 11);
  assert.match(e11.message, /\.cmdline contents/);
  // Back to the good boot for the tests that follow.
  await reboot();
  await playBoot(t.tpm, await bootEvents(fx.good, fx.vars));
});

test('a device of another product is refused', async () => {
  const e = await refusal(parseEvidence(good), 'ATTEST_PRODUCT', {
    reference: parseReference(readFileSync(fx.otherProductReference)),
  });
  assert.match(e.message, new RegExp(`is of product ${PRODUCT}, not ${OTHER_PRODUCT}`));
});

test('PCR values that are not the quoted ones, a flipped signature, another attestation key are refused', async () => {
  await refusal(
    edited((d) => {
      d.tpm.pcrs.sha256['7'] = 'ff'.repeat(32);
    }),
    'ATTEST_PCR_VALUES',
  );
  await refusal(
    edited((d) => {
      delete d.tpm.pcrs.sha256['7'];
    }),
    'ATTEST_PCR_VALUES',
  );
  const sig = Buffer.from(JSON.parse(good).tpm.signature, 'base64');
  sig[sig.length - 5]! ^= 0x10;
  await refusal(
    edited((d) => {
      d.tpm.signature = sig.toString('base64');
    }),
    'ATTEST_SIGNATURE',
  );
  const quote = Buffer.from(JSON.parse(good).tpm.quote, 'base64');
  quote[quote.length - 1]! ^= 1;
  await refusal(
    edited((d) => {
      d.tpm.quote = quote.toString('base64');
    }),
    'ATTEST_SIGNATURE',
  );
  // The same key described as unrestricted: its certificate's key, but not a TPM attestation key.
  const ak = readPublic(new Reader(Buffer.from(JSON.parse(good).tpm.attestationKey, 'base64'), 'ak'));
  const loose = { ...ak, attributes: ak.attributes & ~OBJECT.restricted };
  const e = await refusal(
    edited((d) => {
      d.tpm.attestationKey = publicBytes(loose).toString('base64');
    }),
    'ATTEST_UNTRUSTED_KEY',
  );
  assert.match(e.message, /not a TPM-resident restricted signing key/);
});

test('malformed evidence is refused as ATTEST_EVIDENCE naming the field', () => {
  const cases: [(d: EvidenceJson) => void, RegExp][] = [
    [(d) => (d.version = 2), /version 2 is not one Seal reads/],
    [(d) => (d.type = 'x'), /type is "x"/],
    [(d) => (d.tpm.quote = 'not base64!'), /tpm.quote attestation is not standard base64/],
    [(d) => (d.tpm.pcrs = { md5: {} }), /bank "md5"/],
    [(d) => (d.certificates = []), /certificates is not a list/],
    [
      (d) => (d.tpm.attestationKey = Buffer.from([0, 1, 0]).toString('base64')),
      /attestationKey is not a TPM structure/,
    ],
  ];
  for (const [edit, message] of cases)
    assert.throws(
      () => edited(edit),
      (e: unknown) => e instanceof AttestError && e.code === 'ATTEST_EVIDENCE' && message.test(e.message),
    );
  assert.throws(
    () => parseEvidence('{'),
    (e: unknown) => e instanceof AttestError && e.code === 'ATTEST_EVIDENCE',
  );
});

test('seal attest quote writes evidence that seal attest verify accepts; an unreadable event log and a quote without a governed PCR are refused', async () => {
  writeFileSync(f('log.bin'), log);
  await t.tpm.close();
  const n = randomBytes(16).toString('hex');
  const q = runSeal([
    'attest',
    'quote',
    '--tpm',
    t.swtpm.address,
    '--nonce',
    n,
    '--cert',
    fx.deviceCert,
    '--event-log',
    f('log.bin'),
    '--pcrs',
    '0-7,11',
    f('cli.json'),
  ]);
  assert.equal(q.status, 0, q.stderr);
  const v = runSeal([
    'attest',
    'verify',
    f('cli.json'),
    '--device-ca',
    fx.deviceCa,
    '--reference',
    fx.reference,
    '--nonce',
    n,
  ]);
  assert.equal(v.status, 0, v.stderr);
  const missing = runSeal([
    'attest',
    'quote',
    '--tpm',
    t.swtpm.address,
    '--nonce',
    n,
    '--cert',
    fx.deviceCert,
    '--event-log',
    f('nope.bin'),
    f('x.json'),
  ]);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /cannot read the event log .*nope\.bin.*\[ATTEST_EVENT_LOG\]/);
  // Quoting PCRs the reference governs is required: a quote without PCR 11 is refused.
  const n2 = randomBytes(32);
  const partial = (
    await quoteEvidence(t.tpm, { nonce: n2, certificates: [certDer], eventLog: log, pcrs: [0, 4, 7] })
  ).evidence;
  const e = await refusal(parseEvidence(partial), 'ATTEST_REFERENCE_MISMATCH', { nonce: n2 });
  assert.match(e.message, /does not cover PCR 11/);
});
