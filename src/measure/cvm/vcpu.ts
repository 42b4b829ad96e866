/**
 * Guest vCPU signatures. Under QEMU the initial VMSA of an SEV-ES or SNP guest carries the
 * vCPU's CPUID(1).EAX signature in RDX, so the launch digest depends on the CPU model QEMU was
 * told to emulate.
 */
import { CvmError } from './errors.ts';

/** CPUID Fn0000_0001_EAX for a family, model and stepping (AMD CPUID specification #25481). */
export function cpuSignature(family: number, model: number, stepping: number): number {
  for (const [name, value, max] of [
    ['family', family, 0xff + 0xf],
    ['model', model, 0xff],
    ['stepping', stepping, 0xf],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 0 || value > max)
      throw new CvmError(
        'CVM_INVALID_OPTION',
        `vCPU ${name} ${value} is not a whole number from 0 to ${max}`,
      );
  }
  const baseFamily = Math.min(family, 0xf);
  const extFamily = family > 0xf ? (family - 0xf) & 0xff : 0;
  return (
    ((extFamily << 20) |
      (((model >> 4) & 0xf) << 16) |
      (baseFamily << 8) |
      ((model & 0xf) << 4) |
      (stepping & 0xf)) >>>
    0
  );
}

type Fms = readonly [family: number, model: number, stepping: number];
const NAPLES: Fms = [23, 1, 2];
const ROME: Fms = [23, 49, 0];
const MILAN: Fms = [25, 1, 1];
const GENOA: Fms = [25, 17, 0];
const TURIN: Fms = [26, 0, 0];
const DHYANA: Fms = [24, 0, 1];

/**
 * The SEV-capable CPU models of QEMU's x86 CPU table (EPYC and Hygon Dhyana, with their
 * versions and aliases) by family, model and stepping. The test suite checks this against what
 * the installed QEMU expands each of its models to.
 */
const MODELS: Record<string, Fms> = {
  EPYC: NAPLES,
  'EPYC-v1': NAPLES,
  'EPYC-v2': NAPLES,
  'EPYC-IBPB': NAPLES,
  'EPYC-v3': NAPLES,
  'EPYC-v4': NAPLES,
  'EPYC-Rome': ROME,
  'EPYC-Rome-v1': ROME,
  'EPYC-Rome-v2': ROME,
  'EPYC-Rome-v3': ROME,
  'EPYC-Rome-v4': ROME,
  'EPYC-Milan': MILAN,
  'EPYC-Milan-v1': MILAN,
  'EPYC-Milan-v2': MILAN,
  'EPYC-Genoa': GENOA,
  'EPYC-Genoa-v1': GENOA,
  'EPYC-Turin': TURIN,
  Dhyana: DHYANA,
  'Dhyana-v1': DHYANA,
  'Dhyana-v2': DHYANA,
};

export const VCPU_TYPES: readonly string[] = Object.keys(MODELS);

/** Family, model and stepping of a named vCPU type. */
export function vcpuModel(type: string): { family: number; model: number; stepping: number } {
  const fms = Object.hasOwn(MODELS, type) ? MODELS[type] : undefined;
  if (!fms)
    throw new CvmError(
      'CVM_UNKNOWN_VCPU_TYPE',
      `unknown vCPU type ${JSON.stringify(type)}; known: ${VCPU_TYPES.join(', ')} (or give --vcpu-sig or --vcpu-family/--vcpu-model/--vcpu-stepping)`,
      { subject: type },
    );
  return { family: fms[0], model: fms[1], stepping: fms[2] };
}

/** The CPUID signature of a named vCPU type. */
export function vcpuTypeSignature(type: string): number {
  const { family, model, stepping } = vcpuModel(type);
  return cpuSignature(family, model, stepping);
}
