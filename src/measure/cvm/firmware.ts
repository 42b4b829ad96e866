/**
 * The parts of an OVMF (or Coconut-SVSM) image that confidential-VM launches depend on: the
 * GUIDed table that ends 32 bytes before the end of the image, and the SEV metadata it points to.
 *
 * Footer table layout (edk2 OvmfPkg/ResetVector): read backwards from 32 bytes before the end,
 * each entry is `data, u16 size, GUID` where size counts the whole entry (data + 18); the outer
 * entry (GUID 96b582de-…) wraps all others. The SEV metadata is `"ASEV", u32 size, u32 version 1,
 * u32 count`, then `count` sections of `u32 gpa, u32 size, u32 type`.
 */
import { CvmError } from './errors.ts';
import { guidBytes, guidString } from './guid.ts';

export const FOOTER_TABLE_GUID = '96b582de-1fb2-45f7-baea-a366c55a082d';
export const SEV_HASH_TABLE_RV_GUID = '7255371f-3a3b-4b04-927b-1da6efa8d454';
export const SEV_ES_RESET_BLOCK_GUID = '00f771de-1a7e-4fcb-890e-68c77e2fb44e';
export const SEV_METADATA_GUID = 'dc886566-984a-4798-a75e-5585a7bf67cc';
export const SVSM_INFO_GUID = 'a789a612-0597-4c4b-a49f-cbb1fe9d1ddd';
export const TDX_METADATA_GUID = 'e47a6535-984a-4798-865e-4685a7bf8ec2';

const FOUR_GIB = 2 ** 32;
const ENTRY_HEADER = 18; // u16 size + GUID
const PAGE = 4096;
/** More guest memory than any firmware metadata describes; bounds the work a hostile image can ask for. */
const MAX_METADATA_BYTES = 256 * 1024 * 1024;

/** Kinds of pages the SEV metadata lists (edk2 OvmfSevMetadata.asm). */
export const SevSection = {
  /** Memory the firmware expects zeroed and validated: measured as ZERO pages. */
  SNP_SEC_MEM: 1,
  /** The SNP secrets page, filled by the PSP. */
  SNP_SECRETS: 2,
  /** The CPUID page, filled by the hypervisor and checked by the PSP. */
  CPUID: 3,
  /** The SVSM calling-area page. */
  SVSM_CAA: 4,
  /** The page holding the SEV hashes table of a direct kernel boot. */
  SNP_KERNEL_HASHES: 0x10,
} as const;
export type SevSectionType = (typeof SevSection)[keyof typeof SevSection];

const SECTION_NAMES: Record<number, string> = {
  1: 'snp-sec-mem',
  2: 'snp-secrets',
  3: 'cpuid',
  4: 'svsm-caa',
  16: 'snp-kernel-hashes',
};

export function sevSectionName(type: SevSectionType): string {
  return SECTION_NAMES[type] ?? `type-${type}`;
}

export interface SevMetadataSection {
  gpa: number;
  size: number;
  type: SevSectionType;
}

export class Firmware {
  /** The whole image, as it is mapped below `endGpa`. */
  readonly data: Buffer;
  /** What the image is called in messages. */
  readonly name: string;
  /** Guest-physical address of the first byte. */
  readonly gpa: number;
  /** Footer-table entries by GUID (lowercase text form), data without the entry header. */
  readonly table: ReadonlyMap<string, Buffer>;
  /** The SEV metadata sections in image order, or undefined when the image has none. */
  readonly sevMetadata: readonly SevMetadataSection[] | undefined;

  constructor(data: Buffer, name: string, endGpa = FOUR_GIB) {
    this.data = data;
    this.name = name;
    if (data.length === 0 || data.length % PAGE !== 0)
      throw new CvmError(
        'CVM_BAD_FIRMWARE',
        `${name}: a firmware image is whole 4 KiB pages, not ${data.length} bytes`,
        {
          subject: name,
        },
      );
    if (data.length > endGpa)
      throw new CvmError('CVM_BAD_FIRMWARE', `${name}: ${data.length} bytes do not fit below ${endGpa}`, {
        subject: name,
      });
    this.gpa = endGpa - data.length;
    this.table = parseFooterTable(data, name);
    this.sevMetadata = parseSevMetadata(data, name, this.table.get(SEV_METADATA_GUID));
  }

  private bad(message: string): CvmError {
    return new CvmError('CVM_BAD_FIRMWARE', `${this.name}: ${message}`, { subject: this.name });
  }

  /** The u32 at the start of a footer-table entry, or undefined when the entry is absent. */
  tableU32(guid: string): number | undefined {
    const entry = this.table.get(guid);
    if (entry === undefined) return undefined;
    if (entry.length < 4) throw this.bad(`footer-table entry ${guid} holds ${entry.length} bytes, not a u32`);
    return entry.readUInt32LE(0);
  }

  hasSevSection(type: SevSectionType): boolean {
    return this.sevMetadata?.some((s) => s.type === type) ?? false;
  }

  /** Where application processors start under SEV-ES and SNP (the SEV-ES reset block). */
  sevEsResetEip(): number {
    const eip = this.tableU32(SEV_ES_RESET_BLOCK_GUID);
    if (eip === undefined)
      throw new CvmError(
        'CVM_NO_RESET_BLOCK',
        `${this.name}: no SEV-ES reset block in the footer table: this firmware cannot start SEV-ES or SNP guests`,
        { subject: this.name },
      );
    return eip;
  }

  /** GPA of the SEV hashes table, or 0 when the image reserves none (builds without direct-boot measurement). */
  sevHashesTableGpa(): number {
    return this.tableU32(SEV_HASH_TABLE_RV_GUID) ?? 0;
  }

  /** Whether QEMU can measure a directly booted kernel, initrd and command line with this image. */
  supportsSevHashes(): boolean {
    return this.sevHashesTableGpa() !== 0;
  }
}

function parseFooterTable(data: Buffer, name: string): Map<string, Buffer> {
  const table = new Map<string, Buffer>();
  const end = data.length - 32; // the table ends 32 bytes before the end of the image
  const footerStart = end - ENTRY_HEADER;
  if (footerStart < 0 || !data.subarray(footerStart + 2, end).equals(guidBytes(FOOTER_TABLE_GUID)))
    return table;
  const size = data.readUInt16LE(footerStart);
  const bad = (message: string) =>
    new CvmError('CVM_BAD_FIRMWARE', `${name}: footer table: ${message}`, { subject: name });
  if (size < ENTRY_HEADER || size > end) throw bad(`size ${size} does not fit the image`);
  let pos = footerStart; // entries end here, read backwards
  const start = end - size;
  while (pos - start >= ENTRY_HEADER) {
    const entrySize = data.readUInt16LE(pos - ENTRY_HEADER);
    if (entrySize < ENTRY_HEADER || entrySize > pos - start)
      throw bad(`an entry of ${entrySize} bytes at offset ${pos - ENTRY_HEADER} does not fit the table`);
    const guid = guidString(data.subarray(pos - 16, pos));
    table.set(guid, data.subarray(pos - entrySize, pos - ENTRY_HEADER));
    pos -= entrySize;
  }
  return table;
}

function parseSevMetadata(
  data: Buffer,
  name: string,
  entry: Buffer | undefined,
): SevMetadataSection[] | undefined {
  if (entry === undefined) return undefined;
  const bad = (message: string) =>
    new CvmError('CVM_BAD_FIRMWARE', `${name}: SEV metadata: ${message}`, { subject: name });
  if (entry.length < 4) throw bad('the footer-table entry holds no offset');
  const fromEnd = entry.readUInt32LE(0);
  const start = data.length - fromEnd;
  if (fromEnd > data.length || start + 16 > data.length)
    throw bad(`offset ${fromEnd} from the end is outside the image`);
  if (data.toString('latin1', start, start + 4) !== 'ASEV') throw bad('no "ASEV" signature');
  const size = data.readUInt32LE(start + 4);
  const version = data.readUInt32LE(start + 8);
  const count = data.readUInt32LE(start + 12);
  if (version !== 1) throw bad(`version ${version}, not 1`);
  if (size < 16 || start + size > data.length) throw bad(`size ${size} does not fit the image`);
  if (count > (size - 16) / 12) throw bad(`${count} sections do not fit in ${size} bytes`);
  const sections: SevMetadataSection[] = [];
  let total = 0;
  for (let i = 0; i < count; i++) {
    const at = start + 16 + i * 12;
    const gpa = data.readUInt32LE(at);
    const length = data.readUInt32LE(at + 4);
    const type = data.readUInt32LE(at + 8);
    if (!(type in SECTION_NAMES)) throw bad(`section ${i} has unknown type ${type}`);
    if (gpa % PAGE !== 0 || length % PAGE !== 0)
      throw bad(`section ${i} (${SECTION_NAMES[type]}) at ${hex(gpa)}+${hex(length)} is not whole pages`);
    if (gpa + length > FOUR_GIB) throw bad(`section ${i} runs past 4 GiB`);
    total += length;
    if (total > MAX_METADATA_BYTES) throw bad(`sections cover more than ${MAX_METADATA_BYTES} bytes`);
    sections.push({ gpa, size: length, type: type as SevSectionType });
  }
  return sections;
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
