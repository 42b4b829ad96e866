/**
 * PE/COFF image headers (Microsoft PE format specification): the DOS header's `e_lfanew`, the
 * `PE\0\0` signature, the COFF file header, the PE32 / PE32+ optional header with its data
 * directories, and the section table. Decoding here is pure: it takes the header bytes and checks
 * every count and offset against them and against the file size before anything else uses them.
 */
import { PeError } from './errors.ts';

export const PE32_MAGIC = 0x10b;
export const PE32PLUS_MAGIC = 0x20b;
export const COFF_HEADER_SIZE = 20;
export const SECTION_HEADER_SIZE = 40;
/** Index of the certificate table (IMAGE_DIRECTORY_ENTRY_SECURITY) among the data directories. */
export const CERTIFICATE_DIRECTORY = 4;
export const DEBUG_DIRECTORY = 6;
export const MACHINE_X64 = 0x8664;
export const MACHINE_ARM64 = 0xaa64;

export const SCN_CNT_CODE = 0x20;
export const SCN_CNT_INITIALIZED_DATA = 0x40;
export const SCN_MEM_EXECUTE = 0x20000000;
export const SCN_MEM_READ = 0x40000000;
export const SCN_MEM_WRITE = 0x80000000;

/** Offsets inside the optional header that differ between PE32 and PE32+. */
const LAYOUT = {
  [PE32_MAGIC]: { imageBase: 28, numberOfRvaAndSizes: 92, dataDirectories: 96 },
  [PE32PLUS_MAGIC]: { imageBase: 24, numberOfRvaAndSizes: 108, dataDirectories: 112 },
} as const;

export interface DataDirectory {
  /** An RVA, except for the certificate table, where it is a file offset. */
  address: number;
  size: number;
}

export interface PeHeaders {
  /** File offset of the `PE\0\0` signature (`e_lfanew`). */
  peOffset: number;
  machine: number;
  numberOfSections: number;
  timeDateStamp: number;
  pointerToSymbolTable: number;
  numberOfSymbols: number;
  sizeOfOptionalHeader: number;
  characteristics: number;
  magic: typeof PE32_MAGIC | typeof PE32PLUS_MAGIC;
  sizeOfCode: number;
  sizeOfInitializedData: number;
  addressOfEntryPoint: number;
  imageBase: bigint;
  sectionAlignment: number;
  fileAlignment: number;
  majorImageVersion: number;
  minorImageVersion: number;
  sizeOfImage: number;
  sizeOfHeaders: number;
  checkSum: number;
  subsystem: number;
  dllCharacteristics: number;
  dataDirectories: DataDirectory[];
  /** File offsets of fields a writer patches. */
  offsets: {
    optionalHeader: number;
    checkSum: number;
    /** The certificate table's data-directory entry, or undefined when the header has too few entries. */
    certificateDirectory: number | undefined;
    dataDirectories: number;
    sectionTable: number;
    /** End of the section table. */
    headersEnd: number;
  };
}

export interface PeSection {
  /** The name as stored (up to 8 bytes, NUL padding removed). */
  name: string;
  virtualSize: number;
  virtualAddress: number;
  sizeOfRawData: number;
  pointerToRawData: number;
  characteristics: number;
  /** File offset of this section's 40-byte header. */
  headerOffset: number;
}

/** The minimum a file needs before `e_lfanew` can be read. */
export const DOS_HEADER_SIZE = 64;

/** `e_lfanew`, after checking the `MZ` signature. */
export function peOffsetOf(dos: Buffer, subject: string): number {
  if (dos.length < DOS_HEADER_SIZE)
    throw new PeError('PE_NOT_PE', `${subject} is too short to be a PE image`, { subject });
  if (dos[0] !== 0x4d || dos[1] !== 0x5a)
    throw new PeError('PE_NOT_PE', `${subject} has no MZ signature`, { subject });
  return dos.readUInt32LE(0x3c);
}

/**
 * Decodes the headers from `head`, the file's first bytes (at least up to the end of the section
 * table; callers read `headersLength(...)` bytes first).
 */
export function decodeHeaders(head: Buffer, fileSize: number, subject: string): PeHeaders {
  const fail = (code: 'PE_NOT_PE' | 'PE_TRUNCATED' | 'PE_BAD_HEADER' | 'PE_UNSUPPORTED', message: string) =>
    new PeError(code, `${subject}: ${message}`, { subject });
  const peOffset = peOffsetOf(head, subject);
  if (peOffset < DOS_HEADER_SIZE)
    throw fail('PE_BAD_HEADER', `e_lfanew ${peOffset} points into the DOS header`);
  if (peOffset + 4 + COFF_HEADER_SIZE + 2 > fileSize)
    throw fail('PE_TRUNCATED', 'the PE header lies past the end of the file');
  if (peOffset + 4 + COFF_HEADER_SIZE + 2 > head.length)
    throw fail('PE_TRUNCATED', 'the PE header was not read');
  if (head.readUInt32LE(peOffset) !== 0x00004550) throw fail('PE_NOT_PE', 'no PE signature at e_lfanew');
  const coff = peOffset + 4;
  const numberOfSections = head.readUInt16LE(coff + 2);
  const sizeOfOptionalHeader = head.readUInt16LE(coff + 16);
  const optional = coff + COFF_HEADER_SIZE;
  const magic = head.readUInt16LE(optional);
  if (magic !== PE32_MAGIC && magic !== PE32PLUS_MAGIC)
    throw fail('PE_UNSUPPORTED', `optional header magic 0x${magic.toString(16)} is neither PE32 nor PE32+`);
  const layout = LAYOUT[magic];
  if (sizeOfOptionalHeader < layout.dataDirectories)
    throw fail('PE_BAD_HEADER', `the optional header (${sizeOfOptionalHeader} bytes) is too short`);
  const sectionTable = optional + sizeOfOptionalHeader;
  const headersEnd = sectionTable + numberOfSections * SECTION_HEADER_SIZE;
  if (headersEnd > fileSize) throw fail('PE_TRUNCATED', 'the section table lies past the end of the file');
  if (headersEnd > head.length) throw fail('PE_TRUNCATED', 'the section table was not read');
  const numberOfRvaAndSizes = head.readUInt32LE(optional + layout.numberOfRvaAndSizes);
  if (numberOfRvaAndSizes > 16)
    throw fail('PE_BAD_HEADER', `${numberOfRvaAndSizes} data directories (at most 16)`);
  const dataDirectoriesAt = optional + layout.dataDirectories;
  if (layout.dataDirectories + numberOfRvaAndSizes * 8 > sizeOfOptionalHeader)
    throw fail('PE_BAD_HEADER', `${numberOfRvaAndSizes} data directories do not fit the optional header`);
  const dataDirectories: DataDirectory[] = [];
  for (let i = 0; i < numberOfRvaAndSizes; i++) {
    dataDirectories.push({
      address: head.readUInt32LE(dataDirectoriesAt + 8 * i),
      size: head.readUInt32LE(dataDirectoriesAt + 8 * i + 4),
    });
  }
  const sizeOfHeaders = head.readUInt32LE(optional + 60);
  if (sizeOfHeaders < headersEnd)
    throw fail(
      'PE_BAD_HEADER',
      `SizeOfHeaders ${sizeOfHeaders} ends inside the section table (${headersEnd})`,
    );
  if (sizeOfHeaders > fileSize)
    throw fail('PE_TRUNCATED', `SizeOfHeaders ${sizeOfHeaders} is past the end of the file`);
  return {
    peOffset,
    machine: head.readUInt16LE(coff),
    numberOfSections,
    timeDateStamp: head.readUInt32LE(coff + 4),
    pointerToSymbolTable: head.readUInt32LE(coff + 8),
    numberOfSymbols: head.readUInt32LE(coff + 12),
    sizeOfOptionalHeader,
    characteristics: head.readUInt16LE(coff + 18),
    magic,
    sizeOfCode: head.readUInt32LE(optional + 4),
    sizeOfInitializedData: head.readUInt32LE(optional + 8),
    addressOfEntryPoint: head.readUInt32LE(optional + 16),
    imageBase:
      magic === PE32PLUS_MAGIC
        ? head.readBigUInt64LE(optional + layout.imageBase)
        : BigInt(head.readUInt32LE(optional + layout.imageBase)),
    sectionAlignment: head.readUInt32LE(optional + 32),
    fileAlignment: head.readUInt32LE(optional + 36),
    majorImageVersion: head.readUInt16LE(optional + 44),
    minorImageVersion: head.readUInt16LE(optional + 46),
    sizeOfImage: head.readUInt32LE(optional + 56),
    sizeOfHeaders,
    checkSum: head.readUInt32LE(optional + 64),
    subsystem: head.readUInt16LE(optional + 68),
    dllCharacteristics: head.readUInt16LE(optional + 70),
    dataDirectories,
    offsets: {
      optionalHeader: optional,
      checkSum: optional + 64,
      certificateDirectory:
        numberOfRvaAndSizes > CERTIFICATE_DIRECTORY
          ? dataDirectoriesAt + 8 * CERTIFICATE_DIRECTORY
          : undefined,
      dataDirectories: dataDirectoriesAt,
      sectionTable,
      headersEnd,
    },
  };
}

/** How many bytes from the start of the file hold the headers, given its DOS and COFF headers. */
export function headersLength(head: Buffer, subject: string): number | undefined {
  const peOffset = peOffsetOf(head, subject);
  const coff = peOffset + 4;
  if (head.length < coff + COFF_HEADER_SIZE) return undefined;
  return (
    coff + COFF_HEADER_SIZE + head.readUInt16LE(coff + 16) + head.readUInt16LE(coff + 2) * SECTION_HEADER_SIZE
  );
}

export function decodeSections(
  head: Buffer,
  headers: PeHeaders,
  fileSize: number,
  subject: string,
): PeSection[] {
  const sections: PeSection[] = [];
  for (let i = 0; i < headers.numberOfSections; i++) {
    const at = headers.offsets.sectionTable + i * SECTION_HEADER_SIZE;
    const rawName = head.subarray(at, at + 8);
    const nul = rawName.indexOf(0);
    const section: PeSection = {
      name: rawName.subarray(0, nul < 0 ? 8 : nul).toString('latin1'),
      virtualSize: head.readUInt32LE(at + 8),
      virtualAddress: head.readUInt32LE(at + 12),
      sizeOfRawData: head.readUInt32LE(at + 16),
      pointerToRawData: head.readUInt32LE(at + 20),
      characteristics: head.readUInt32LE(at + 36),
      headerOffset: at,
    };
    if (section.sizeOfRawData > 0 && section.pointerToRawData + section.sizeOfRawData > fileSize) {
      throw new PeError(
        'PE_BAD_SECTION',
        `${subject}: section ${JSON.stringify(section.name)} (${section.sizeOfRawData} bytes at ${section.pointerToRawData}) lies past the end of the file (${fileSize} bytes)`,
        { subject },
      );
    }
    if (section.virtualAddress + section.virtualSize > headers.sizeOfImage) {
      throw new PeError(
        'PE_BAD_SECTION',
        `${subject}: section ${JSON.stringify(section.name)} ends past SizeOfImage (${headers.sizeOfImage})`,
        { subject },
      );
    }
    if (section.sizeOfRawData > 0 && section.pointerToRawData < headers.offsets.headersEnd) {
      throw new PeError(
        'PE_BAD_SECTION',
        `${subject}: section ${JSON.stringify(section.name)} data at ${section.pointerToRawData} overlaps the headers`,
        { subject },
      );
    }
    sections.push(section);
  }
  return sections;
}

export const alignUp = (value: number, alignment: number): number => Math.ceil(value / alignment) * alignment;
