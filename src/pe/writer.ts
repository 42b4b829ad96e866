/**
 * Writing a PE image as a stream: bytes are appended in file order while the checksum and, for
 * layouts where every byte up to the certificate table is hashed in file order (what Seal's UKI
 * builder writes), the Authenticode digests are computed on the way. `finish` pads to 8 bytes,
 * appends the certificate table and patches the CheckSum field and the certificate-table entry.
 */
import { createHash, type Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { writeFully } from '../util/write.ts';
import { PeChecksum } from './checksum.ts';
import type { DigestAlgorithm } from './digest.ts';
import { PeError } from './errors.ts';

export interface PeStreamOptions {
  /** File offsets of the CheckSum field and of the certificate-table data-directory entry. */
  checkSumOffset: number;
  certificateDirectoryOffset: number | undefined;
  /** Authenticode digests to compute while writing (only right for contiguous layouts). */
  digests?: DigestAlgorithm[];
}

export class PeStream {
  readonly #handle: FileHandle;
  readonly #options: PeStreamOptions;
  readonly #checksum = new PeChecksum();
  readonly #hashes: [DigestAlgorithm, Hash][];
  #position = 0;
  #pending: Buffer[] = [];
  #pendingBytes = 0;

  constructor(handle: FileHandle, options: PeStreamOptions) {
    this.#handle = handle;
    this.#options = options;
    this.#hashes = (options.digests ?? []).map((a) => [a, createHash(a)]);
  }

  get position(): number {
    return this.#position;
  }

  /** The excluded fields that overlap [start, end). */
  #excluded(start: number, end: number): [number, number][] {
    const fields: [number, number][] = [[this.#options.checkSumOffset, 4]];
    if (this.#options.certificateDirectoryOffset !== undefined)
      fields.push([this.#options.certificateDirectoryOffset, 8]);
    return fields
      .map(([at, n]): [number, number] => [Math.max(at, start), Math.min(at + n, end)])
      .filter(([a, b]) => a < b)
      .sort((x, y) => x[0] - y[0]);
  }

  /** Appends `data` (which the caller may reuse once the returned promise settles). */
  async write(data: Buffer): Promise<void> {
    if (data.length === 0) return;
    const start = this.#position;
    const end = start + data.length;
    const excluded = this.#excluded(start, end);
    let at = start;
    for (const [a, b] of excluded) {
      this.#account(data.subarray(at - start, a - start));
      this.#checksum.skip(b - a);
      at = b;
    }
    this.#account(data.subarray(at - start));
    // Small writes are gathered into one writev; large ones go straight through.
    this.#pending.push(data.length < 65536 ? Buffer.from(data) : data);
    this.#pendingBytes += data.length;
    this.#position = end;
    if (this.#pendingBytes >= 65536 || data.length >= 65536) await this.flush();
  }

  /** Appends `count` zero bytes. */
  async zeros(count: number): Promise<void> {
    for (let left = count; left > 0; ) {
      const n = Math.min(left, 1 << 20);
      await this.write(Buffer.alloc(n));
      left -= n;
    }
  }

  #account(part: Buffer): void {
    if (part.length === 0) return;
    this.#checksum.update(part);
    for (const [, h] of this.#hashes) h.update(part);
  }

  async flush(): Promise<void> {
    if (this.#pending.length === 0) return;
    const chunks = this.#pending;
    const at = this.#position - this.#pendingBytes;
    this.#pending = [];
    this.#pendingBytes = 0;
    await writeFully(this.#handle, chunks, at);
  }

  /** The Authenticode digests of what was written, with the padding a certificate table needs. */
  digests(): Record<DigestAlgorithm, Buffer> {
    const padding = Buffer.alloc((8 - (this.#position % 8)) % 8);
    return Object.fromEntries(this.#hashes.map(([a, h]) => [a, h.copy().update(padding).digest()])) as Record<
      DigestAlgorithm,
      Buffer
    >;
  }

  /**
   * Ends the image: with a certificate table, pads to 8 bytes, appends it and points the
   * certificate-table entry at it; then writes the CheckSum. Returns the checksum.
   */
  async finish(certificateTable?: Buffer): Promise<number> {
    let entry: Buffer | undefined;
    if (certificateTable) {
      const directory = this.#options.certificateDirectoryOffset;
      if (directory === undefined)
        throw new PeError('PE_BAD_HEADER', 'the image has no certificate-table directory entry to sign it');
      await this.zeros((8 - (this.#position % 8)) % 8);
      entry = Buffer.alloc(8);
      entry.writeUInt32LE(this.#position, 0);
      entry.writeUInt32LE(certificateTable.length, 4);
      await this.write(certificateTable);
      this.#checksum.add(directory, entry);
    } else if (this.#options.certificateDirectoryOffset !== undefined) {
      entry = Buffer.alloc(8);
    }
    await this.flush();
    if (entry) await writeFully(this.#handle, entry, this.#options.certificateDirectoryOffset!);
    const checksum = this.#checksum.digest();
    const field = Buffer.alloc(4);
    field.writeUInt32LE(checksum, 0);
    await writeFully(this.#handle, field, this.#options.checkSumOffset);
    return checksum;
  }
}
