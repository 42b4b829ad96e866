/**
 * What goes into a UKI besides the stub: the section names systemd-stub knows, the order Seal
 * writes them in, SBAT merging and the kernel release read from an x86 kernel's setup header.
 */
import { closeSync, openSync } from 'node:fs';
import { readFullySync } from '../util/read.ts';
import { UkiError } from './errors.ts';

/** Sections Seal adds after the stub's own, in file order (the kernel last, as ukify places it). */
export const UKI_SECTION_ORDER = [
  '.osrel',
  '.cmdline',
  '.dtb',
  '.uname',
  '.splash',
  '.pcrpkey',
  '.pcrsig',
  '.initrd',
  '.linux',
] as const;

export type UkiSectionName = (typeof UKI_SECTION_ORDER)[number];

/** The SBAT header every .sbat starts with, and the generation line a UKI gets by default. */
export const SBAT_HEADER = 'sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md';
export const SBAT_UKI_DEFAULT =
  'uki,1,UKI,uki,1,https://uapi-group.org/specifications/specs/unified_kernel_image/';

/** The component lines of an SBAT CSV text (without the `sbat,` header and empty lines). */
export function sbatLines(text: string, subject: string): string[] {
  const lines = text
    .replace(/\0+$/, '')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  for (const line of lines) {
    const fields = line.split(',');
    if (fields.length < 2 || !/^[A-Za-z0-9._-]+$/.test(fields[0]!) || !/^\d+$/.test(fields[1]!))
      throw new UkiError(
        'UKI_BAD_SECTION',
        `${subject}: ${JSON.stringify(line)} is not an SBAT line (component,generation,...)`,
        {
          subject,
        },
      );
  }
  return lines.filter((l) => !l.startsWith('sbat,'));
}

/**
 * The .sbat of a UKI: the header, then the stub's and the kernel's component lines, then the
 * given ones (or the default UKI line), each component once; ends with a newline and a NUL.
 */
export function mergeSbat(parts: { text: string; subject: string }[]): Buffer {
  const seen = new Set<string>();
  const lines = [SBAT_HEADER];
  for (const { text, subject } of parts) {
    for (const line of sbatLines(text, subject)) {
      if (seen.has(line)) continue;
      seen.add(line);
      lines.push(line);
    }
  }
  return Buffer.from(`${lines.join('\n')}\n\0`, 'utf8');
}

/**
 * The release (`uname -r`) of an x86 Linux kernel image, from the version string its setup
 * header points to; undefined for other images.
 */
export function kernelRelease(path: string): string | undefined {
  const fd = openSync(path, 'r');
  try {
    const header = Buffer.alloc(0x210);
    if (readFullySync(fd, header, 0) < header.length || header.toString('latin1', 0x202, 0x206) !== 'HdrS')
      return undefined;
    const offset = header.readUInt16LE(0x20e);
    const text = Buffer.alloc(256);
    const n = readFullySync(fd, text, 0x200 + offset);
    const version = text.subarray(0, n).toString('latin1').split('\0')[0]!;
    const m = /^([A-Za-z0-9._+~-]+) \(/.exec(version);
    return m?.[1];
  } finally {
    closeSync(fd);
  }
}
