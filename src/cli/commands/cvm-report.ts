/** `seal measure snp-report`: parse and verify an SEV-SNP attestation report. */
import { readFile } from 'node:fs/promises';
import { UsageError } from '../../errors.ts';
import {
  type Certificate,
  endorsementClaims,
  REPORT_SIZE,
  type ReportExpectations,
  readCertificates,
  type SnpReport,
  type TcbVersion,
  verifySnpReport,
} from '../../measure/index.ts';
import type { Command } from '../command.ts';

/** An integer written as Python's int(x, 0) reads it: decimal, 0x, 0o or 0b, underscores between digits. */
export function autoBaseInteger(text: string, name: string): bigint {
  const t = text.trim();
  const m =
    /^\+?(0[xX](?:_?[0-9a-fA-F])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+|[1-9](?:_?[0-9])*|0(?:_?0)*)$/.exec(t);
  if (!m)
    throw new UsageError(
      `--${name} takes a non-negative integer (decimal, 0x…, 0o… or 0b…), not ${JSON.stringify(text)}`,
    );
  const digits = (m[1] as string).replace(/_/g, '');
  return BigInt(/^0[oO]/.test(digits) ? `0o${digits.slice(2)}` : digits);
}

function hexOption(value: unknown, name: string, max: number): Buffer | undefined {
  if (value === undefined) return undefined;
  const text = String(value).replace(/^0x/i, '');
  if (!/^([0-9a-fA-F]{2})+$/.test(text) || text.length / 2 > max)
    throw new UsageError(`--${name} takes up to ${max} hex bytes`);
  return Buffer.from(text, 'hex');
}

/** A report file: the raw 0x4A0 bytes, or the same as hex text. */
async function readReport(path: string): Promise<Buffer> {
  const data = await readFile(path);
  if (data.length === REPORT_SIZE) return data;
  const text = data.toString('latin1').replace(/\s+/g, '');
  if (text.length === REPORT_SIZE * 2 && /^[0-9a-fA-F]+$/.test(text)) return Buffer.from(text, 'hex');
  return data;
}

async function certificates(path: string): Promise<Certificate[]> {
  return readCertificates(await readFile(path), path);
}

function tcbText(t: TcbVersion): string {
  const parts = [
    ...(t.fmc !== undefined ? [`fmc=${t.fmc}`] : []),
    `bootloader=${t.bootloader}`,
    `tee=${t.tee}`,
    `snp=${t.snp}`,
    `microcode=${t.microcode}`,
  ];
  return `0x${t.raw.toString(16).padStart(16, '0')} (${parts.join(' ')})`;
}

function reportJson(r: SnpReport): Record<string, unknown> {
  const tcb = (t: TcbVersion) => ({ ...t, raw: `0x${t.raw.toString(16).padStart(16, '0')}` });
  const { raw: policyRaw, ...policy } = r.policy;
  return {
    version: r.version,
    guestSvn: r.guestSvn,
    policy: { raw: `0x${policyRaw.toString(16)}`, ...policy },
    familyId: r.familyId.toString('hex'),
    imageId: r.imageId.toString('hex'),
    vmpl: r.vmpl,
    signatureAlgorithm: r.signatureAlgorithm,
    currentTcb: tcb(r.currentTcb),
    platformInfo: `0x${r.platformInfo.toString(16)}`,
    authorKeyEn: r.authorKeyEn,
    maskChipKey: r.maskChipKey,
    signingKey: r.signingKey,
    reportData: r.reportData.toString('hex'),
    measurement: r.measurement.toString('hex'),
    hostData: r.hostData.toString('hex'),
    idKeyDigest: r.idKeyDigest.toString('hex'),
    authorKeyDigest: r.authorKeyDigest.toString('hex'),
    reportId: r.reportId.toString('hex'),
    reportIdMa: r.reportIdMa.toString('hex'),
    reportedTcb: tcb(r.reportedTcb),
    ...(r.cpuid ? { cpuid: r.cpuid } : {}),
    chipId: r.chipId.toString('hex'),
    committedTcb: tcb(r.committedTcb),
    currentVersion: `${r.current.major}.${r.current.minor}.${r.current.build}`,
    committedVersion: `${r.committed.major}.${r.committed.minor}.${r.committed.build}`,
    launchTcb: tcb(r.launchTcb),
    ...(r.launchMitVector !== undefined
      ? {
          launchMitVector: `0x${r.launchMitVector.toString(16)}`,
          currentMitVector: `0x${(r.currentMitVector ?? 0n).toString(16)}`,
        }
      : {}),
    signature: { r: r.signature.r.toString('hex'), s: r.signature.s.toString('hex') },
  };
}

function reportLines(r: SnpReport): string[] {
  const p = r.policy;
  const flags = Object.entries(p)
    .filter(([k, v]) => typeof v === 'boolean' && v && k !== 'raw')
    .map(([k]) => k);
  return [
    `Version:            ${r.version}`,
    `Guest SVN:          ${r.guestSvn}`,
    `Policy:             0x${p.raw.toString(16)} (ABI ${p.abiMajor}.${p.abiMinor}${flags.length ? `, ${flags.join(', ')}` : ''})`,
    `Family ID:          ${r.familyId.toString('hex')}`,
    `Image ID:           ${r.imageId.toString('hex')}`,
    `VMPL:               ${r.vmpl}`,
    `Signing key:        ${r.signingKey}${r.maskChipKey ? ' (chip ID masked)' : ''}${r.authorKeyEn ? ' (author key)' : ''}`,
    `Current TCB:        ${tcbText(r.currentTcb)}`,
    `Reported TCB:       ${tcbText(r.reportedTcb)}`,
    `Committed TCB:      ${tcbText(r.committedTcb)}`,
    `Launch TCB:         ${tcbText(r.launchTcb)}`,
    `Platform info:      0x${r.platformInfo.toString(16)}`,
    `Firmware:           ${r.current.major}.${r.current.minor}.${r.current.build} (committed ${r.committed.major}.${r.committed.minor}.${r.committed.build})`,
    ...(r.cpuid
      ? [
          `CPU:                family 0x${r.cpuid.family.toString(16)} model 0x${r.cpuid.model.toString(16)} stepping ${r.cpuid.stepping}`,
        ]
      : []),
    `Measurement:        ${r.measurement.toString('hex')}`,
    `Host data:          ${r.hostData.toString('hex')}`,
    `Report data:        ${r.reportData.toString('hex')}`,
    `ID key digest:      ${r.idKeyDigest.toString('hex')}`,
    `Author key digest:  ${r.authorKeyDigest.toString('hex')}`,
    `Report ID:          ${r.reportId.toString('hex')}`,
    `Report ID (MA):     ${r.reportIdMa.toString('hex')}`,
    `Chip ID:            ${r.chipId.toString('hex')}`,
  ];
}

export const snpReportCommand: Command = {
  path: ['measure', 'snp-report'],
  summary: 'parse an SEV-SNP attestation report, verify its signature and AMD chain, compare expected values',
  args: 'REPORT',
  arity: [1, 1],
  details:
    'REPORT is the raw 1184-byte report (or the same as hex). With --vcek the AMD chain ARK → ASK → VCEK and ' +
    "the report's ECDSA P-384 signature are verified; the ARK must be one of AMD's roots unless --trust-ark. " +
    'Each --measurement/--policy/--host-data/--report-data given must equal the report. Without --vcek the ' +
    'signature is NOT checked (said in the output).',
  options: {
    vcek: { type: 'string', value: 'CERT', description: 'VCEK (or VLEK) certificate, DER or PEM' },
    ask: {
      type: 'string',
      value: 'CERT',
      description: 'ASK (or ASVK) certificate; a PEM bundle may add the ARK',
    },
    ark: { type: 'string', value: 'CERT', description: 'ARK certificate (default: from the --ask bundle)' },
    'trust-ark': {
      type: 'boolean',
      description: "accept an ARK that is not one of AMD's (lab or test roots)",
    },
    at: {
      type: 'string',
      value: 'TIME',
      description: 'check certificate validity at this ISO time (default now)',
    },
    measurement: { type: 'string', value: 'HEX', description: 'expected launch measurement (48 bytes)' },
    policy: { type: 'string', value: 'VALUE', description: 'expected guest policy (e.g. 0x30000)' },
    'host-data': { type: 'string', value: 'HEX', description: 'expected host data (32 bytes)' },
    'report-data': {
      type: 'string',
      value: 'HEX',
      description: 'expected report data (up to 64 bytes, zero-padded)',
    },
    'id-key-digest': { type: 'string', value: 'HEX', description: 'expected ID key digest (48 bytes)' },
    'chip-id': { type: 'string', value: 'HEX', description: 'expected chip ID (64 bytes)' },
    vmpl: { type: 'string', value: 'N', description: 'expected VMPL (0-3)' },
  },
  async run(ctx, [path], o) {
    const expect: ReportExpectations = {
      measurement: hexOption(o.measurement, 'measurement', 48),
      hostData: hexOption(o['host-data'], 'host-data', 32),
      reportData: hexOption(o['report-data'], 'report-data', 64),
      idKeyDigest: hexOption(o['id-key-digest'], 'id-key-digest', 48),
      chipId: hexOption(o['chip-id'], 'chip-id', 64),
      ...(o.policy !== undefined ? { policy: autoBaseInteger(o.policy as string, 'policy') } : {}),
      ...(o.vmpl !== undefined ? { vmpl: Number(autoBaseInteger(o.vmpl as string, 'vmpl')) } : {}),
    };
    for (const [key, len] of [
      ['measurement', 48],
      ['hostData', 32],
      ['idKeyDigest', 48],
      ['chipId', 64],
    ] as const) {
      const v = expect[key];
      if (v !== undefined && v.length !== len)
        throw new UsageError(`the expected ${key} is ${len} bytes, not ${v.length}`);
    }
    let vek: Certificate | undefined;
    let ask: Certificate | undefined;
    let ark: Certificate | undefined;
    if (o.vcek !== undefined) {
      if (o.ask === undefined)
        throw new UsageError('--vcek needs --ask (and the ARK, from --ark or the --ask bundle)');
      const vcekCerts = await certificates(o.vcek as string);
      const askCerts = await certificates(o.ask as string);
      vek = vcekCerts[0];
      ask = askCerts[0];
      ark = o.ark !== undefined ? (await certificates(o.ark as string))[0] : askCerts[1];
      if (ark === undefined)
        throw new UsageError('no ARK: give --ark, or an --ask bundle holding the ASK then the ARK');
    } else if (o.ask !== undefined || o.ark !== undefined) {
      throw new UsageError('--ask and --ark verify the --vcek: give it too');
    }
    let at: Date | undefined;
    if (o.at !== undefined) {
      at = new Date(o.at as string);
      if (Number.isNaN(at.getTime())) throw new UsageError('--at takes an ISO 8601 time');
    }
    const data = await readReport(path as string);
    const result = verifySnpReport(data, {
      name: path,
      vek,
      ask,
      ark,
      chain: { trustArk: o['trust-ark'] === true, ...(at ? { at } : {}) },
      expect,
    });
    const claims = vek ? endorsementClaims(vek) : undefined;
    for (const line of reportLines(result.report)) ctx.print(line);
    ctx.print(
      result.chain
        ? `Signature:          valid (${result.chain.vek.name}, chain to ${result.chain.root}${claims?.productName ? `, ${claims.productName}` : ''})`
        : 'Signature:          NOT VERIFIED (no --vcek given)',
    );
    if (result.compared.length) ctx.print(`Expected values:    equal (${result.compared.join(', ')})`);
    ctx.result({
      report: reportJson(result.report),
      signatureVerified: result.signatureVerified,
      ...(result.chain ? { root: result.chain.root, productName: claims?.productName ?? null } : {}),
      compared: result.compared,
    });
    return 0;
  },
};
