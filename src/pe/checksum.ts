/**
 * The PE image checksum (the optional header's CheckSum, as imagehlp's CheckSumMappedFile computes
 * it): the file as little-endian 16-bit words, added with end-around carry, with the CheckSum field
 * itself counted as zero, plus the file length. The sum is order-free, so it is computed over
 * chunks as they stream by, and fields patched later (the certificate-table entry) are added where
 * they sit. Words are read in the host byte order, little-endian wherever Node.js runs Seal.
 */
import type { PeImage } from './reader.ts';
import { chunks } from './source.ts';

/** The sum of `data` as if it sat at `offset`: bytes at even offsets are low halves of words. */
function sumAt(data: Uint8Array, offset: number): number {
  let sum = 0;
  let i = 0;
  if (offset & 1 && data.length > 0) {
    sum += data[0]! << 8;
    i = 1;
  }
  const end = data.length - ((data.length - i) & 1);
  const base = data.byteOffset + i;
  if ((base & 1) === 0 && end - i >= 64) {
    const words = new Uint16Array(data.buffer, base, (end - i) >>> 1);
    for (let k = 0; k < words.length; k++) sum += words[k]!;
    i = end;
  }
  for (; i < end; i += 2) sum += data[i]! | (data[i + 1]! << 8);
  if (end < data.length) sum += data[end]!;
  return sum;
}

export class PeChecksum {
  // Not folded as it grows: 2^53 / 65535 words is far more than any PE file holds.
  #sum = 0;
  #length = 0;

  /** Appends the next bytes of the file. */
  update(data: Uint8Array): this {
    this.#sum += sumAt(data, this.#length);
    this.#length += data.length;
    return this;
  }

  /** Appends `count` bytes counted as zero (the CheckSum field, a field patched later with `add`). */
  skip(count: number): this {
    this.#length += count;
    return this;
  }

  /** Counts `data` at `offset` of a range already appended with `skip`. */
  add(offset: number, data: Uint8Array): this {
    this.#sum += sumAt(data, offset);
    return this;
  }

  get length(): number {
    return this.#length;
  }

  /** The checksum, for a file of the bytes given so far. */
  digest(): number {
    let sum = this.#sum;
    while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
    return (sum + this.#length) >>> 0;
  }
}

/** The checksum of a whole image file as it is (its stored CheckSum counted as zero). */
export function imageChecksum(image: PeImage): number {
  const sum = new PeChecksum();
  const at = image.headers.offsets.checkSum;
  const scratch = Buffer.allocUnsafe(1 << 20);
  for (const chunk of chunks(image.source, 0, at, scratch)) sum.update(chunk);
  sum.skip(4);
  for (const chunk of chunks(image.source, at + 4, image.size - at - 4, scratch)) sum.update(chunk);
  return sum.digest();
}
