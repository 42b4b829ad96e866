/**
 * Metadata streams: the inode, directory, fragment, export, id and xattr tables are written as
 * 8 KiB blocks, each compressed on its own and prefixed by a u16 header. A reference to a byte in
 * a stream is (start of its compressed block, offset in the uncompressed block).
 */
import { type BlockCodec, compressBlock } from './compression.ts';
import { METADATA_SIZE, METADATA_UNCOMPRESSED } from './format.ts';

export class MetadataWriter {
  #codec: BlockCodec;
  #blocks: Buffer[] = [];
  #compressedSize = 0;
  #current = Buffer.alloc(METADATA_SIZE);
  #used = 0;
  /** Compressed start of every completed block, in order. */
  readonly blockStarts: number[] = [];

  constructor(codec: BlockCodec) {
    this.#codec = codec;
  }

  /** Where the next byte will land: [compressed block start, offset in block]. */
  position(): { block: number; offset: number } {
    return { block: this.#compressedSize, offset: this.#used };
  }

  /** Uncompressed bytes written so far. */
  get length(): number {
    return this.blockStarts.length * METADATA_SIZE + this.#used;
  }

  write(data: Uint8Array): void {
    let done = 0;
    while (done < data.length) {
      const take = Math.min(METADATA_SIZE - this.#used, data.length - done);
      this.#current.set(data.subarray(done, done + take), this.#used);
      this.#used += take;
      done += take;
      if (this.#used === METADATA_SIZE) this.#flush();
    }
  }

  #flush(): void {
    if (this.#used === 0) return;
    const raw = this.#current.subarray(0, this.#used);
    const packed = compressBlock(this.#codec, raw);
    const header = Buffer.alloc(2);
    header.writeUInt16LE(packed ? packed.length : raw.length | METADATA_UNCOMPRESSED);
    const block = Buffer.concat([header, packed ?? raw]);
    this.blockStarts.push(this.#compressedSize);
    this.#blocks.push(block);
    this.#compressedSize += block.length;
    this.#current = Buffer.alloc(METADATA_SIZE);
    this.#used = 0;
  }

  /** Flushes the last partial block and returns the whole stream. */
  finish(): Buffer {
    this.#flush();
    return Buffer.concat(this.#blocks);
  }
}

/** A reference packed as squashfs stores it: block start << 16 | offset. */
export function packRef(block: number, offset: number): bigint {
  return (BigInt(block) << 16n) | BigInt(offset);
}
