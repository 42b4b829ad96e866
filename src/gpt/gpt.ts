/**
 * GUID Partition Tables (UEFI 2.10 §5.3): the protective MBR, the primary header and entry array
 * at LBA 1 and 2, their backups at the end of the disk, CRC32s over both. 512-byte sectors.
 * The reader takes the primary table, or the backup when the primary is damaged, and refuses
 * anything out of bounds; the writer lays partitions out in order, 1 MiB aligned.
 */
import { randomUUID } from 'node:crypto';
import { closeSync, fstatSync, openSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import { SealError } from '../errors.ts';
import { readFullySync } from '../util/read.ts';
import { writeFullySync } from '../util/write.ts';

export type GptErrorCode = 'GPT_NOT_FOUND' | 'GPT_CORRUPT' | 'GPT_INVALID';

export class GptError extends SealError<GptErrorCode> {}

export const SECTOR = 512;
const ENTRIES = 128;
const ENTRY_SIZE = 128;
/** Sectors the 128 entries take. */
const ENTRY_SECTORS = (ENTRIES * ENTRY_SIZE) / SECTOR;
const SIGNATURE = 'EFI PART';
const ALIGN = (1 << 20) / SECTOR;

/** Partition type GUIDs Seal uses. */
export const PartitionType = {
  esp: 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b',
  linuxData: '0fc63daf-8483-4772-8e79-3d69d8477de4',
  /** Seal's own: the OCI layout store (sealed images and signed manifests). */
  sealStore: '8e7b1b93-1d43-4c5b-a47c-6a3cd9a7b0e1',
  /** Seal's own: LUKS2, the accepted-manifest state. */
  sealConfig: '5f3c9b0e-2a4d-4e8f-9c61-0b7d2e4a8c35',
  /** Seal's own: LUKS2, the services' volumes. */
  sealData: 'b2d4f6a8-7c1e-4b3d-8a5f-9e0c1d2b3a47',
} as const;

export interface Partition {
  /** 1-based number, as the kernel names it (vda1). */
  number: number;
  type: string;
  guid: string;
  name: string;
  firstLba: number;
  lastLba: number;
  attributes: bigint;
}

export interface PartitionTable {
  diskGuid: string;
  /** Sectors of the disk the table describes. */
  sectors: number;
  firstUsableLba: number;
  lastUsableLba: number;
  partitions: Partition[];
  /** Whether the primary table was damaged and the backup was read. */
  fromBackup: boolean;
}

/** A GUID's on-disk form: the first three fields little-endian. */
export function encodeGuid(guid: string): Buffer {
  const hex = guid.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex))
    throw new GptError('GPT_INVALID', `${guid} is not a GUID`, { subject: guid });
  const b = Buffer.from(hex, 'hex');
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  return b;
}

export function decodeGuid(bytes: Uint8Array): string {
  const b = Buffer.from(bytes.subarray(0, 16));
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function header(table: PartitionTable, entriesCrc: number, backup: boolean): Buffer {
  const h = Buffer.alloc(SECTOR);
  h.write(SIGNATURE, 0, 'latin1');
  h.writeUInt32LE(0x00010000, 8);
  h.writeUInt32LE(92, 12);
  const last = table.sectors - 1;
  h.writeBigUInt64LE(BigInt(backup ? last : 1), 24);
  h.writeBigUInt64LE(BigInt(backup ? 1 : last), 32);
  h.writeBigUInt64LE(BigInt(table.firstUsableLba), 40);
  h.writeBigUInt64LE(BigInt(table.lastUsableLba), 48);
  encodeGuid(table.diskGuid).copy(h, 56);
  h.writeBigUInt64LE(BigInt(backup ? last - ENTRY_SECTORS : 2), 72);
  h.writeUInt32LE(ENTRIES, 80);
  h.writeUInt32LE(ENTRY_SIZE, 84);
  h.writeUInt32LE(entriesCrc, 88);
  h.writeUInt32LE(crc32(h.subarray(0, 92)), 16);
  return h;
}

function entryArray(partitions: Partition[]): Buffer {
  const a = Buffer.alloc(ENTRIES * ENTRY_SIZE);
  for (const p of partitions) {
    const at = (p.number - 1) * ENTRY_SIZE;
    encodeGuid(p.type).copy(a, at);
    encodeGuid(p.guid).copy(a, at + 16);
    a.writeBigUInt64LE(BigInt(p.firstLba), at + 32);
    a.writeBigUInt64LE(BigInt(p.lastLba), at + 40);
    a.writeBigUInt64LE(p.attributes, at + 48);
    const name = Buffer.from(p.name, 'utf16le');
    if (name.length > 72)
      throw new GptError('GPT_INVALID', `partition name ${p.name} is longer than 36 characters`);
    name.copy(a, at + 56);
  }
  return a;
}

function protectiveMbr(sectors: number): Buffer {
  const m = Buffer.alloc(SECTOR);
  const e = 446;
  m[e + 1] = 0x00;
  m[e + 2] = 0x02; // CHS of LBA 1
  m[e + 4] = 0xee;
  m.fill(0xff, e + 5, e + 8);
  m.writeUInt32LE(1, e + 8);
  m.writeUInt32LE(Math.min(sectors - 1, 0xffffffff), e + 12);
  m.writeUInt16LE(0xaa55, 510);
  return m;
}

export interface PartitionSpec {
  name: string;
  type: string;
  /** Size in bytes (rounded up to 1 MiB); the last partition may omit it to fill the disk. */
  size?: number;
  guid?: string;
}

/** A table for a disk of `bytes` with the partitions laid out in order, each 1 MiB aligned. */
export function layoutTable(
  bytes: number,
  specs: PartitionSpec[],
  diskGuid: string = randomUUID(),
): PartitionTable {
  const sectors = Math.floor(bytes / SECTOR);
  const firstUsableLba = 2 + ENTRY_SECTORS;
  const lastUsableLba = sectors - 2 - ENTRY_SECTORS;
  if (specs.length > ENTRIES) throw new GptError('GPT_INVALID', `more than ${ENTRIES} partitions`);
  const partitions: Partition[] = [];
  let next = ALIGN;
  specs.forEach((spec, i) => {
    const last =
      spec.size === undefined
        ? Math.floor((lastUsableLba + 1) / ALIGN) * ALIGN - 1
        : next + Math.ceil(spec.size / (ALIGN * SECTOR)) * ALIGN - 1;
    if (spec.size === undefined && i !== specs.length - 1)
      throw new GptError('GPT_INVALID', `only the last partition may fill the disk (${spec.name})`);
    if (last > lastUsableLba || last < next) {
      throw new GptError('GPT_INVALID', `partition ${spec.name} does not fit on a disk of ${bytes} bytes`, {
        subject: spec.name,
      });
    }
    partitions.push({
      number: i + 1,
      type: spec.type,
      guid: spec.guid ?? randomUUID(),
      name: spec.name,
      firstLba: next,
      lastLba: last,
      attributes: 0n,
    });
    next = last + 1;
  });
  return { diskGuid, sectors, firstUsableLba, lastUsableLba, partitions, fromBackup: false };
}

/** Writes the protective MBR and both tables of `table` to the disk (a file or block device). */
export function writeTable(disk: string, table: PartitionTable): void {
  const entries = entryArray(table.partitions);
  const entriesCrc = crc32(entries);
  const fd = openSync(disk, 'r+');
  try {
    const last = table.sectors - 1;
    writeFullySync(fd, protectiveMbr(table.sectors), 0);
    writeFullySync(fd, header(table, entriesCrc, false), SECTOR);
    writeFullySync(fd, entries, 2 * SECTOR);
    writeFullySync(fd, entries, (last - ENTRY_SECTORS) * SECTOR);
    writeFullySync(fd, header(table, entriesCrc, true), last * SECTOR);
  } finally {
    closeSync(fd);
  }
}

function read(fd: number, position: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  if (readFullySync(fd, b, position) < length)
    throw new GptError('GPT_CORRUPT', `the disk ends before byte ${position + length}`);
  return b;
}

/** The table at header LBA `lba`, or the reason it cannot be used. */
function tableAt(fd: number, sectors: number, lba: number): PartitionTable | string {
  const h = read(fd, lba * SECTOR, SECTOR);
  if (h.toString('latin1', 0, 8) !== SIGNATURE) return 'no GPT signature';
  const size = h.readUInt32LE(12);
  if (size < 92 || size > SECTOR) return `header size ${size}`;
  const stored = h.readUInt32LE(16);
  h.writeUInt32LE(0, 16);
  if (crc32(h.subarray(0, size)) !== stored) return 'header checksum mismatch';
  if (Number(h.readBigUInt64LE(24)) !== lba) return 'header in the wrong place';
  const first = Number(h.readBigUInt64LE(40));
  const lastUsable = Number(h.readBigUInt64LE(48));
  const entriesLba = Number(h.readBigUInt64LE(72));
  const count = h.readUInt32LE(80);
  const entrySize = h.readUInt32LE(84);
  if (entrySize < 128 || entrySize % 8 !== 0 || entrySize > 4096 || count > 1024) return 'entry geometry';
  if (
    first > lastUsable ||
    lastUsable >= sectors ||
    entriesLba + Math.ceil((count * entrySize) / SECTOR) > sectors
  )
    return 'bounds outside the disk';
  const entries = read(fd, entriesLba * SECTOR, count * entrySize);
  if (crc32(entries) !== h.readUInt32LE(88)) return 'entry array checksum mismatch';
  const partitions: Partition[] = [];
  for (let i = 0; i < count; i++) {
    const e = entries.subarray(i * entrySize, (i + 1) * entrySize);
    if (e.subarray(0, 16).every((b) => b === 0)) continue;
    const firstLba = Number(e.readBigUInt64LE(32));
    const lastLba = Number(e.readBigUInt64LE(40));
    if (firstLba < first || lastLba > lastUsable || lastLba < firstLba)
      return `partition ${i + 1} outside the usable area`;
    const raw = e.subarray(56, 128);
    let end = 0;
    while (end + 1 < raw.length && (raw[end] !== 0 || raw[end + 1] !== 0)) end += 2;
    partitions.push({
      number: i + 1,
      type: decodeGuid(e.subarray(0, 16)),
      guid: decodeGuid(e.subarray(16, 32)),
      name: raw.subarray(0, end).toString('utf16le'),
      firstLba,
      lastLba,
      attributes: e.readBigUInt64LE(48),
    });
  }
  const sorted = [...partitions].sort((a, b) => a.firstLba - b.firstLba);
  for (let i = 1; i < sorted.length; i++)
    if (sorted[i]!.firstLba <= sorted[i - 1]!.lastLba)
      return `partitions ${sorted[i - 1]!.number} and ${sorted[i]!.number} overlap`;
  return {
    diskGuid: decodeGuid(h.subarray(56, 72)),
    sectors,
    firstUsableLba: first,
    lastUsableLba: lastUsable,
    partitions,
    fromBackup: lba !== 1,
  };
}

/** Reads the partition table of a disk (image file or block device); the backup serves if the primary is damaged. */
export function readTable(disk: string, size?: number): PartitionTable {
  const fd = openSync(disk, 'r');
  try {
    const bytes = size ?? fstatSync(fd).size;
    const sectors = Math.floor(bytes / SECTOR);
    if (sectors < 2 * (2 + ENTRY_SECTORS))
      throw new GptError('GPT_NOT_FOUND', `${disk} is too small for a GPT`, { subject: disk });
    const primary = tableAt(fd, sectors, 1);
    if (typeof primary !== 'string') return primary;
    const backup = tableAt(fd, sectors, sectors - 1);
    if (typeof backup !== 'string') return backup;
    throw new GptError(
      primary === 'no GPT signature' && backup === 'no GPT signature' ? 'GPT_NOT_FOUND' : 'GPT_CORRUPT',
      `${disk}: no usable GPT (primary: ${primary}; backup: ${backup})`,
      { subject: disk },
    );
  } finally {
    closeSync(fd);
  }
}
