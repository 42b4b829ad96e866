/**
 * Initial VMSA pages (the encrypted register state of each vCPU) as a VMM launches an SEV-ES or
 * SNP guest. The layout is the SEV-ES save area of AMD's APM vol. 2 (table B-4); only the
 * registers a VMM sets at reset are non-zero. VMMs differ in a few of them (QEMU puts the CPUID
 * signature in RDX and sets MXCSR and the x87 control word; EC2 and GCE do not), which is why
 * the VMM type is part of the measurement.
 */
import { CvmError } from './errors.ts';

export type VmmType = 'QEMU' | 'ec2' | 'gce';
export const VMM_TYPES: readonly VmmType[] = ['QEMU', 'ec2', 'gce'];

/** Where the bootstrap processor starts: the reset vector. */
export const BSP_EIP = 0xfffffff0;

const VMSA_SIZE = 4096;

/** Offsets in the save area. */
const SEG = {
  es: 0x00,
  cs: 0x10,
  ss: 0x20,
  ds: 0x30,
  fs: 0x40,
  gs: 0x50,
  gdtr: 0x60,
  ldtr: 0x70,
  idtr: 0x80,
  tr: 0x90,
};
const EFER = 0xd0;
const CR4 = 0x148;
const CR0 = 0x158;
const DR7 = 0x160;
const DR6 = 0x168;
const RFLAGS = 0x170;
const RIP = 0x178;
const G_PAT = 0x268;
const RDX = 0x310;
const SEV_FEATURES = 0x3b0;
const XCR0 = 0x3e8;
const MXCSR = 0x408;
const X87_FCW = 0x410;

/** The power-on value of the PAT MSR (APM vol. 2, A.3). */
const DEFAULT_PAT = 0x0007040600070406n;

function segment(
  page: Buffer,
  at: number,
  selector: number,
  attrib: number,
  limit: number,
  base: number,
): void {
  page.writeUInt16LE(selector, at);
  page.writeUInt16LE(attrib, at + 2);
  page.writeUInt32LE(limit, at + 4);
  page.writeBigUInt64LE(BigInt(base >>> 0), at + 8);
}

export interface VmsaOptions {
  /** Entry point: BSP_EIP for the first vCPU, the SEV-ES reset block's EIP for the others. */
  eip: number;
  /** SEV_FEATURES: SNP guest features (bit 0 SNPActive, bit 5 DebugSwap, …); 0 for SEV-ES. */
  sevFeatures: bigint;
  /** CPUID(1).EAX of the vCPU type (QEMU only). */
  vcpuSignature: number;
  vmm: VmmType;
}

/** A reset-state VMSA page as the VMM writes it for a guest booting in real mode at `eip`. */
export function resetVmsa({ eip, sevFeatures, vcpuSignature, vmm }: VmsaOptions): Buffer {
  let csFlags = 0x9b;
  let ssFlags = 0x93;
  let trFlags = 0x8b;
  let rdx = vcpuSignature;
  let mxcsr = 0x1f80;
  let fcw = 0x37f;
  let pat = DEFAULT_PAT;
  if (vmm === 'ec2') {
    if (eip === BSP_EIP) csFlags = 0x9a;
    ssFlags = 0x92;
    trFlags = 0x83;
    rdx = 0x600;
    mxcsr = 0;
    fcw = 0;
  } else if (vmm === 'gce') {
    pat = 0x00070106n; // GCE's hypervisor sets its own PAT
    rdx = 0x600;
    mxcsr = 0;
    fcw = 0;
  } else if (vmm !== 'QEMU') {
    throw new CvmError(
      'CVM_INVALID_OPTION',
      `unknown VMM type ${JSON.stringify(vmm)}; known: ${VMM_TYPES.join(', ')}`,
    );
  }
  const page = Buffer.alloc(VMSA_SIZE);
  segment(page, SEG.es, 0, 0x93, 0xffff, 0);
  segment(page, SEG.cs, 0xf000, csFlags, 0xffff, (eip & 0xffff0000) >>> 0);
  segment(page, SEG.ss, 0, ssFlags, 0xffff, 0);
  segment(page, SEG.ds, 0, 0x93, 0xffff, 0);
  segment(page, SEG.fs, 0, 0x93, 0xffff, 0);
  segment(page, SEG.gs, 0, 0x93, 0xffff, 0);
  segment(page, SEG.gdtr, 0, 0, 0xffff, 0);
  segment(page, SEG.idtr, 0, 0, 0xffff, 0);
  segment(page, SEG.ldtr, 0, 0x82, 0xffff, 0);
  segment(page, SEG.tr, 0, trFlags, 0xffff, 0);
  page.writeBigUInt64LE(0x1000n, EFER); // KVM sets EFER.SVME
  page.writeBigUInt64LE(0x40n, CR4); // and CR4.MCE
  page.writeBigUInt64LE(0x10n, CR0);
  page.writeBigUInt64LE(0x400n, DR7);
  page.writeBigUInt64LE(0xffff0ff0n, DR6);
  page.writeBigUInt64LE(0x2n, RFLAGS);
  page.writeBigUInt64LE(BigInt(eip & 0xffff), RIP);
  page.writeBigUInt64LE(pat, G_PAT);
  page.writeBigUInt64LE(BigInt(rdx >>> 0), RDX);
  page.writeBigUInt64LE(BigInt.asUintN(64, sevFeatures), SEV_FEATURES);
  page.writeBigUInt64LE(0x1n, XCR0);
  page.writeUInt32LE(mxcsr, MXCSR);
  page.writeUInt16LE(fcw, X87_FCW);
  return page;
}

/**
 * The VMSA of every vCPU under Coconut-SVSM: SVSM starts all of them in 32-bit protected mode
 * with flat segments at its own entry point, with SNPActive as the only guest feature. The x87
 * control word stays 0, as the published SVSM measurements show.
 */
export function svsmVmsa(eip: number, vcpuSignature: number, vmm: VmmType = 'QEMU'): Buffer {
  const page = Buffer.alloc(VMSA_SIZE);
  segment(page, SEG.es, 16, 0xc93, 0xffffffff, 0);
  segment(page, SEG.cs, 8, 0xc9b, 0xffffffff, 0);
  segment(page, SEG.ss, 16, 0xc93, 0xffffffff, 0);
  segment(page, SEG.ds, 16, 0xc93, 0xffffffff, 0);
  segment(page, SEG.fs, 16, 0xc93, 0xffffffff, 0);
  segment(page, SEG.gs, 0, 0x093, 0xffff, 0);
  segment(page, SEG.gdtr, 0, 0, 0xffff, 0);
  segment(page, SEG.idtr, 0, 0, 0xffff, 0);
  segment(page, SEG.ldtr, 0, 0x82, 0xffff, 0);
  segment(page, SEG.tr, 0, 0x8b, 0xffff, 0);
  page.writeBigUInt64LE(0x1000n, EFER);
  page.writeBigUInt64LE(0x40n, CR4);
  page.writeBigUInt64LE(0x11n, CR0);
  page.writeBigUInt64LE(0x400n, DR7);
  page.writeBigUInt64LE(0xffff0ff0n, DR6);
  page.writeBigUInt64LE(0x2n, RFLAGS);
  page.writeBigUInt64LE(BigInt(eip >>> 0), RIP);
  page.writeBigUInt64LE(DEFAULT_PAT, G_PAT);
  page.writeBigUInt64LE(BigInt(vcpuSignature >>> 0), RDX);
  page.writeBigUInt64LE(0x1n, SEV_FEATURES);
  page.writeBigUInt64LE(0x1n, XCR0);
  page.writeUInt32LE(vmm === 'QEMU' ? 0x1f80 : 0, MXCSR);
  return page;
}
