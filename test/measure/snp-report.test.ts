/**
 * SEV-SNP attestation reports: two real Milan reports with the VCEKs AMD issued for them and
 * AMD's ASK/ARK (fixtures/snp/README.md) verify; every single flipped byte of a report or of a
 * certificate is refused; expectations are compared; a chain made with openssl (as a lab would
 * make one) verifies only when its root is trusted explicitly.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createPrivateKey, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  type Certificate,
  CvmError,
  endorsementClaims,
  parseSnpReport,
  readCertificates,
  verifyAmdChain,
  verifySnpReport,
} from '../../src/measure/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { prng } from '../helpers/trees.ts';
import { SNP } from './helpers.ts';

const AT = new Date('2025-06-01T00:00:00Z');

function load(name: string): Buffer {
  return readFileSync(join(SNP, name));
}

function certs(name: string): Certificate[] {
  return readCertificates(load(name), name);
}

const [ASK_MILAN, ARK_MILAN] = certs('ask-ark-milan.pem') as [Certificate, Certificate];

interface RealReport {
  name: string;
  bytes: Buffer;
  vcek: Certificate;
  measurement: string;
  policy: bigint;
}

const REPORTS: RealReport[] = [
  {
    name: 'go-sev-guest',
    bytes: load('go-sev-guest-attestation.bin'),
    vcek: certs('go-sev-guest-vcek.der')[0] as Certificate,
    measurement: '',
    policy: 0xb0000n,
  },
  {
    name: 'virtee',
    bytes: Buffer.from(load('virtee-report-milan.hex').toString('latin1').trim(), 'hex'),
    vcek: certs('virtee-vcek-milan.der')[0] as Certificate,
    measurement:
      '7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f',
    policy: 0x30000n,
  },
];

function verify(r: RealReport, bytes: Buffer = r.bytes, vcek = r.vcek, ask = ASK_MILAN, ark = ARK_MILAN) {
  return verifySnpReport(bytes, { name: r.name, vek: vcek, ask, ark, chain: { at: AT } });
}

test('real Milan reports verify: AMD chain, ECDSA P-384 signature, VCEK TCB and chip ID', () => {
  for (const r of REPORTS) {
    const v = verify(r);
    assert.equal(v.signatureVerified, true);
    assert.equal(v.chain?.root, 'ARK-Milan');
    const report = v.report;
    assert.equal(report.version, 2);
    assert.equal(report.signingKey, 'vcek');
    assert.equal(report.policy.raw, r.policy);
    assert.equal(report.policy.smt, true);
    if (r.measurement) assert.equal(report.measurement.toString('hex'), r.measurement);
    const claims = endorsementClaims(r.vcek);
    assert.equal(claims.productName, 'Milan-B0');
    assert.deepEqual(claims.hwId, report.chipId);
    assert.equal(claims.tcb.snp, report.reportedTcb.snp);
    assert.equal(claims.tcb.microcode, report.reportedTcb.microcode);
  }
  // The go-sev-guest report was made with the debug policy bit, the virtee one without.
  assert.equal(verify(REPORTS[0] as RealReport).report.policy.debug, true);
  assert.equal(verify(REPORTS[1] as RealReport).report.policy.debug, false);
});

test('every single flipped byte of a real report is refused with a typed error', () => {
  const random = prng(18);
  for (const r of REPORTS) {
    const counts = new Map<string, number>();
    for (let i = 0; i < r.bytes.length; i++) {
      const bad = Buffer.from(r.bytes);
      bad[i] = (bad[i] as number) ^ (1 + Math.floor(random() * 255));
      try {
        verify(r, bad);
        assert.fail(`${r.name}: byte 0x${i.toString(16)} flipped and the report still verified`);
      } catch (e) {
        assert.ok(e instanceof CvmError, `${r.name}: byte ${i}: ${e}`);
        counts.set(e.code, (counts.get(e.code) ?? 0) + 1);
      }
    }
    assert.ok((counts.get('CVM_REPORT_SIGNATURE') ?? 0) > 500, JSON.stringify([...counts]));
    assert.ok((counts.get('CVM_BAD_REPORT') ?? 0) > 300, JSON.stringify([...counts]));
  }
});

test('every single flipped byte of the VCEK, the ASK or the ARK is refused', () => {
  const random = prng(1804);
  const r = REPORTS[1] as RealReport;
  const flips = (cert: Certificate, use: (c: Certificate) => void) => {
    let refused = 0;
    for (let i = 0; i < cert.der.length; i++) {
      const der = Buffer.from(cert.der);
      der[i] = (der[i] as number) ^ (1 + Math.floor(random() * 255));
      try {
        const [c] = readCertificates(der, `${cert.name}@${i}`);
        use(c as Certificate);
        assert.fail(`${cert.name}: byte ${i} flipped and the chain still verified`);
      } catch (e) {
        assert.ok(e instanceof CvmError, `${cert.name}: byte ${i}: ${e}`);
        refused++;
      }
    }
    return refused;
  };
  assert.equal(
    flips(r.vcek, (c) => verify(r, r.bytes, c)),
    r.vcek.der.length,
  );
  assert.equal(
    flips(ASK_MILAN, (c) => verify(r, r.bytes, r.vcek, c)),
    ASK_MILAN.der.length,
  );
  assert.equal(
    flips(ARK_MILAN, (c) => verify(r, r.bytes, r.vcek, ASK_MILAN, c)),
    ARK_MILAN.der.length,
  );
});

test('chains: the right generation only, in order, at a time the certificates are valid', () => {
  const [askTurin, arkTurin] = certs('ask-ark-turin.pem') as [Certificate, Certificate];
  const [askGenoa, arkGenoa] = certs('ask-ark-genoa.pem') as [Certificate, Certificate];
  const vcekTurin = certs('virtee-vcek-turin.der')[0] as Certificate;
  assert.equal(verifyAmdChain(vcekTurin, askTurin, arkTurin, { at: AT }).root, 'ARK-Turin');
  assert.equal(endorsementClaims(vcekTurin).productName?.startsWith('Turin'), true);
  const milanVcek = (REPORTS[1] as RealReport).vcek;
  const refused = (f: () => unknown, code = 'CVM_CHAIN_INVALID') =>
    assert.throws(f, (e: unknown) => e instanceof CvmError && e.code === code);
  refused(() => verifyAmdChain(milanVcek, askTurin, arkTurin, { at: AT }));
  refused(() => verifyAmdChain(milanVcek, askGenoa, arkGenoa, { at: AT }));
  refused(() => verifyAmdChain(milanVcek, ASK_MILAN, arkGenoa, { at: AT }));
  refused(() => verifyAmdChain(milanVcek, ARK_MILAN, ASK_MILAN, { at: AT })); // swapped
  refused(() => verifyAmdChain(ASK_MILAN, ASK_MILAN, ARK_MILAN, { at: AT })); // an ASK is no endorsement key
  refused(() => verifyAmdChain(milanVcek, ASK_MILAN, ARK_MILAN, { at: new Date('2031-01-01T00:00:00Z') }));
  // A report checked against another machine's VCEK (same chain): the signature fails.
  const [a, b] = REPORTS as [RealReport, RealReport];
  assert.throws(() => verify(a, a.bytes, b.vcek), { code: 'CVM_REPORT_SIGNATURE' });
});

test('expected values: equal ones pass, each different one is named', () => {
  const r = REPORTS[1] as RealReport;
  const report = parseSnpReport(r.bytes);
  const v = verifySnpReport(r.bytes, {
    vek: r.vcek,
    ask: ASK_MILAN,
    ark: ARK_MILAN,
    chain: { at: AT },
    expect: {
      measurement: report.measurement,
      policy: 0x30000n,
      hostData: Buffer.alloc(32),
      reportData: report.reportData,
      chipId: report.chipId,
      vmpl: 0,
    },
  });
  assert.deepEqual(v.compared, ['measurement', 'policy', 'host data', 'report data', 'chip ID', 'VMPL']);
  const other = (b: Buffer) => {
    const c = Buffer.from(b);
    c[c.length - 1] = (c[c.length - 1] as number) ^ 1;
    return c;
  };
  for (const [expect, field] of [
    [{ measurement: other(report.measurement) }, 'measurement'],
    [{ policy: 0x30001n }, 'policy'],
    [{ hostData: other(Buffer.alloc(32)) }, 'host data'],
    [{ reportData: other(report.reportData) }, 'report data'],
    [{ reportData: Buffer.from('nonce') }, 'report data'],
    [{ vmpl: 1 }, 'VMPL'],
  ] as const) {
    assert.throws(
      () => verifySnpReport(r.bytes, { name: 'r', expect }),
      (e: unknown) =>
        e instanceof CvmError && e.code === 'CVM_REPORT_MISMATCH' && e.message.startsWith(`r: ${field} is`),
      field,
    );
  }
});

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

test('a chain made with openssl verifies only when its root is trusted; its reports are checked like real ones', () => {
  const dir = mkdtempSync(join(tmpdir(), 'seal-snp-lab-'));
  const pss = ['-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:48', '-sha384'];
  const subj = (cn: string) => `/OU=Engineering/C=US/L=Lab/ST=CA/O=Seal Test/CN=${cn}`;
  openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:4096', '-out', 'ark.key'], dir);
  openssl(
    [
      'req',
      '-x509',
      '-new',
      '-key',
      'ark.key',
      '-subj',
      subj('ARK-Lab'),
      '-days',
      '3650',
      ...pss,
      '-out',
      'ark.pem',
    ],
    dir,
  );
  openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', 'ask.key'], dir);
  openssl(['req', '-new', '-key', 'ask.key', '-subj', subj('SEV-Lab'), '-out', 'ask.csr'], dir);
  openssl(
    [
      'x509',
      '-req',
      '-in',
      'ask.csr',
      '-CA',
      'ark.pem',
      '-CAkey',
      'ark.key',
      '-set_serial',
      '2',
      '-days',
      '3650',
      ...pss,
      '-out',
      'ask.pem',
    ],
    dir,
  );
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384', '-out', 'vcek.key'], dir);
  openssl(['req', '-new', '-key', 'vcek.key', '-subj', subj('SEV-VCEK'), '-out', 'vcek.csr'], dir);
  // The real report's chip ID and TCB, so that only the signer differs.
  const real = REPORTS[1] as RealReport;
  const parsed = parseSnpReport(real.bytes);
  const t = parsed.reportedTcb;
  const hw = parsed.chipId.toString('hex').replace(/(..)(?!$)/g, '$1:');
  writeFileSync(
    join(dir, 'ext.cnf'),
    [
      `1.3.6.1.4.1.3704.1.2=DER:16:08:${Buffer.from('Milan-B0')
        .toString('hex')
        .replace(/(..)(?!$)/g, '$1:')}`,
      `1.3.6.1.4.1.3704.1.3.1=DER:02:01:${t.bootloader.toString(16).padStart(2, '0')}`,
      `1.3.6.1.4.1.3704.1.3.2=DER:02:01:${t.tee.toString(16).padStart(2, '0')}`,
      `1.3.6.1.4.1.3704.1.3.3=DER:02:01:${t.snp.toString(16).padStart(2, '0')}`,
      `1.3.6.1.4.1.3704.1.3.8=DER:02:01:${t.microcode.toString(16).padStart(2, '0')}`,
      `1.3.6.1.4.1.3704.1.4=DER:${hw}`,
      '',
    ].join('\n'),
  );
  openssl(
    [
      'x509',
      '-req',
      '-in',
      'vcek.csr',
      '-CA',
      'ask.pem',
      '-CAkey',
      'ask.key',
      '-set_serial',
      '3',
      '-days',
      '3650',
      ...pss,
      '-extfile',
      'ext.cnf',
      '-out',
      'vcek.pem',
    ],
    dir,
  );
  const ark = readCertificates(readFileSync(join(dir, 'ark.pem')), 'ark.pem')[0] as Certificate;
  const ask = readCertificates(readFileSync(join(dir, 'ask.pem')), 'ask.pem')[0] as Certificate;
  const vcek = readCertificates(readFileSync(join(dir, 'vcek.pem')), 'vcek.pem')[0] as Certificate;
  // Re-sign the real report's fields with the lab VCEK.
  const key = createPrivateKey(readFileSync(join(dir, 'vcek.key')));
  const signReport = (bytes: Buffer) => {
    const out = Buffer.from(bytes);
    const sig = sign('sha384', out.subarray(0, 0x2a0), { key, dsaEncoding: 'ieee-p1363' });
    out.fill(0, 0x2a0);
    Buffer.from(sig.subarray(0, 48)).reverse().copy(out, 0x2a0);
    Buffer.from(sig.subarray(48)).reverse().copy(out, 0x2e8);
    return out;
  };
  const lab = signReport(real.bytes);
  const now = new Date();
  assert.throws(() => verifySnpReport(lab, { vek: vcek, ask, ark, chain: { at: now } }), {
    code: 'CVM_CHAIN_INVALID',
    message: /not one of AMD's root keys/,
  });
  const ok = verifySnpReport(lab, { vek: vcek, ask, ark, chain: { at: now, trustArk: true } });
  assert.equal(ok.chain?.root, 'caller-trusted');
  // The lab VCEK cannot stand in the AMD chain, nor the real VCEK in the lab one.
  assert.throws(
    () => verifySnpReport(lab, { vek: vcek, ask: ASK_MILAN, ark: ARK_MILAN, chain: { at: now } }),
    {
      code: 'CVM_CHAIN_INVALID',
    },
  );
  assert.throws(
    () => verifySnpReport(real.bytes, { vek: vcek, ask, ark, chain: { at: now, trustArk: true } }),
    {
      code: 'CVM_REPORT_SIGNATURE',
    },
  );
  // A report whose TCB is not the one the VCEK was issued for, validly signed, is refused.
  const newer = Buffer.from(real.bytes);
  newer[0x180 + 6] = t.snp + 1;
  assert.throws(
    () => verifySnpReport(signReport(newer), { vek: vcek, ask, ark, chain: { at: now, trustArk: true } }),
    {
      code: 'CVM_REPORT_MISMATCH',
      message: /reported TCB snp level/,
    },
  );
  // Nor is one from another chip.
  const otherChip = Buffer.from(real.bytes);
  otherChip[0x1a0] = (otherChip[0x1a0] as number) ^ 1;
  assert.throws(
    () => verifySnpReport(signReport(otherChip), { vek: vcek, ask, ark, chain: { at: now, trustArk: true } }),
    { code: 'CVM_REPORT_MISMATCH', message: /chip ID/ },
  );
  // Through the CLI, with --trust-ark.
  writeFileSync(join(dir, 'lab.bin'), lab);
  const cli = runSeal([
    'measure',
    'snp-report',
    join(dir, 'lab.bin'),
    '--vcek',
    join(dir, 'vcek.pem'),
    '--ask',
    join(dir, 'ask.pem'),
    '--ark',
    join(dir, 'ark.pem'),
  ]);
  assert.equal(cli.status, 1);
  assert.match(cli.stderr, /not one of AMD's root keys.*\[CVM_CHAIN_INVALID\]/);
  const trusted = runSeal([
    'measure',
    'snp-report',
    join(dir, 'lab.bin'),
    '--vcek',
    join(dir, 'vcek.pem'),
    '--ask',
    join(dir, 'ask.pem'),
    '--ark',
    join(dir, 'ark.pem'),
    '--trust-ark',
    '--measurement',
    parsed.measurement.toString('hex'),
  ]);
  assert.equal(trusted.status, 0, trusted.stderr);
  assert.match(trusted.stdout, /Signature: +valid \(.*vcek\.pem, chain to caller-trusted, Milan-B0\)/);
});

test('seal measure snp-report: real reports, hex or raw, the AMD bundle, expectations and refusals', () => {
  const dir = mkdtempSync(join(tmpdir(), 'seal-snp-cli-'));
  const hex = join(SNP, 'virtee-report-milan.hex');
  const base = [
    'measure',
    'snp-report',
    hex,
    '--vcek',
    join(SNP, 'virtee-vcek-milan.der'),
    '--ask',
    join(SNP, 'ask-ark-milan.pem'),
    '--at',
    AT.toISOString(),
  ];
  const measurement = (REPORTS[1] as RealReport).measurement;
  const ok = runSeal([...base, '--measurement', measurement, '--policy', '0x30000', '--json']);
  assert.equal(ok.status, 0, ok.stderr);
  const json = JSON.parse(ok.stdout) as {
    signatureVerified: boolean;
    root: string;
    compared: string[];
    report: { measurement: string };
  };
  assert.equal(json.signatureVerified, true);
  assert.equal(json.root, 'ARK-Milan');
  assert.equal(json.report.measurement, measurement);
  assert.deepEqual(json.compared, ['measurement', 'policy']);
  const wrong = runSeal([...base, '--measurement', `${measurement.slice(0, -1)}0`]);
  assert.equal(wrong.status, 1);
  assert.match(wrong.stderr, /measurement is 7a1e.*expected .*\[CVM_REPORT_MISMATCH\]/);
  const flipped = Buffer.from((REPORTS[1] as RealReport).bytes);
  flipped[0x90] = (flipped[0x90] as number) ^ 0x80;
  writeFileSync(join(dir, 'flipped.bin'), flipped);
  const tampered = runSeal(['measure', 'snp-report', join(dir, 'flipped.bin'), ...base.slice(3)]);
  assert.equal(tampered.status, 1);
  assert.match(tampered.stderr, /signature does not verify.*\[CVM_REPORT_SIGNATURE\]/);
  const unverified = runSeal(['measure', 'snp-report', join(SNP, 'go-sev-guest-attestation.bin')]);
  assert.equal(unverified.status, 0, unverified.stderr);
  assert.match(unverified.stdout, /Signature: +NOT VERIFIED/);
  assert.match(unverified.stdout, /Policy: +0xb0000 \(ABI 0\.0, smt, debug\)/);
  writeFileSync(join(dir, 'short.bin'), flipped.subarray(0, 100));
  const short = runSeal(['measure', 'snp-report', join(dir, 'short.bin')]);
  assert.equal(short.status, 1);
  assert.match(short.stderr, /is 1184 bytes, not 100 \[CVM_BAD_REPORT\]/);
});
