/**
 * `seal measure sev|seves|snp|snp:svsm|snp:ovmf-hash`: confidential-VM launch digests with the
 * options and output of sev-snp-measure (so `sev-snp-measure --mode M …` can become
 * `seal measure M …`, or `seal measure --mode M …`), and `seal measure snp-report`.
 */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { UsageError } from '../../errors.ts';
import {
  cpuSignature,
  type LaunchOptions,
  launchDigest,
  readFirmware,
  type SevMode,
  snpOvmfHash,
  tdxMrtd,
  tdxSections,
  VCPU_TYPES,
  VMM_TYPES,
  type VmmType,
  vcpuTypeSignature,
} from '../../measure/index.ts';
import { writeFileAtomic } from '../../util/atomic.ts';
import type { Command, CommandContext, OptionSpec } from '../command.ts';
import { autoBaseInteger, snpReportCommand } from './cvm-report.ts';

type Mode = SevMode | 'snp:ovmf-hash';
const MODES: Mode[] = ['sev', 'seves', 'snp', 'snp:ovmf-hash', 'snp:svsm'];

/** How sev-snp-measure names the modes in its verbose line. */
const VERBOSE_NAMES: Record<SevMode, string> = {
  sev: 'SEV',
  seves: 'SEV_ES',
  snp: 'SEV_SNP',
  'snp:svsm': 'SEV_SNP_SVSM',
};

const launchOptions: Record<string, OptionSpec> = {
  mode: { type: 'string', choices: MODES, description: 'guest mode (the word after "measure" says it too)' },
  ovmf: { type: 'string', value: 'PATH', description: 'OVMF image the guest boots (required)' },
  vcpus: { type: 'string', value: 'N', description: 'number of guest vCPUs (seves, snp, snp:svsm)' },
  'vcpu-type': {
    type: 'string',
    value: 'CPUTYPE',
    description: `QEMU CPU model of the vCPUs (${VCPU_TYPES.join(', ')})`,
  },
  'vcpu-sig': { type: 'string', value: 'VALUE', description: 'vCPU signature, CPUID(1).EAX' },
  'vcpu-family': {
    type: 'string',
    value: 'FAMILY',
    description: 'vCPU family (with --vcpu-model and --vcpu-stepping)',
  },
  'vcpu-model': { type: 'string', value: 'MODEL', description: 'vCPU model' },
  'vcpu-stepping': { type: 'string', value: 'STEPPING', description: 'vCPU stepping' },
  'vmm-type': {
    type: 'string',
    value: 'VMMTYPE',
    description: `VMM that launches the guest (${VMM_TYPES.join(', ')}; default QEMU)`,
  },
  kernel: {
    type: 'string',
    value: 'PATH',
    description: 'kernel booted directly, measured through the SEV hashes table',
  },
  initrd: { type: 'string', value: 'PATH', description: 'initrd booted directly (with --kernel)' },
  append: { type: 'string', value: 'CMDLINE', description: 'kernel command line (with --kernel)' },
  'guest-features': {
    type: 'string',
    value: 'VALUE',
    description:
      'SNP guest features, SEV_FEATURES of the VMSAs (default 0x1: SNPActive; 0x21 adds DebugSwap)',
  },
  'output-format': {
    type: 'string',
    choices: ['hex', 'base64'],
    description: 'measurement output format (default hex)',
  },
  'snp-ovmf-hash': {
    type: 'string',
    value: 'HASH',
    description: 'digest of the OVMF pages from "measure snp:ovmf-hash" (snp)',
  },
  'dump-vmsa': {
    type: 'boolean',
    description: 'write the measured VMSAs to vmsa<N>.bin (seves, snp, snp:svsm)',
  },
  svsm: { type: 'string', value: 'PATH', description: 'Coconut-SVSM image (snp:svsm)' },
  'vars-size': {
    type: 'string',
    value: 'SIZE',
    description: 'size of the OVMF variable store in bytes (snp:svsm)',
  },
  'vars-file': {
    type: 'string',
    value: 'PATH',
    description: 'the OVMF variable store, for its size (snp:svsm)',
  },
  verbose: { type: 'boolean', short: 'v', description: 'say which measurement the value is' },
};

function decimal(value: unknown, name: string): number {
  if (typeof value !== 'string' || !/^\s*\+?\d+\s*$/.test(value))
    throw new UsageError(`--${name} takes a decimal number, not ${JSON.stringify(value)}`);
  return Number(value);
}

function str(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

function vcpuSignature(mode: Mode, o: Record<string, unknown>, vmm: VmmType): number | undefined {
  if (mode === 'sev') return 0;
  if (o['vcpu-family'] !== undefined) {
    if (o['vcpu-model'] === undefined || o['vcpu-stepping'] === undefined)
      throw new UsageError('--vcpu-family needs --vcpu-model and --vcpu-stepping');
    return cpuSignature(
      decimal(o['vcpu-family'], 'vcpu-family'),
      decimal(o['vcpu-model'], 'vcpu-model'),
      decimal(o['vcpu-stepping'], 'vcpu-stepping'),
    );
  }
  if (o['vcpu-sig'] !== undefined) {
    const sig = autoBaseInteger(o['vcpu-sig'] as string, 'vcpu-sig');
    if (sig > 0xffffffffn) throw new UsageError('--vcpu-sig is a 32-bit CPUID value');
    return Number(sig);
  }
  if (o['vcpu-type'] !== undefined) return vcpuTypeSignature(o['vcpu-type'] as string);
  if (vmm === 'QEMU')
    throw new UsageError(`missing --vcpu-type or --vcpu-sig or --vcpu-family in guest mode '${mode}'`);
  return undefined;
}

/** What a launch-measurement command prints: the text line and the JSON result. */
export async function measureLaunch(
  mode: Mode,
  o: Record<string, unknown>,
): Promise<{ line: string; json: Record<string, unknown> }> {
  const ovmf = str(o.ovmf);
  if (ovmf === undefined) throw new UsageError('--ovmf PATH is required');
  if (mode === 'snp:ovmf-hash') {
    const hash = (await snpOvmfHash(ovmf)).toString('hex');
    return { line: hash, json: { mode, ovmf, measurement: hash } };
  }
  if (o.initrd !== undefined && o.kernel === undefined)
    throw new UsageError('--kernel required when using --initrd');
  if (o.append !== undefined && o.append !== '' && o.kernel === undefined)
    throw new UsageError('--kernel required when using --append');
  const vcpus = o.vcpus === undefined ? undefined : decimal(o.vcpus, 'vcpus');
  if (mode !== 'sev' && vcpus === undefined)
    throw new UsageError(`missing --vcpus N in guest mode '${mode}'`);
  const vmmName = str(o['vmm-type']) ?? 'QEMU';
  if (!(VMM_TYPES as string[]).includes(vmmName)) throw new UsageError(`unknown VMM type '${vmmName}'`);
  const vmm = vmmName as VmmType;
  const signature = vcpuSignature(mode, o, vmm);
  let varsSize: number | undefined;
  if (mode === 'snp:svsm') {
    if (o['vars-file'] !== undefined && o['vars-size'] !== undefined)
      throw new UsageError('--vars-size and --vars-file exclude each other');
    if (o['vars-file'] !== undefined) varsSize = (await stat(o['vars-file'] as string)).size;
    else if (o['vars-size'] !== undefined) varsSize = decimal(o['vars-size'], 'vars-size');
    if (!varsSize) throw new UsageError('snp:svsm mode requires --vars-size or --vars-file');
  }
  if (o['dump-vmsa'] === true && mode === 'sev')
    throw new UsageError('--dump-vmsa is not available in mode sev');
  let ovmfHash: Buffer | undefined;
  if (o['snp-ovmf-hash'] !== undefined) {
    const h = o['snp-ovmf-hash'] as string;
    if (!/^([0-9a-fA-F]{2})+$/.test(h)) throw new UsageError('--snp-ovmf-hash takes hex bytes');
    ovmfHash = Buffer.from(h, 'hex');
  }
  const vmsas: Buffer[] = [];
  const options: LaunchOptions = {
    mode,
    ovmf,
    vcpus,
    vcpuSignature: signature,
    vmm,
    kernel: str(o.kernel),
    initrd: str(o.initrd),
    cmdline: str(o.append),
    guestFeatures:
      o['guest-features'] === undefined
        ? 1n
        : autoBaseInteger(o['guest-features'] as string, 'guest-features'),
    ovmfHash,
    svsm: str(o.svsm),
    varsSize,
    onVmsa:
      o['dump-vmsa'] === true
        ? (i, page) => {
            vmsas[i] = page;
          }
        : undefined,
  };
  if ((options.guestFeatures as bigint) > 0xffff_ffff_ffff_ffffn)
    throw new UsageError('--guest-features is a 64-bit value');
  const digest = await launchDigest(options);
  for (const [i, page] of vmsas.entries()) await writeFileAtomic(resolve(`vmsa${i}.bin`), page);
  const value = o['output-format'] === 'base64' ? digest.toString('base64') : digest.toString('hex');
  return {
    line: o.verbose === true ? `Calculated ${VERBOSE_NAMES[mode]} guest measurement: ${value}` : value,
    json: {
      mode,
      measurement: digest.toString('hex'),
      ovmf,
      ...(vcpus !== undefined && mode !== 'sev' ? { vcpus } : {}),
      ...(signature !== undefined && mode !== 'sev' ? { vcpuSignature: `0x${signature.toString(16)}` } : {}),
      ...(mode !== 'sev' ? { vmm } : {}),
      ...(mode === 'snp' ? { guestFeatures: `0x${(options.guestFeatures as bigint).toString(16)}` } : {}),
      ...(options.kernel !== undefined
        ? { kernel: options.kernel, initrd: options.initrd ?? null, cmdline: options.cmdline ?? null }
        : {}),
      ...(vmsas.length ? { vmsaFiles: vmsas.map((_, i) => `vmsa${i}.bin`) } : {}),
    },
  };
}

async function run(ctx: CommandContext, mode: Mode, o: Record<string, unknown>): Promise<number> {
  const { line, json } = await measureLaunch(mode, o);
  ctx.print(line);
  ctx.result(json);
  return 0;
}

function modeCommand(mode: Mode, summary: string): Command {
  return {
    path: ['measure', mode],
    summary,
    args: '',
    arity: [0, 0],
    options: launchOptions,
    details:
      'Takes the options of sev-snp-measure and prints what it prints, so "sev-snp-measure --mode M ..." can be ' +
      `"seal measure M ..." (or "seal measure --mode M ...").`,
    async run(ctx, _positionals, o) {
      if (o.mode !== undefined && o.mode !== mode)
        throw new UsageError(`--mode ${o.mode} contradicts "seal measure ${mode}"`);
      return run(ctx, mode, o);
    },
  };
}

export const cvmCommands: Command[] = [
  {
    path: ['measure'],
    summary:
      'confidential-VM launch digest, sev-snp-measure style (--mode sev|seves|snp|snp:ovmf-hash|snp:svsm)',
    args: '',
    arity: [0, 0],
    options: launchOptions,
    details:
      'The same as "seal measure MODE ..." for MODE sev, seves, snp, snp:ovmf-hash or snp:svsm. ' +
      'See also "seal measure snp-report --help" (SNP attestation reports) and "seal measure tdx --help" (TDX MRTD).',
    async run(ctx, _positionals, o) {
      if (o.mode === undefined)
        throw new UsageError('--mode is required: sev, seves, snp, snp:ovmf-hash or snp:svsm');
      return run(ctx, o.mode as Mode, o);
    },
  },
  modeCommand('sev', 'AMD SEV launch digest of an OVMF guest (SHA-256)'),
  modeCommand('seves', 'AMD SEV-ES launch digest: OVMF, direct-boot hashes and vCPU save areas (SHA-256)'),
  modeCommand(
    'snp',
    'AMD SEV-SNP launch digest: OVMF, metadata pages, direct-boot hashes and VMSAs (SHA-384)',
  ),
  modeCommand('snp:ovmf-hash', 'SEV-SNP digest of the OVMF pages alone, for --snp-ovmf-hash'),
  modeCommand('snp:svsm', 'SEV-SNP launch digest of OVMF under Coconut-SVSM'),
  {
    path: ['measure', 'tdx'],
    summary: 'Intel TDX MRTD of a TD booting a TDVF image (the whole OVMF.fd QEMU takes with -bios)',
    args: '',
    arity: [0, 0],
    details:
      'The MRTD as the TDX module computes it when KVM adds and measures the pages the TDX metadata lists ' +
      '(page by page: MEM.PAGE.ADD, then MR.EXTEND of each 256 bytes). RTMRs are not predicted.',
    options: {
      ovmf: {
        type: 'string',
        value: 'PATH',
        description: 'the TDVF image (OVMF.fd with TDX metadata; required)',
      },
      verbose: { type: 'boolean', short: 'v', description: 'list the TDX metadata sections' },
    },
    async run(ctx, _positionals, o) {
      const ovmf = str(o.ovmf);
      if (ovmf === undefined) throw new UsageError('--ovmf PATH is required');
      const fw = await readFirmware(ovmf);
      const sections = tdxSections(fw);
      const mrtd = tdxMrtd(fw).toString('hex');
      if (o.verbose === true)
        for (const s of sections)
          ctx.print(
            `${s.typeName.padEnd(10)} gpa 0x${s.memoryAddress.toString(16)} size 0x${s.memoryDataSize.toString(16)} ` +
              `data 0x${s.dataOffset.toString(16)}+0x${s.rawDataSize.toString(16)} attributes 0x${s.attributes.toString(16)}`,
          );
      ctx.print(o.verbose === true ? `MRTD: ${mrtd}` : mrtd);
      ctx.result({
        ovmf,
        mrtd,
        sections: sections.map((s) => ({
          type: s.typeName,
          gpa: `0x${s.memoryAddress.toString(16)}`,
          size: `0x${s.memoryDataSize.toString(16)}`,
          dataOffset: s.dataOffset,
          rawDataSize: s.rawDataSize,
          attributes: s.attributes,
        })),
      });
      return 0;
    },
  },
  snpReportCommand,
];
