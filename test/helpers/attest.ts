/**
 * Attestation fixtures on the host: a device PKI, a TPM-resident identity key in a swtpm
 * certified by the device CA, signed UKIs and a Secure Boot varstore, and a boot "played" into
 * the swtpm — the events `seal pcr predict` says OVMF and systemd-stub measure for a UKI (plus
 * firmware events of the other PCRs) extended into its PCRs and written as a TCG2 event log.
 * The VM test (test/vm/attest.test.ts) quotes a real firmware boot instead.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EV, predictPcrs } from '../../src/measure/index.ts';
import { initPki, newDevice, parseCertificate } from '../../src/pki/index.ts';
import { createIdentity, type Tpm } from '../../src/tpm/index.ts';
import { runSeal } from './cli.ts';
import { testKernel } from './efi.ts';

export const PRODUCT = '3a1f5c2e-8b4d-4e6f-9a7b-1c2d3e4f5a6b';
export const OTHER_PRODUCT = '9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a';

export interface BootEvent {
  pcr: number;
  type: number;
  /** SHA-256 digest. */
  digest: Buffer;
  data: Buffer;
}

const TYPES = new Map<string, number>(Object.entries(EV).map(([name, code]) => [`EV_${name}`, code]));
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest();

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

/** A crypto-agile TCG2 event log with one bank (SHA-256), as firmware writes it. */
export function encodeEventLog(events: BootEvent[]): Buffer {
  const spec = Buffer.concat([
    Buffer.from('Spec ID Event03\0', 'latin1'),
    u32(0), // platform class
    Buffer.from([0, 2, 0, 2]), // version minor, major, errata, uintn size
    u32(1),
    Buffer.from([0x0b, 0x00, 32, 0]), // TPM_ALG_SHA256, 32 bytes
    Buffer.from([0]), // vendor info size
  ]);
  const parts = [u32(0), u32(EV.NO_ACTION), Buffer.alloc(20), u32(spec.length), spec];
  for (const e of events)
    parts.push(
      u32(e.pcr),
      u32(e.type),
      u32(1),
      Buffer.from([0x0b, 0x00]),
      e.digest,
      u32(e.data.length),
      e.data,
    );
  return Buffer.concat(parts);
}

const separator = (pcr: number): BootEvent => ({
  pcr,
  type: EV.SEPARATOR,
  digest: sha256(Buffer.alloc(4)),
  data: Buffer.alloc(4),
});

/** The measurements of booting `uki` (signed, with `vars`): firmware events, PCR 7, 4 and 11 as predicted. */
export async function bootEvents(uki: string, vars: string): Promise<BootEvent[]> {
  const prediction = await predictPcrs({ uki, varstore: vars, banks: ['sha256'], pcrs: [4, 7, 11] });
  const crtm = Buffer.from([0, 0]);
  const blob = Buffer.alloc(16);
  blob.writeBigUInt64LE(0x820000n, 0);
  blob.writeBigUInt64LE(0xe0000n, 8);
  const events: BootEvent[] = [
    { pcr: 0, type: EV.S_CRTM_VERSION, digest: sha256(crtm), data: crtm },
    {
      pcr: 0,
      type: EV.EFI_PLATFORM_FIRMWARE_BLOB,
      digest: sha256(Buffer.from('firmware volume')),
      data: blob,
    },
  ];
  for (const e of prediction.events) {
    const type = TYPES.get(e.type);
    if (type === undefined) throw new Error(`unknown event type ${e.type}`);
    // Without data of its own: an image load event (location, length, link time, no device
    // path), or the section name systemd-stub logs with a section's contents.
    const data =
      e.data ??
      (type === EV.IPL ? Buffer.from(`${e.description.split(' ')[0]}\0`, 'latin1') : Buffer.alloc(32));
    events.push({ pcr: e.pcr, type, digest: e.digests.sha256!, data });
    if (e.pcr === 4 && type === EV.SEPARATOR)
      for (const pcr of [0, 1, 2, 3, 5, 6]) events.push(separator(pcr));
  }
  const exit = Buffer.from('Exit Boot Services Invocation', 'latin1');
  events.push({ pcr: 5, type: EV.EFI_ACTION, digest: sha256(exit), data: exit });
  return events;
}

/** Extends `events` into the TPM's SHA-256 PCRs (after a reset, as a boot would) and returns their log. */
export async function playBoot(tpm: Tpm, events: BootEvent[]): Promise<Buffer> {
  for (const e of events) await tpm.pcrExtend(e.pcr, [{ hash: 'sha256', digest: e.digest }]);
  return encodeEventLog(events);
}

export interface AttestFixture {
  work: string;
  pki: string;
  deviceCa: string;
  /** The identity key's certificate (PEM), product PRODUCT, serial `serial`. */
  deviceCert: string;
  serial: string;
  vars: string;
  /** Signed UKIs: `good.efi` (in the reference) and `other.efi` (another command line). */
  good: string;
  other: string;
  /** References: `good.efi` only for PRODUCT; the same for OTHER_PRODUCT. */
  reference: string;
  otherProductReference: string;
}

function seal(...args: string[]): string {
  const r = runSeal(args);
  if (r.status !== 0) throw new Error(`seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** Keys, varstore, UKIs and references in `work` (made once per test file: the UKIs take seconds). */
export async function buildArtifacts(work: string): Promise<Omit<AttestFixture, 'deviceCert' | 'serial'>> {
  const f = (name: string) => join(work, name);
  const pki = f('pki');
  await initPki(pki);
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
  for (const [name, cmdline] of [
    ['good.efi', 'console=ttyS0 quiet'],
    ['other.efi', 'console=ttyS0 quiet init=/bin/sh'],
  ] as const)
    seal(
      'uki',
      'build',
      '--linux',
      testKernel(),
      '--cmdline',
      cmdline,
      f(name),
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
    OTHER_PRODUCT,
    '--uki',
    f('good.efi'),
    '--vars',
    f('vars.fd'),
    f('ref-other-product.json'),
  );
  return {
    work,
    pki,
    deviceCa: join(pki, 'device-ca.pem'),
    vars: f('vars.fd'),
    good: f('good.efi'),
    other: f('other.efi'),
    reference: f('ref.json'),
    otherProductReference: f('ref-other-product.json'),
  };
}

/** Creates the TPM's identity key and certifies it with the fixture's device CA. */
export async function certifyDevice(
  tpm: Tpm,
  pki: string,
  serial: string,
  product = PRODUCT,
): Promise<{ cert: string; der: Buffer }> {
  const id = await createIdentity(tpm);
  const issued = await newDevice(pki, { product, serial, publicKey: id.pem });
  return {
    cert: issued.certificate,
    der: Buffer.from(parseCertificate(readFileSync(issued.certificate, 'utf8')).rawData),
  };
}
