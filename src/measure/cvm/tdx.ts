/**
 * Intel TDX: the MRTD of a TD booting TDVF (OVMF built with TDX support, given whole to QEMU
 * with -bios). The firmware's TDX metadata (footer entry e47a6535-…, pointing at "TDVF" preceded
 * by the GUID e9eaf9f3-…) lists sections: `u32 data offset, u32 raw size, u64 GPA, u64 memory
 * size, u32 type, u32 attributes`. While building the TD, the VMM adds every page of every
 * section (TDH.MEM.PAGE.ADD) unless the section is added later (attribute PAGE.AUG, 0x2), and
 * extends the measurement with the contents of the sections marked MR.EXTEND (0x1), 256 bytes at
 * a time, page by page as KVM does. The TDX module folds each operation into one SHA-384:
 * a 128-byte record `"MEM.PAGE.ADD" ‖ 0… ‖ u64 GPA at 0x10`, and for each 256-byte chunk
 * `"MR.EXTEND" ‖ 0… ‖ u64 GPA at 0x10` (128 bytes) followed by the chunk.
 */
import { createHash } from 'node:crypto';
import { CvmError } from './errors.ts';
import { type Firmware, TDX_METADATA_GUID } from './firmware.ts';
import { guidBytes } from './guid.ts';

const TDVF_GUID = 'e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae';
const PAGE = 4096;
const CHUNK = 256;
const ATTR_MR_EXTEND = 0x1;
const ATTR_PAGE_AUG = 0x2;
/** Pages a TD is built with at most here: bounds the work a hostile image can ask for. */
const MAX_PAGES = 1 << 20;

export const TdxSectionType = {
  BFV: 0,
  CFV: 1,
  TD_HOB: 2,
  TEMP_MEM: 3,
  PERM_MEM: 4,
  PAYLOAD: 5,
  PAYLOAD_PARAM: 6,
  TD_INFO: 7,
  TD_PARAMS: 8,
} as const;

const TYPE_NAMES = [
  'bfv',
  'cfv',
  'td-hob',
  'temp-mem',
  'perm-mem',
  'payload',
  'payload-param',
  'td-info',
  'td-params',
];

export interface TdxSection {
  dataOffset: number;
  rawDataSize: number;
  memoryAddress: bigint;
  memoryDataSize: bigint;
  type: number;
  typeName: string;
  attributes: number;
}

function bad(fw: Firmware, message: string): CvmError {
  return new CvmError('CVM_BAD_TDX_METADATA', `${fw.name}: TDX metadata: ${message}`, { subject: fw.name });
}

/** The TDX metadata sections of a TDVF image. */
export function tdxSections(fw: Firmware): TdxSection[] {
  const data = fw.data;
  const fromEnd = fw.tableU32(TDX_METADATA_GUID);
  if (fromEnd === undefined)
    throw new CvmError(
      'CVM_BAD_TDX_METADATA',
      `${fw.name}: no TDX metadata in the footer table: not a TDVF image`,
      {
        subject: fw.name,
      },
    );
  const start = data.length - fromEnd;
  if (fromEnd > data.length || start < 16 || start + 16 > data.length)
    throw bad(fw, `offset ${fromEnd} from the end is outside the image`);
  if (!data.subarray(start - 16, start).equals(guidBytes(TDVF_GUID)))
    throw bad(fw, 'no TDVF GUID before the descriptor');
  if (data.toString('latin1', start, start + 4) !== 'TDVF') throw bad(fw, 'no "TDVF" signature');
  const length = data.readUInt32LE(start + 4);
  const version = data.readUInt32LE(start + 8);
  const count = data.readUInt32LE(start + 12);
  if (version !== 1) throw bad(fw, `version ${version}, not 1`);
  if (count === 0 || length !== 16 + 32 * count || start + length > data.length)
    throw bad(fw, `${count} sections in ${length} bytes do not fit the image`);
  const sections: TdxSection[] = [];
  let pages = 0n;
  for (let i = 0; i < count; i++) {
    const at = start + 16 + 32 * i;
    const s: TdxSection = {
      dataOffset: data.readUInt32LE(at),
      rawDataSize: data.readUInt32LE(at + 4),
      memoryAddress: data.readBigUInt64LE(at + 8),
      memoryDataSize: data.readBigUInt64LE(at + 16),
      type: data.readUInt32LE(at + 24),
      typeName: '',
      attributes: data.readUInt32LE(at + 28),
    };
    if (s.type >= TYPE_NAMES.length) throw bad(fw, `section ${i} has unknown type ${s.type}`);
    s.typeName = TYPE_NAMES[s.type] as string;
    if (s.memoryAddress % BigInt(PAGE) !== 0n || s.memoryDataSize % BigInt(PAGE) !== 0n)
      throw bad(fw, `section ${i} (${s.typeName}) is not whole pages`);
    if (
      s.type !== TdxSectionType.TD_INFO &&
      (s.memoryAddress !== 0n || s.memoryDataSize !== 0n) &&
      s.memoryDataSize < BigInt(s.rawDataSize)
    )
      throw bad(fw, `section ${i} (${s.typeName}) holds more data than memory`);
    if (s.attributes & ~(ATTR_MR_EXTEND | ATTR_PAGE_AUG))
      throw bad(fw, `section ${i} has unknown attributes`);
    pages += s.memoryDataSize / BigInt(PAGE);
    if (pages > BigInt(MAX_PAGES)) throw bad(fw, `sections cover more than ${MAX_PAGES} pages`);
    if (s.attributes & ATTR_MR_EXTEND && BigInt(s.dataOffset) + s.memoryDataSize > BigInt(data.length))
      throw bad(
        fw,
        `section ${i} (${s.typeName}) measures bytes past the end of the image (give QEMU's whole OVMF.fd, not OVMF_CODE.fd)`,
      );
    sections.push(s);
  }
  return sections;
}

/** The MRTD (SHA-384) of a TD built from the TDVF image `fw`. */
export function tdxMrtd(fw: Firmware): Buffer {
  const hash = createHash('sha384');
  const add = Buffer.alloc(128);
  add.write('MEM.PAGE.ADD', 0, 'latin1');
  const extend = Buffer.alloc(128);
  extend.write('MR.EXTEND', 0, 'latin1');
  for (const s of tdxSections(fw)) {
    const pages = Number(s.memoryDataSize / BigInt(PAGE));
    for (let p = 0; p < pages; p++) {
      const gpa = s.memoryAddress + BigInt(p * PAGE);
      if (!(s.attributes & ATTR_PAGE_AUG)) {
        add.writeBigUInt64LE(gpa, 0x10);
        hash.update(add);
      }
      if (s.attributes & ATTR_MR_EXTEND) {
        for (let c = 0; c < PAGE; c += CHUNK) {
          extend.writeBigUInt64LE(gpa + BigInt(c), 0x10);
          hash.update(extend);
          const from = s.dataOffset + p * PAGE + c;
          hash.update(fw.data.subarray(from, from + CHUNK));
        }
      }
    }
  }
  return hash.digest();
}
