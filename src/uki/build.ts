/**
 * Assembling a Unified Kernel Image on systemd's UEFI stub: the stub's headers and sections are
 * kept (its symbol table dropped, its .sbat rewritten in place with the merged SBAT), the UKI's
 * sections are added after them at SectionAlignment-aligned virtual addresses and FileAlignment-
 * aligned file offsets, and SizeOfImage, the section table and the checksum are set. The inputs
 * are streamed into the output (kernel and initrds are never loaded whole); with a signing key
 * the Authenticode digest is computed on the way and the signature appended in the same pass.
 * The same inputs always give the same bytes.
 */

import type { KeyObject } from 'node:crypto';
import { closeSync, fstatSync, openSync } from 'node:fs';
import {
  alignUp,
  DEBUG_DIRECTORY,
  encodeCertificateTable,
  PE32PLUS_MAGIC,
  PeImage,
  type PeSection,
  PeStream,
  SCN_CNT_CODE,
  SCN_CNT_INITIALIZED_DATA,
  SCN_MEM_READ,
  SECTION_HEADER_SIZE,
} from '../pe/index.ts';
import { signAuthenticodeDigest } from '../pki/authenticode.ts';
import type { CertificateInput } from '../pki/cms.ts';
import { writeAtomic } from '../util/atomic.ts';
import { readFullySync } from '../util/read.ts';
import { UkiError } from './errors.ts';
import { kernelRelease, mergeSbat, SBAT_UKI_DEFAULT, UKI_SECTION_ORDER } from './sections.ts';

export const DEFAULT_STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
const IMAGE_FILE_LOCAL_SYMS_STRIPPED = 0x0008;
/** New sections start on a page even when the stub's SectionAlignment is smaller (systemd 252's is 512). */
const MIN_SECTION_ALIGNMENT = 4096;

/** A section's contents: text or bytes, a file, or files concatenated (initrds, each padded to 4 bytes). */
export type SectionSource = string | Uint8Array | { path: string } | { paths: string[] };

export interface UkiInputs {
  /** The UEFI stub (default: systemd-boot-efi's linuxx64.efi.stub). */
  stub?: string;
  linux: string;
  initrds?: string[];
  cmdline?: string;
  /** An os-release file. */
  osRelease?: string;
  /** The kernel release; read from the kernel's setup header when absent. */
  uname?: string;
  /** SBAT CSV lines for the UKI (default: the generic `uki` generation line). */
  sbat?: string;
  splash?: string;
  dtb?: string;
  /** The public key PCR signatures are checked with (PEM). */
  pcrpkey?: string;
  /** Signed PCR policies (JSON), as systemd-measure sign makes them. */
  pcrsig?: string;
}

export interface BuildUkiOptions extends UkiInputs {
  /** Sign the UKI while writing it. */
  sign?: { key: KeyObject; certificates: CertificateInput[]; signingTime?: Date };
}

export interface UkiSectionInfo {
  name: string;
  virtualAddress: number;
  virtualSize: number;
  fileOffset: number;
  /** Whether the section comes from the stub. */
  fromStub: boolean;
}

export interface UkiBuildResult {
  output: string;
  size: number;
  checksum: number;
  stub: string;
  uname: string | undefined;
  sections: UkiSectionInfo[];
  /** What the build had to leave out or change. */
  warnings: string[];
  /** With `sign`: the signed Authenticode digest. */
  signedDigest?: string;
}

interface Part {
  path?: string;
  data?: Buffer;
  length: number;
}

interface NewSection {
  name: string;
  parts: Part[];
  size: number;
}

function fileSize(path: string): number {
  const fd = openSync(path, 'r');
  try {
    return fstatSync(fd).size;
  } finally {
    closeSync(fd);
  }
}

function sourceParts(source: SectionSource): Part[] {
  if (typeof source === 'string') {
    const data = Buffer.from(source, 'utf8');
    return [{ data, length: data.length }];
  }
  if (source instanceof Uint8Array) return [{ data: Buffer.from(source), length: source.length }];
  if ('path' in source) return [{ path: source.path, length: fileSize(source.path) }];
  // Several initrds: each padded to 4 bytes, so that every cpio archive starts aligned.
  if (source.paths.length === 1) return sourceParts({ path: source.paths[0]! });
  const parts: Part[] = [];
  for (const path of source.paths) {
    const length = fileSize(path);
    parts.push({ path, length });
    const pad = (4 - (length % 4)) % 4;
    if (pad) parts.push({ data: Buffer.alloc(pad), length: pad });
  }
  return parts;
}

/** The sections the inputs ask for, in Seal's order, empty ones left out. */
function plannedSections(inputs: UkiInputs, uname: string | undefined): NewSection[] {
  const sources: Partial<Record<(typeof UKI_SECTION_ORDER)[number], SectionSource>> = {
    '.osrel': inputs.osRelease ? { path: inputs.osRelease } : undefined,
    '.cmdline': inputs.cmdline,
    '.dtb': inputs.dtb ? { path: inputs.dtb } : undefined,
    '.uname': uname,
    '.splash': inputs.splash ? { path: inputs.splash } : undefined,
    '.pcrpkey': inputs.pcrpkey ? { path: inputs.pcrpkey } : undefined,
    '.pcrsig': inputs.pcrsig ? { path: inputs.pcrsig } : undefined,
    '.initrd': inputs.initrds?.length ? { paths: inputs.initrds } : undefined,
    '.linux': { path: inputs.linux },
  };
  const sections: NewSection[] = [];
  for (const name of UKI_SECTION_ORDER) {
    const source = sources[name];
    if (source === undefined) continue;
    const parts = sourceParts(source);
    const size = parts.reduce((n, p) => n + p.length, 0);
    if (size === 0) {
      if (name === '.linux')
        throw new UkiError('UKI_BAD_SECTION', `${inputs.linux} is empty`, { subject: inputs.linux });
      continue;
    }
    sections.push({ name, parts, size });
  }
  return sections;
}

/** The stub as a mutable buffer (headers and section data; symbol table dropped) and its layout. */
function loadStub(path: string, newSections: number) {
  const stub = PeImage.open(path);
  try {
    const h = stub.headers;
    const fail = (message: string) => new UkiError('UKI_BAD_STUB', `${path}: ${message}`, { subject: path });
    if (h.magic !== PE32PLUS_MAGIC) throw fail('not a PE32+ image');
    if (stub.certificateTable)
      throw fail('the stub is signed; give the unsigned stub (the UKI is signed as a whole)');
    if (h.offsets.certificateDirectory === undefined)
      throw fail('the optional header has no certificate-table entry');
    const { fileAlignment, sectionAlignment } = h;
    for (const [name, value] of [
      ['FileAlignment', fileAlignment],
      ['SectionAlignment', sectionAlignment],
    ] as const) {
      if (value < 512 || value > 65536 || (value & (value - 1)) !== 0)
        throw fail(`${name} ${value} is not a power of two from 512 to 64 KiB`);
    }
    let dataEnd = h.sizeOfHeaders;
    for (const s of stub.sections)
      if (s.sizeOfRawData > 0) dataEnd = Math.max(dataEnd, s.pointerToRawData + s.sizeOfRawData);
    // A COFF symbol table left at the end of the stub (systemd 252's) is dropped, as ukify does.
    let end = stub.size;
    if (h.pointerToSymbolTable !== 0 && h.pointerToSymbolTable >= dataEnd) end = h.pointerToSymbolTable;
    if (end !== dataEnd) throw fail(`${end - dataEnd} bytes follow the last section`);
    const data = stub.read(0, end);
    if (h.pointerToSymbolTable !== 0) {
      const coff = h.peOffset + 4;
      data.writeUInt32LE(0, coff + 8);
      data.writeUInt32LE(0, coff + 12);
      data.writeUInt16LE(h.characteristics | IMAGE_FILE_LOCAL_SYMS_STRIPPED, coff + 18);
    }
    // The stub's section data must follow the headers without gaps, so that every byte is signed.
    const withData = stub.sections
      .filter((s) => s.sizeOfRawData > 0)
      .sort((a, b) => a.pointerToRawData - b.pointerToRawData);
    const firstRaw = withData[0]?.pointerToRawData ?? dataEnd;
    let at = firstRaw;
    for (const s of withData) {
      if (s.pointerToRawData !== at) throw fail(`section ${s.name} does not follow the previous one`);
      at += s.sizeOfRawData;
    }
    if (firstRaw % fileAlignment !== 0)
      throw fail('the section data does not start on a FileAlignment boundary');
    // Room for the new section headers: grow the headers if needed, moving the section data.
    const needed = h.offsets.headersEnd + newSections * SECTION_HEADER_SIZE;
    let headers = firstRaw;
    let shift = 0;
    if (needed > headers) {
      headers = alignUp(needed, fileAlignment);
      const firstVa = Math.min(...stub.sections.map((s) => s.virtualAddress));
      if (headers > firstVa)
        throw fail(`no room for ${newSections} more section headers before the first section`);
      shift = headers - firstRaw;
    }
    return { stub, data, firstRaw, shift, headers, fileAlignment, sectionAlignment };
  } catch (error) {
    stub.close();
    throw error;
  }
}

/** The file offset of an RVA inside the stub's sections (for the debug directory fix-up). */
function rvaToOffset(sections: PeSection[], rva: number): number | undefined {
  for (const s of sections)
    if (rva >= s.virtualAddress && rva < s.virtualAddress + Math.max(s.virtualSize, s.sizeOfRawData))
      return s.pointerToRawData + (rva - s.virtualAddress);
  return undefined;
}

/** Builds a UKI at `output` (written atomically). */
export async function buildUki(output: string, options: BuildUkiOptions): Promise<UkiBuildResult> {
  const stubPath = options.stub ?? DEFAULT_STUB;
  const uname = options.uname ?? kernelRelease(options.linux);
  const added = plannedSections(options, uname);
  const {
    stub,
    data: stubData,
    firstRaw,
    shift,
    headers,
    fileAlignment,
    sectionAlignment,
  } = loadStub(stubPath, added.length + 1);
  try {
    const h = stub.headers;
    // The stub's .sbat gets the merged SBAT, in place.
    const sbatSection = stub.section('.sbat');
    const kernelSbat = withPeSbat(options.linux);
    const sbatParts = [
      ...(sbatSection
        ? [{ text: stub.sectionData(sbatSection).toString('utf8'), subject: `${stubPath} .sbat` }]
        : []),
      ...kernelSbat,
      { text: options.sbat ?? SBAT_UKI_DEFAULT, subject: '--sbat' },
    ];
    const sbat = mergeSbat(sbatParts);
    const extraSbat: NewSection[] = [];
    const warnings: string[] = [];
    let sbatSize = sbatSection?.virtualSize;
    if (sbatSection) {
      // In place: within the section's raw data and below the next section's address (systemd
      // 252's .sbat shares its page with .sdmagic).
      const nextVa = Math.min(
        ...stub.sections
          .filter((s) => s.virtualAddress > sbatSection.virtualAddress)
          .map((s) => s.virtualAddress),
      );
      const room = Math.min(sbatSection.sizeOfRawData, nextVa - sbatSection.virtualAddress);
      if (sbat.length <= room) {
        stubData.fill(
          0,
          sbatSection.pointerToRawData,
          sbatSection.pointerToRawData + sbatSection.sizeOfRawData,
        );
        sbat.copy(stubData, sbatSection.pointerToRawData);
        stubData.writeUInt32LE(sbat.length, sbatSection.headerOffset + 8);
        sbatSize = sbat.length;
      } else if (options.sbat === undefined && kernelSbat.length === 0) {
        warnings.push(
          `the stub's .sbat has room for ${room} bytes, not the ${sbat.length} with the default UKI line: kept as it is`,
        );
      } else {
        throw new UkiError(
          'UKI_BAD_SECTION',
          `the merged SBAT (${sbat.length} bytes) does not fit the stub's .sbat section (${room} bytes)`,
        );
      }
    } else {
      extraSbat.push({ name: '.sbat', parts: [{ data: sbat, length: sbat.length }], size: sbat.length });
    }
    const sections = [...extraSbat, ...added];
    if (extraSbat.length > 0 && h.offsets.headersEnd + sections.length * SECTION_HEADER_SIZE > headers)
      throw new UkiError('UKI_BAD_STUB', `${stubPath}: no room for the section headers`);
    // The new headers: the stub's, with SizeOfHeaders grown and raw data moved by `shift`.
    const head = Buffer.alloc(headers);
    stubData.copy(head, 0, 0, h.offsets.headersEnd);
    const optional = h.offsets.optionalHeader;
    head.writeUInt32LE(headers, optional + 60);
    const info: UkiSectionInfo[] = [];
    for (const s of stub.sections) {
      if (s.sizeOfRawData > 0) head.writeUInt32LE(s.pointerToRawData + shift, s.headerOffset + 20);
      info.push({
        name: s.name,
        virtualAddress: s.virtualAddress,
        virtualSize: s === sbatSection ? sbatSize! : s.virtualSize,
        fileOffset: s.pointerToRawData + shift,
        fromStub: true,
      });
    }
    const body = stubData.subarray(firstRaw);
    if (shift) fixDebugDirectory(stub, body, shift);
    let va = Math.max(
      ...stub.sections.map((s) => s.virtualAddress + Math.max(s.virtualSize, s.sizeOfRawData)),
    );
    let offset = alignUp(headers + body.length, fileAlignment);
    const vaAlignment = Math.max(sectionAlignment, MIN_SECTION_ALIGNMENT);
    let initializedData = h.sizeOfInitializedData;
    for (const [i, s] of sections.entries()) {
      va = alignUp(va, vaAlignment);
      const at = h.offsets.headersEnd + i * SECTION_HEADER_SIZE;
      const name = Buffer.alloc(8);
      name.write(s.name, 'latin1');
      name.copy(head, at);
      head.writeUInt32LE(s.size, at + 8);
      head.writeUInt32LE(va, at + 12);
      head.writeUInt32LE(alignUp(s.size, fileAlignment), at + 16);
      head.writeUInt32LE(offset, at + 20);
      head.writeUInt32LE(
        s.name === '.linux' ? SCN_CNT_CODE | SCN_MEM_READ : SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ,
        at + 36,
      );
      info.push({
        name: s.name,
        virtualAddress: va,
        virtualSize: s.size,
        fileOffset: offset,
        fromStub: false,
      });
      initializedData += s.size;
      va += s.size;
      offset += alignUp(s.size, fileAlignment);
    }
    const coff = h.peOffset + 4;
    head.writeUInt16LE(h.numberOfSections + sections.length, coff + 2);
    head.writeUInt32LE(Math.min(initializedData, 0xffffffff), optional + 8);
    head.writeUInt32LE(alignUp(va, sectionAlignment), optional + 56);
    head.writeUInt32LE(0, h.offsets.checkSum);
    head.writeBigUInt64LE(0n, h.offsets.certificateDirectory!);
    if (va > 0xffffffff || offset > 0xffffffff)
      throw new UkiError('UKI_BAD_SECTION', 'the UKI would exceed 4 GiB');

    const sign = options.sign;
    return await writeAtomic(output, async (handle) => {
      const stream = new PeStream(handle, {
        checkSumOffset: h.offsets.checkSum,
        certificateDirectoryOffset: h.offsets.certificateDirectory,
        digests: sign ? ['sha256'] : [],
      });
      await stream.write(head);
      await stream.write(body);
      const buffer = Buffer.allocUnsafe(1 << 20);
      for (const s of sections) {
        await stream.zeros(alignUp(stream.position, fileAlignment) - stream.position);
        for (const part of s.parts) {
          if (part.data) {
            await stream.write(part.data);
            continue;
          }
          const fd = openSync(part.path!, 'r');
          try {
            for (let done = 0; done < part.length; ) {
              const n = readFullySync(
                fd,
                buffer.subarray(0, Math.min(buffer.length, part.length - done)),
                done,
              );
              if (n === 0)
                throw new UkiError('UKI_BAD_SECTION', `${part.path} shrank while being read`, {
                  subject: part.path,
                });
              await stream.write(buffer.subarray(0, n));
              done += n;
            }
          } finally {
            closeSync(fd);
          }
        }
        await stream.zeros(alignUp(s.size, fileAlignment) - s.size);
      }
      let signedDigest: Buffer | undefined;
      let table: Buffer | undefined;
      if (sign) {
        signedDigest = stream.digests().sha256;
        table = encodeCertificateTable([signAuthenticodeDigest(signedDigest, 'sha256', sign)]);
      }
      const checksum = await stream.finish(table);
      return {
        output,
        size: stream.position,
        checksum,
        stub: stubPath,
        uname,
        sections: info,
        warnings,
        ...(signedDigest ? { signedDigest: signedDigest.toString('hex') } : {}),
      };
    });
  } finally {
    stub.close();
  }
}

/** The .sbat of the kernel, when it is a PE image that has one. */
function withPeSbat(path: string): { text: string; subject: string }[] {
  let image: PeImage;
  try {
    image = PeImage.open(path);
  } catch {
    return [];
  }
  try {
    const section = image.section('.sbat');
    return section ? [{ text: image.sectionData(section).toString('utf8'), subject: `${path} .sbat` }] : [];
  } finally {
    image.close();
  }
}

/** Moves the debug directory's file pointers with the section data they point into. */
function fixDebugDirectory(stub: PeImage, body: Buffer, shift: number): void {
  const directory = stub.headers.dataDirectories[DEBUG_DIRECTORY];
  if (!directory || directory.size === 0) return;
  const at = rvaToOffset(stub.sections, directory.address);
  if (at === undefined) return;
  const base = Math.min(...stub.sections.filter((s) => s.sizeOfRawData > 0).map((s) => s.pointerToRawData));
  for (
    let entry = at - base;
    entry + 28 <= at - base + directory.size && entry + 28 <= body.length;
    entry += 28
  ) {
    const pointer = body.readUInt32LE(entry + 24);
    if (pointer !== 0) body.writeUInt32LE(pointer + shift, entry + 24);
  }
}
