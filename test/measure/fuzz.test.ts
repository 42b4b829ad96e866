/**
 * Fuzzing the readers of untrusted bytes of the confidential-VM code: firmware footer tables and
 * SEV metadata, SNP attestation reports and AMD certificates. Every outcome must be a result or
 * one of Seal's typed errors — never a crash, another error, or a hang.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { isSealError } from '../../src/errors.ts';
import {
  Firmware,
  launchDigest,
  parseSnpReport,
  readCertificates,
  tdxMrtd,
  tdxSections,
  verifyAmdChain,
  verifySnpReport,
} from '../../src/measure/index.ts';
import { prng } from '../helpers/trees.ts';
import { SNP, SSM } from './helpers.ts';

/** Mutations aimed at the end of `data`, where footer tables and metadata live. */
function mutateTail(data: Buffer, random: () => number, span: number): Buffer {
  const out = Buffer.from(data);
  const pos = () => out.length - 1 - Math.floor(random() * Math.min(span, out.length));
  const kind = random();
  if (kind < 0.4) {
    for (let i = 0, n = 1 + Math.floor(random() * 6); i < n; i++) out[pos()] = Math.floor(random() * 256);
  } else if (kind < 0.7) {
    // a size, offset or count field set to an extreme
    const at = Math.max(0, pos() - 4);
    const values = [
      0,
      1,
      17,
      18,
      0xffff,
      0xffffffff,
      0x1000,
      out.length,
      out.length + 1,
      Math.floor(random() * 2 ** 32),
    ];
    out.writeUInt32LE(values[Math.floor(random() * values.length)] as number, at);
  } else if (kind < 0.85) {
    const at = Math.max(0, pos() - 2);
    out.writeUInt16LE(Math.floor(random() * 0x10000), at);
  } else {
    // shift the table around by whole pages or a few bytes (still whole pages in total)
    return Buffer.concat([out.subarray(Math.floor(random() * 64)), Buffer.alloc(0)]);
  }
  return out;
}

function typedOrResult(f: () => unknown, label: string): 'ok' | 'typed' {
  try {
    f();
    return 'ok';
  } catch (e) {
    assert.ok(isSealError(e), `${label}: untyped error ${(e as Error)?.stack ?? e}`);
    return 'typed';
  }
}

test('mutated firmware footer tables and SEV metadata give typed errors or a parse', {
  timeout: 120_000,
}, async () => {
  const random = prng(1818);
  const seeds = [
    readFileSync(join(SSM, 'ovmf_AmdSev_suffix.bin')),
    readFileSync(join(SSM, 'ovmf_OvmfX64_suffix.bin')),
    readFileSync('/usr/share/OVMF/OVMF_CODE.fd').subarray(-16 * 4096),
  ];
  const dir = mkdtempSync(join(tmpdir(), 'seal-fw-fuzz-'));
  const kernel = join(dir, 'kernel');
  writeFileSync(kernel, 'kernel');
  let typed = 0;
  let ok = 0;
  for (let i = 0; i < 4000; i++) {
    const seed = seeds[i % seeds.length] as Buffer;
    const data = mutateTail(seed, random, i % 2 ? 64 : 2048);
    const outcome = typedOrResult(() => {
      const fw = new Firmware(data, `case-${i}`);
      fw.sevHashesTableGpa();
      fw.supportsSevHashes();
      fw.sevEsResetEip();
    }, `case ${i}`);
    if (outcome === 'ok') ok++;
    else typed++;
    if (i % 8 === 0) {
      // the whole measurement, through files, for a share of them
      const file = join(dir, 'fw.fd');
      writeFileSync(file, data);
      for (const mode of ['snp', 'seves'] as const) {
        try {
          await launchDigest({ mode, ovmf: file, vcpus: 2, kernel, cmdline: 'x' });
        } catch (e) {
          assert.ok(isSealError(e), `case ${i} ${mode}: untyped error ${(e as Error)?.stack ?? e}`);
        }
      }
    }
  }
  assert.ok(typed > 1000 && ok > 500, `typed ${typed}, parsed ${ok}`);
});

test('mutated TDX metadata gives typed errors or an MRTD', { timeout: 120_000 }, () => {
  const random = prng(1900);
  const full = readFileSync('/usr/share/ovmf/OVMF.fd');
  const head = full.subarray(0, full.length - 8192);
  const tail = full.subarray(full.length - 8192);
  let typed = 0;
  let ok = 0;
  for (let i = 0; i < 3000; i++) {
    const data = Buffer.concat([head, mutateTail(tail, random, i % 2 ? 0x900 : 0x60)]);
    const outcome = typedOrResult(() => {
      const fw = new Firmware(data, `case-${i}`);
      tdxSections(fw);
      if (i % 25 === 0) tdxMrtd(fw);
    }, `case ${i}`);
    if (outcome === 'ok') ok++;
    else typed++;
  }
  assert.ok(typed > 500 && ok > 300, `typed ${typed}, parsed ${ok}`);
});

test('mutated SNP reports give typed errors or a report', { timeout: 120_000 }, () => {
  const random = prng(4242);
  const seeds = [
    readFileSync(join(SNP, 'go-sev-guest-attestation.bin')),
    Buffer.from(readFileSync(join(SNP, 'virtee-report-milan.hex'), 'latin1').trim(), 'hex'),
  ];
  const [ask, ark] = readCertificates(readFileSync(join(SNP, 'ask-ark-milan.pem')), 'chain');
  const vek = readCertificates(readFileSync(join(SNP, 'go-sev-guest-vcek.der')), 'vcek')[0];
  let typed = 0;
  for (let i = 0; i < 4000; i++) {
    const seed = seeds[i % 2] as Buffer;
    let data: Buffer = Buffer.from(seed);
    const kind = random();
    if (kind < 0.6) {
      for (let j = 0, n = 1 + Math.floor(random() * 4); j < n; j++)
        data[Math.floor(random() * data.length)] = Math.floor(random() * 256);
    } else if (kind < 0.8) {
      data = data.subarray(0, Math.floor(random() * data.length));
    } else if (kind < 0.9) {
      data = Buffer.concat([data, Buffer.alloc(1 + Math.floor(random() * 64))]);
    } else {
      // version and signature algorithm fields
      data.writeUInt32LE(Math.floor(random() * 8), random() < 0.5 ? 0 : 0x34);
    }
    if (typedOrResult(() => parseSnpReport(data, `case-${i}`), `case ${i}`) === 'typed') typed++;
    if (i % 10 === 0)
      typedOrResult(
        () => verifySnpReport(data, { vek, ask, ark, chain: { at: new Date('2025-06-01T00:00:00Z') } }),
        `verify ${i}`,
      );
  }
  assert.ok(typed > 2000, `only ${typed} refused`);
});

test('mutated certificates (DER and PEM) give typed errors or certificates', { timeout: 120_000 }, () => {
  const random = prng(7);
  const pem = readFileSync(join(SNP, 'ask-ark-milan.pem'));
  const der = readFileSync(join(SNP, 'virtee-vcek-milan.der'));
  const [ask, ark] = readCertificates(pem, 'chain');
  let typed = 0;
  for (let i = 0; i < 1500; i++) {
    const data = Buffer.from(i % 3 === 0 ? pem : der);
    const kind = random();
    if (kind < 0.7) {
      for (let j = 0, n = 1 + Math.floor(random() * 3); j < n; j++)
        data[Math.floor(random() * data.length)] = Math.floor(random() * 256);
    }
    const input = kind >= 0.7 ? data.subarray(0, Math.floor(random() * data.length)) : data;
    try {
      const certs = readCertificates(input, `case-${i}`);
      if (i % 3 !== 0 && ask && ark)
        typedOrResult(
          () => verifyAmdChain(certs[0] as never, ask, ark, { at: new Date('2025-06-01T00:00:00Z') }),
          `chain ${i}`,
        );
    } catch (e) {
      assert.ok(isSealError(e), `case ${i}: untyped error ${(e as Error)?.stack ?? e}`);
      typed++;
    }
  }
  assert.ok(typed > 300, `only ${typed} refused`);
});
