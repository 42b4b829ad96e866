/**
 * Launch measurements of AMD SEV, SEV-ES and SEV-SNP guests booting OVMF, as the PSP computes
 * them when QEMU (or another VMM) launches the guest:
 *
 * - SEV: SHA-256 of the firmware image, then of the SEV hashes table when a kernel is booted
 *   directly.
 * - SEV-ES: the same, then every vCPU's initial VMSA page.
 * - SEV-SNP: the SHA-384 page chain of `SnpLaunchDigest` over the firmware (NORMAL pages), the
 *   pages the SEV metadata lists (ZERO, SECRETS, CPUID, and the kernel-hashes page), then one
 *   VMSA page per vCPU.
 * - SEV-SNP under Coconut-SVSM: the firmware and the SVSM image as NORMAL pages, the SVSM's
 *   metadata pages, and the SVSM's VMSAs.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { CvmError } from './errors.ts';
import { Firmware, SevSection, SVSM_INFO_GUID } from './firmware.ts';
import {
  type DirectBootHashes,
  directBootHashes,
  PADDED_TABLE_SIZE,
  sevHashesPage,
  sevHashesTable,
} from './sev-hashes.ts';
import { DIGEST_SIZE, PAGE_SIZE, SnpLaunchDigest } from './snp-digest.ts';
import { BSP_EIP, resetVmsa, svsmVmsa, type VmmType } from './vmsa.ts';

export type SevMode = 'sev' | 'seves' | 'snp' | 'snp:svsm';
export const SEV_MODES: readonly SevMode[] = ['sev', 'seves', 'snp', 'snp:svsm'];

/** Firmware images larger than this are not flash images QEMU maps; refused before reading. */
const MAX_FIRMWARE_BYTES = 64 * 1024 * 1024;
/** The most vCPUs a measurement is computed for (QEMU's x86 limit is far below). */
export const MAX_VCPUS = 4096;

export interface LaunchOptions {
  mode: SevMode;
  /** The OVMF image (path): the file QEMU maps below 4 GiB (OVMF.fd or OVMF_CODE.fd). */
  ovmf: string;
  /** Number of vCPUs (SEV-ES, SNP). */
  vcpus?: number;
  /** CPUID(1).EAX of the vCPU type (SEV-ES and SNP under QEMU). */
  vcpuSignature?: number;
  /** VMM that launches the guest: QEMU (default), ec2 or gce. */
  vmm?: VmmType;
  /** Direct boot: kernel, initrd and command line measured through the SEV hashes table. */
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  /** SNP guest features (SEV_FEATURES of the VMSAs); default 0x1 (SNPActive). */
  guestFeatures?: bigint;
  /** SNP: the digest of the firmware pages computed earlier (`snpOvmfHash`), used instead of reading them. */
  ovmfHash?: Uint8Array;
  /** snp:svsm: the SVSM image, mapped just below the firmware and its variable store. */
  svsm?: string;
  /** snp:svsm: size of the OVMF variable store mapped between the SVSM and the firmware. */
  varsSize?: number;
  /** Called with every VMSA page as it is measured (for dumping them). */
  onVmsa?: (index: number, page: Buffer) => void;
}

/** Reads a firmware image whole, refusing sizes no VMM maps. */
export async function readFirmware(path: string, endGpa?: number): Promise<Firmware> {
  const handle = await open(path, 'r');
  try {
    const { size } = await handle.stat();
    if (size > MAX_FIRMWARE_BYTES)
      throw new CvmError(
        'CVM_BAD_FIRMWARE',
        `${path}: ${size} bytes is larger than any firmware flash image`,
        {
          subject: path,
        },
      );
    const data = Buffer.alloc(size);
    let got = 0;
    while (got < size) {
      const { bytesRead } = await handle.read(data, got, size - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return new Firmware(data.subarray(0, got), path, endGpa);
  } finally {
    await handle.close();
  }
}

function invalid(message: string): CvmError {
  return new CvmError('CVM_INVALID_OPTION', message);
}

function checkVcpus(vcpus: number | undefined, mode: SevMode): number {
  if (vcpus === undefined) throw invalid(`mode ${mode} needs the number of vCPUs`);
  if (!Number.isSafeInteger(vcpus) || vcpus < 1 || vcpus > MAX_VCPUS)
    throw invalid(`the number of vCPUs is 1 to ${MAX_VCPUS}, not ${vcpus}`);
  return vcpus;
}

function noHashesTable(fw: Firmware): CvmError {
  return new CvmError(
    'CVM_NO_HASHES_TABLE',
    `${fw.name}: a kernel to measure, but this firmware reserves no SEV hashes table (build OVMF with measured direct boot, e.g. AmdSevX64)`,
    { subject: fw.name },
  );
}

/** The launch digest of a guest: 32 bytes (SHA-256) for SEV and SEV-ES, 48 (SHA-384) for SNP. */
export async function launchDigest(options: LaunchOptions): Promise<Buffer> {
  const { mode } = options;
  if (options.ovmfHash !== undefined && mode !== 'snp')
    throw invalid('a precomputed OVMF hash only works with mode snp');
  if ((options.initrd !== undefined || options.cmdline !== undefined) && options.kernel === undefined)
    throw invalid('an initrd or a command line is measured only with a kernel');
  switch (mode) {
    case 'sev':
    case 'seves':
      return sevLaunchDigest(options);
    case 'snp':
      return snpLaunchDigest(options);
    case 'snp:svsm':
      return svsmLaunchDigest(options);
    default:
      throw invalid(`unknown mode ${JSON.stringify(mode)}; known: sev, seves, snp, snp:svsm`);
  }
}

async function kernelHashes(options: LaunchOptions): Promise<DirectBootHashes | undefined> {
  return options.kernel === undefined
    ? undefined
    : directBootHashes(options.kernel, options.initrd, options.cmdline);
}

async function sevLaunchDigest(options: LaunchOptions): Promise<Buffer> {
  const fw = await readFirmware(options.ovmf);
  const es = options.mode === 'seves';
  const vcpus = es ? checkVcpus(options.vcpus, options.mode) : 0;
  const apEip = es ? fw.sevEsResetEip() : 0;
  const hash = createHash('sha256').update(fw.data);
  if (options.kernel !== undefined) {
    if (!fw.supportsSevHashes()) throw noHashesTable(fw);
    const hashes = await kernelHashes(options);
    hash.update(sevHashesTable(hashes as DirectBootHashes));
  }
  if (es) {
    const vmm = options.vmm ?? 'QEMU';
    const signature = options.vcpuSignature ?? 0;
    for (let i = 0; i < vcpus; i++) {
      const page = resetVmsa({
        eip: i === 0 ? BSP_EIP : apEip,
        sevFeatures: 0n,
        vcpuSignature: signature,
        vmm,
      });
      options.onVmsa?.(i, page);
      hash.update(page);
    }
  }
  return hash.digest();
}

/** The SNP launch digest after the firmware pages alone: what `ovmfHash` takes. */
export async function snpOvmfHash(ovmf: string): Promise<Buffer> {
  const fw = await readFirmware(ovmf);
  const ld = new SnpLaunchDigest();
  ld.normalPages(fw.gpa, fw.data);
  return ld.value();
}

/** Adds the pages the SEV metadata of `fw` lists, as `vmm` adds them. */
function metadataPages(
  ld: SnpLaunchDigest,
  fw: Firmware,
  hashes: DirectBootHashes | undefined,
  vmm: VmmType,
): void {
  const sections = fw.sevMetadata;
  if (sections === undefined)
    throw new CvmError(
      'CVM_NO_SEV_METADATA',
      `${fw.name}: no SEV metadata in the footer table: this firmware cannot start SEV-SNP guests`,
      { subject: fw.name },
    );
  for (const s of sections) {
    switch (s.type) {
      case SevSection.SNP_SEC_MEM:
        if (vmm === 'gce') ld.unmeasuredPages(s.gpa, s.size);
        else ld.zeroPages(s.gpa, s.size);
        break;
      case SevSection.SNP_SECRETS:
        ld.secretsPage(s.gpa);
        break;
      case SevSection.CPUID:
        // EC2 adds the CPUID page after all other metadata pages.
        if (vmm !== 'ec2') ld.cpuidPage(s.gpa);
        break;
      case SevSection.SNP_KERNEL_HASHES:
        if (hashes) {
          const tableGpa = fw.sevHashesTableGpa();
          if (tableGpa === 0) throw noHashesTable(fw);
          const offset = tableGpa & (PAGE_SIZE - 1);
          if (s.size !== PAGE_SIZE || offset + PADDED_TABLE_SIZE > PAGE_SIZE)
            throw new CvmError(
              'CVM_BAD_FIRMWARE',
              `${fw.name}: the kernel-hashes section (${s.size} bytes) cannot hold the hashes table at page offset ${offset}`,
              { subject: fw.name },
            );
          ld.normalPages(s.gpa, sevHashesPage(hashes, offset));
        } else {
          ld.zeroPages(s.gpa, s.size);
        }
        break;
      case SevSection.SVSM_CAA:
        ld.zeroPages(s.gpa, s.size);
        break;
    }
  }
  if (vmm === 'ec2') for (const s of sections) if (s.type === SevSection.CPUID) ld.cpuidPage(s.gpa);
  if (hashes && !fw.hasSevSection(SevSection.SNP_KERNEL_HASHES))
    throw new CvmError(
      'CVM_NO_HASHES_TABLE',
      `${fw.name}: a kernel to measure, but the SEV metadata lists no kernel-hashes page`,
      { subject: fw.name },
    );
}

async function snpLaunchDigest(options: LaunchOptions): Promise<Buffer> {
  const vcpus = checkVcpus(options.vcpus, options.mode);
  const vmm = options.vmm ?? 'QEMU';
  const fw = await readFirmware(options.ovmf);
  // The kernel and initrd are hashed while the firmware pages are.
  const hashing = kernelHashes(options);
  hashing.catch(() => {});
  let ld: SnpLaunchDigest;
  if (options.ovmfHash !== undefined) {
    if (options.ovmfHash.length !== DIGEST_SIZE)
      throw invalid(`an OVMF hash is ${DIGEST_SIZE} bytes, not ${options.ovmfHash.length}`);
    ld = new SnpLaunchDigest(options.ovmfHash);
  } else {
    ld = new SnpLaunchDigest();
    ld.normalPages(fw.gpa, fw.data);
  }
  const hashes = await hashing;
  metadataPages(ld, fw, hashes, vmm);
  const apEip = fw.sevEsResetEip();
  const sevFeatures = options.guestFeatures ?? 1n;
  const signature = options.vcpuSignature ?? 0;
  const bsp = resetVmsa({ eip: BSP_EIP, sevFeatures, vcpuSignature: signature, vmm });
  const ap = vcpus > 1 ? resetVmsa({ eip: apEip, sevFeatures, vcpuSignature: signature, vmm }) : bsp;
  for (let i = 0; i < vcpus; i++) {
    const page = i === 0 ? bsp : ap;
    options.onVmsa?.(i, page);
    ld.vmsaPage(page);
  }
  return ld.value();
}

async function svsmLaunchDigest(options: LaunchOptions): Promise<Buffer> {
  const vcpus = checkVcpus(options.vcpus, options.mode);
  const vmm = options.vmm ?? 'QEMU';
  if (vmm !== 'QEMU') throw invalid('mode snp:svsm is measured for QEMU only');
  if (options.svsm === undefined) throw invalid('mode snp:svsm needs the SVSM image');
  if (options.kernel !== undefined) throw invalid('mode snp:svsm measures no direct-boot kernel');
  const varsSize = options.varsSize;
  if (varsSize === undefined || !Number.isSafeInteger(varsSize) || varsSize < 0 || varsSize % PAGE_SIZE !== 0)
    throw invalid('mode snp:svsm needs the size of the OVMF variable store, in whole pages');
  const ovmf = await readFirmware(options.ovmf);
  if (varsSize > ovmf.gpa)
    throw invalid(`a variable store of ${varsSize} bytes does not fit below the firmware`);
  const svsm = await readFirmware(options.svsm, ovmf.gpa - varsSize);
  const entry = svsm.tableU32(SVSM_INFO_GUID);
  if (entry === undefined)
    throw new CvmError('CVM_BAD_FIRMWARE', `${svsm.name}: no SVSM information block in the footer table`, {
      subject: svsm.name,
    });
  const ld = new SnpLaunchDigest();
  ld.normalPages(ovmf.gpa, ovmf.data);
  ld.normalPages(svsm.gpa, svsm.data);
  metadataPages(ld, svsm, undefined, vmm);
  const page = svsmVmsa(svsm.gpa + entry, options.vcpuSignature ?? 0, vmm);
  for (let i = 0; i < vcpus; i++) {
    options.onVmsa?.(i, page);
    ld.vmsaPage(page);
  }
  return ld.value();
}
