/**
 * A PE image opened for reading: headers, sections and the certificate table are decoded and
 * checked up front; section contents and the rest are read on demand from the file, so images of
 * any size (a kernel, a UKI with a large initrd) are never loaded whole.
 */
import { parseCertificateTable, type WinCertificate } from './certificates.ts';
import { PeError } from './errors.ts';
import {
  CERTIFICATE_DIRECTORY,
  DOS_HEADER_SIZE,
  decodeHeaders,
  decodeSections,
  headersLength,
  type PeHeaders,
  type PeSection,
} from './format.ts';
import { type ByteSource, bufferSource, chunks, fileSource } from './source.ts';

/** Sizes above this are read in chunks by `sectionChunks`, never as one buffer by `sectionData`. */
const MAX_WHOLE_READ = 256 << 20;

export class PeImage {
  readonly source: ByteSource;
  readonly headers: PeHeaders;
  readonly sections: PeSection[];
  /** Where the certificate table is, when the image has one (file offset and size). */
  readonly certificateTable: { offset: number; size: number } | undefined;
  #signatures: WinCertificate[] | undefined;

  private constructor(source: ByteSource) {
    this.source = source;
    const name = source.name;
    const dos = source.read(0, Math.min(source.size, 4096));
    if (dos.length < DOS_HEADER_SIZE)
      throw new PeError('PE_NOT_PE', `${name} is too short to be a PE image`, { subject: name });
    const wanted = headersLength(dos, name);
    if (wanted === undefined)
      throw new PeError('PE_TRUNCATED', `${name}: the PE header lies past the end of the file`, {
        subject: name,
      });
    if (wanted > source.size)
      throw new PeError('PE_TRUNCATED', `${name}: the headers lie past the end of the file`, {
        subject: name,
      });
    const head = wanted <= dos.length ? dos : source.read(0, wanted);
    this.headers = decodeHeaders(head, source.size, name);
    this.sections = decodeSections(head, this.headers, source.size, name);
    const directory = this.headers.dataDirectories[CERTIFICATE_DIRECTORY];
    if (directory && directory.size > 0) {
      const { address: offset, size } = directory;
      const fail = (message: string) =>
        new PeError(
          'PE_BAD_CERTIFICATE_TABLE',
          `${name}: certificate table (${size} bytes at ${offset}) ${message}`,
          {
            subject: name,
          },
        );
      if (offset + size > source.size) throw fail('lies past the end of the file');
      if (offset < this.headers.sizeOfHeaders) throw fail('overlaps the headers');
      for (const s of this.sections) {
        if (
          s.sizeOfRawData > 0 &&
          offset < s.pointerToRawData + s.sizeOfRawData &&
          s.pointerToRawData < offset + size
        )
          throw fail(`overlaps section ${JSON.stringify(s.name)}`);
      }
      this.certificateTable = { offset, size };
    }
  }

  static open(path: string): PeImage {
    const source = fileSource(path);
    try {
      return new PeImage(source);
    } catch (error) {
      source.close();
      throw error;
    }
  }

  /** An image over any byte source (closing the image closes the source). */
  static fromSource(source: ByteSource): PeImage {
    return new PeImage(source);
  }

  static fromBuffer(data: Uint8Array, name?: string): PeImage {
    return new PeImage(bufferSource(data, name));
  }

  get name(): string {
    return this.source.name;
  }

  get size(): number {
    return this.source.size;
  }

  /** The WIN_CERTIFICATE entries of the certificate table (none for an unsigned image). */
  certificates(): WinCertificate[] {
    if (!this.#signatures) {
      const table = this.certificateTable;
      this.#signatures = table
        ? parseCertificateTable(this.source.read(table.offset, table.size), table.offset, this.name)
        : [];
    }
    return this.#signatures;
  }

  /** The first section called `name`. */
  section(name: string): PeSection | undefined {
    return this.sections.find((s) => s.name === name);
  }

  read(offset: number, length: number): Buffer {
    return this.source.read(offset, length);
  }

  /**
   * A section's contents as the loader maps them: VirtualSize bytes, the raw data (up to
   * SizeOfRawData) followed by zeros. `raw` gives the file bytes only, up to VirtualSize.
   */
  *sectionChunks(section: PeSection, options: { raw?: boolean } = {}): Generator<Buffer> {
    const fromFile = Math.min(section.virtualSize, section.sizeOfRawData);
    yield* chunks(this.source, section.pointerToRawData, fromFile);
    if (options.raw) return;
    for (let zeros = section.virtualSize - fromFile; zeros > 0; ) {
      const n = Math.min(zeros, 1 << 20);
      yield Buffer.alloc(n);
      zeros -= n;
    }
  }

  /** A (small) section's contents as one buffer; see `sectionChunks`. */
  sectionData(section: PeSection, options: { raw?: boolean } = {}): Buffer {
    const length = options.raw ? Math.min(section.virtualSize, section.sizeOfRawData) : section.virtualSize;
    if (length > MAX_WHOLE_READ)
      throw new PeError(
        'PE_INVALID_OPTION',
        `${this.name}: section ${section.name} is too large to read whole`,
        {
          subject: this.name,
        },
      );
    const out = Buffer.alloc(length);
    let at = 0;
    for (const chunk of this.sectionChunks(section, options)) {
      chunk.copy(out, at);
      at += chunk.length;
    }
    return out;
  }

  close(): void {
    this.source.close();
  }
}

/**
 * A section's contents as the loader maps them (VirtualSize bytes: the raw data, then zeros),
 * as a byte source: an image embedded in another (a UKI's kernel) is read through it.
 */
export function sectionSource(image: PeImage, section: PeSection): ByteSource {
  const raw = Math.min(section.virtualSize, section.sizeOfRawData);
  const size = section.virtualSize;
  const name = `${image.name} ${section.name}`;
  return {
    name,
    size,
    read(offset, length, target) {
      if (offset < 0 || length < 0 || offset + length > size)
        throw new PeError(
          'PE_TRUNCATED',
          `${name}: ${length} bytes at ${offset} lie past the end of the section (${size} bytes)`,
          {
            subject: name,
          },
        );
      const out = target ? target.subarray(0, length) : Buffer.alloc(length);
      const fromFile = Math.max(0, Math.min(length, raw - offset));
      if (fromFile > 0) image.source.read(section.pointerToRawData + offset, fromFile, out);
      out.fill(0, fromFile);
      return out;
    },
    close() {},
  };
}

/** Runs `fn` on the image at `path` and closes it. */
export function withPeImage<T>(path: string, fn: (image: PeImage) => T): T {
  const image = PeImage.open(path);
  try {
    return fn(image);
  } finally {
    image.close();
  }
}
