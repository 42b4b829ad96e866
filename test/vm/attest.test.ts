/**
 * Attestation of a real Secure Boot boot: qemu (TCG) with OVMF's Secure Boot firmware, a
 * varstore Seal enrolled, a Seal-signed UKI (the test kernel with the status initrd) and a swtpm
 * whose identity key the host created and the device CA certified beforehand (its state is kept
 * across: the "factory" and the boot use the same TPM).
 *
 * The guest, once booted, sends the TPM the TPM2_Quote command Seal's client built on the host
 * for the verifier's nonce (the quote of PCRs 0-9 and 11 by the identity key) through the
 * kernel's /dev/tpmrm0, and prints the TPM's answer with the firmware's event log and PCRs. So the
 * quote is the TPM's, made while the firmware's measurements were in its PCRs. The host parses
 * the answer with Seal's client, makes the evidence document, and:
 *  - `seal attest verify` accepts it against `seal attest reference` of that UKI and varstore,
 *    reporting product and serial;
 *  - each of these fails naming the reason: another nonce (a replay), the same quote under a
 *    certificate of another CA (a key the device CA did not certify), an event edited (the db
 *    variable's data; the UKI's image digest — naming the event), a reference of another UKI
 *    (naming the first event that differs), a reference of another product.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { encodeEvidence } from '../../src/attest/index.ts';
import { Swtpm } from '../../src/machine/index.ts';
import { parseEventLog } from '../../src/measure/index.ts';
import { initPki, newDevice, parseCertificate } from '../../src/pki/index.ts';
import { createIdentity, IDENTITY_HANDLE, Tpm, type TpmTransport } from '../../src/tpm/index.ts';
import { OTHER_PRODUCT, PRODUCT } from '../helpers/attest.ts';
import { runSeal } from '../helpers/cli.ts';
import { testKernel } from '../helpers/efi.ts';
import { ReplayTransport } from '../helpers/tpm.ts';
import { bootUki, espWith, retries, statusInitrd, type UkiBoot } from '../helpers/uki-vm.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-attest-vm-'));
after(async () => {
  if (retries.count) console.error(`attest VM test: ${retries.count} crashed guest(s) booted again`);
  await rm(work, { recursive: true, force: true });
});
const f = (name: string) => join(work, name);
const PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11];
const nonce = randomBytes(32);

function seal(...args: string[]): string {
  const r = runSeal(args);
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** A transport that keeps the command it is given and answers nothing: the command's bytes. */
class CaptureTransport implements TpmTransport {
  readonly address = 'capture';
  command: Buffer | undefined;
  async send(command: Buffer): Promise<Buffer> {
    this.command = command;
    throw new Error('captured');
  }
  async close(): Promise<void> {}
}

let boot: UkiBoot;
let quote: Awaited<ReturnType<Tpm['quote']>>;
let akPublic: Awaited<ReturnType<typeof createIdentity>>['public'];

function verify(
  evidence: string,
  reference: string,
  n = nonce,
): { status: number; json: Record<string, unknown>; stderr: string } {
  writeFileSync(f('evidence.json'), evidence);
  const r = runSeal([
    'attest',
    'verify',
    f('evidence.json'),
    '--device-ca',
    f('pki/device-ca.pem'),
    '--reference',
    reference,
    '--nonce',
    n.toString('hex'),
    '--json',
  ]);
  return { status: r.status, json: JSON.parse(r.stdout), stderr: r.stderr };
}

let certDer: Buffer;
const evidenceWith = (changes: { eventLog?: Buffer; certificates?: Buffer[] } = {}) =>
  encodeEvidence({
    nonce,
    attestationKey: akPublic,
    quote: { attestBytes: quote.attestBytes, signature: quote.signature },
    bank: 'sha256',
    pcrs: new Map(PCRS.map((n) => [n, Buffer.from(boot.pcrs.sha256![n]!, 'hex')])),
    eventLog: changes.eventLog ?? boot.eventLog!,
    certificates: changes.certificates ?? [certDer],
  });

before(async () => {
  // The factory: an identity key in the device's TPM, certified by the device CA.
  await initPki(f('pki'));
  const state = f('tpm');
  mkdirSync(state);
  const factory = await Swtpm.start({ stateDir: state, mode: 'tcp' });
  try {
    const tpm = await Tpm.open(factory.address);
    const id = await createIdentity(tpm);
    akPublic = id.public;
    await tpm.close();
    const issued = await newDevice(f('pki'), { product: PRODUCT, serial: 'VM-0001', publicKey: id.pem });
    certDer = Buffer.from(parseCertificate(readFileSync(issued.certificate, 'utf8')).rawData);
  } finally {
    await factory.stop();
  }
  // The verifier's challenge, as the command the device will send its TPM.
  const capture = new CaptureTransport();
  await new Tpm(capture)
    .quote(IDENTITY_HANDLE, { qualifyingData: nonce, selections: [{ hash: 'sha256', pcrs: PCRS }] })
    .catch(() => {});
  writeFileSync(f('quote.cmd'), capture.command!);
  // The product: Secure Boot keys, a varstore, two signed UKIs with the status initrd.
  seal('secureboot', 'keys', f('keys'));
  seal(
    'secureboot',
    'enroll',
    '/usr/share/OVMF/OVMF_VARS_4M.fd',
    f('vars.fd'),
    '--pk',
    f('keys/PK.crt'),
    '--kek',
    f('keys/KEK.crt'),
    '--db',
    f('keys/db.crt'),
  );
  await statusInitrd(f('initrd.cpio'), {
    files: { 'quote.cmd': f('quote.cmd') },
    script: `
exec 3<>/dev/tpmrm0
cat quote.cmd >&3
dd bs=8192 count=1 <&3 2>/dev/null > /tmp/quote.rsp
exec 3<&-
echo SEAL-QUOTE-BEGIN; base64 /tmp/quote.rsp; echo SEAL-QUOTE-END
`,
  });
  for (const [name, cmdline] of [
    ['good.efi', 'console=ttyS0 quiet panic=-1'],
    ['other.efi', 'console=ttyS0 quiet panic=-1 init=/bin/sh'],
  ])
    seal(
      'uki',
      'build',
      '--linux',
      testKernel(),
      '--initrd',
      f('initrd.cpio'),
      '--cmdline',
      cmdline!,
      f(name!),
      '--key',
      f('keys/db.key'),
      '--cert',
      f('keys/db.crt'),
    );
  seal(
    'attest',
    'reference',
    '--product',
    PRODUCT,
    '--uki',
    f('good.efi'),
    '--vars',
    f('vars.fd'),
    f('ref.json'),
  );
  seal(
    'attest',
    'reference',
    '--product',
    PRODUCT,
    '--uki',
    f('other.efi'),
    '--vars',
    f('vars.fd'),
    f('ref-other.json'),
  );
  seal(
    'attest',
    'reference',
    '--product',
    OTHER_PRODUCT,
    '--uki',
    f('good.efi'),
    '--vars',
    f('vars.fd'),
    f('ref-product.json'),
  );
  // The boot.
  boot = await bootUki({ esps: [espWith(f('esp'), f('good.efi'))], varstore: f('vars.fd'), tpmState: state });
  assert.ok(boot.booted, boot.output.slice(-3000));
  assert.equal(boot.secureBoot, 1);
  const m = /SEAL-QUOTE-BEGIN\n([\s\S]*?)SEAL-QUOTE-END/.exec(boot.extra);
  assert.ok(m, `the guest printed no quote:\n${boot.output.slice(-3000)}`);
  const response = Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
  // The TPM's answer, parsed by Seal's client as if it had sent the command itself.
  quote = await new Tpm(new ReplayTransport([response])).quote(IDENTITY_HANDLE, {
    qualifyingData: nonce,
    selections: [{ hash: 'sha256', pcrs: PCRS }],
  });
});

test("a quote of a real Secure Boot boot by the device's TPM verifies against the UKI's reference", () => {
  assert.deepEqual(quote.attest.extraData, nonce);
  const r = verify(evidenceWith(), f('ref.json'));
  assert.equal(r.status, 0, `${r.stderr}\n${JSON.stringify(r.json)}`);
  assert.equal(r.json.verified, true);
  assert.equal(r.json.product, PRODUCT);
  assert.equal(r.json.serial, 'VM-0001');
  assert.equal(r.json.system, 'good.efi');
  // Every quoted PCR is explained by the firmware's log but PCR 8, which nothing extended.
  assert.deepEqual(r.json.unlogged, [8]);
  assert.equal(boot.pcrs.sha256![8], '00'.repeat(32));
  assert.ok((r.json.events as number) > 20);
});

test('a replay (another nonce), a key not certified by the device CA, another product are refused', async () => {
  const replay = verify(evidenceWith(), f('ref.json'), randomBytes(32));
  assert.equal(replay.status, 1);
  assert.equal(replay.json.code, 'ATTEST_NONCE');
  await initPki(f('foreign-pki'));
  const foreign = await newDevice(f('foreign-pki'), {
    product: PRODUCT,
    serial: 'VM-0001',
    publicKey: (await import('../../src/tpm/index.ts')).publicPem(akPublic),
  });
  const foreignDer = Buffer.from(parseCertificate(readFileSync(foreign.certificate, 'utf8')).rawData);
  const uncertified = verify(evidenceWith({ certificates: [foreignDer] }), f('ref.json'));
  assert.equal(uncertified.json.code, 'ATTEST_UNTRUSTED_KEY');
  assert.match(uncertified.json.reason as string, /does not chain to the trusted CA/);
  const product = verify(evidenceWith(), f('ref-product.json'));
  assert.equal(product.json.code, 'ATTEST_PRODUCT');
});

test('an edited event of the real log is refused, naming it', () => {
  const log = boot.eventLog!;
  const events = parseEventLog(log).events;
  const db = events.find(
    (e) => e.pcr === 7 && e.type === 0x80000001 && e.data.includes(Buffer.from('d\0b\0')),
  )!;
  const data = Buffer.from(log);
  data[log.indexOf(db.data) + db.data.length - 1]! ^= 1;
  const r1 = verify(evidenceWith({ eventLog: data }), f('ref.json'));
  assert.equal(r1.json.code, 'ATTEST_EVENT_LOG');
  assert.equal((r1.json.event as { index: number }).index, db.index);
  const app = events.find((e) => e.pcr === 4 && e.type === 0x80000003)!;
  const digest = Buffer.from(log);
  digest[log.indexOf(app.digests.sha256!)]! ^= 1;
  const r2 = verify(evidenceWith({ eventLog: digest }), f('ref.json'));
  assert.equal(r2.json.code, 'ATTEST_EVENT_LOG');
  assert.match(r2.json.reason as string, /does not replay to the quoted PCR 4/);
  assert.equal((r2.json.event as { index: number }).index, app.index);
});

test('the PCRs of a UKI not in the reference are refused, naming the first event that differs', () => {
  const r = verify(evidenceWith(), f('ref-other.json'));
  assert.equal(r.status, 1);
  assert.equal(r.json.code, 'ATTEST_REFERENCE_MISMATCH');
  const event = r.json.event as { pcr: number; type: string; description: string };
  assert.equal(event.pcr, 4);
  assert.equal(event.type, 'EV_EFI_BOOT_SERVICES_APPLICATION');
  assert.match(
    r.json.reason as string,
    /system "other\.efi" expects EV_EFI_BOOT_SERVICES_APPLICATION the UKI other\.efi/,
  );
});
