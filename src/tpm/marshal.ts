/**
 * Big-endian marshalling of TPM 2.0 structures: a growable writer, and a bounded reader that
 * throws TPM_MALFORMED (naming what it was reading) instead of reading past its end.
 */
import { TpmError } from './errors.ts';

export class Writer {
  #buf = Buffer.allocUnsafe(256);
  #len = 0;

  #room(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.#buf.length * 2, this.#len + n));
    this.#buf.copy(next, 0, 0, this.#len);
    this.#buf = next;
  }

  get length(): number {
    return this.#len;
  }

  u8(v: number): this {
    this.#room(1);
    this.#buf.writeUInt8(v & 0xff, this.#len);
    this.#len += 1;
    return this;
  }

  u16(v: number): this {
    this.#room(2);
    this.#buf.writeUInt16BE(v & 0xffff, this.#len);
    this.#len += 2;
    return this;
  }

  u32(v: number): this {
    this.#room(4);
    this.#buf.writeUInt32BE(v >>> 0, this.#len);
    this.#len += 4;
    return this;
  }

  u64(v: bigint): this {
    this.#room(8);
    this.#buf.writeBigUInt64BE(v, this.#len);
    this.#len += 8;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.#room(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
    return this;
  }

  /** A TPM2B: u16 size, then the bytes. */
  b(b: Uint8Array): this {
    if (b.length > 0xffff)
      throw new TpmError('TPM_INVALID_ARGUMENT', `a sized buffer of ${b.length} bytes does not fit a TPM2B`);
    return this.u16(b.length).bytes(b);
  }

  /** A sized structure: u16 size, then what `fill` writes. */
  sized(fill: (w: Writer) => void): this {
    const inner = new Writer();
    fill(inner);
    return this.b(inner.finish());
  }

  /** A copy of the bytes written. */
  finish(): Buffer {
    return Buffer.from(this.#buf.subarray(0, this.#len));
  }
}

/** Builds bytes with a writer in one expression. */
export function marshal(fill: (w: Writer) => void): Buffer {
  const w = new Writer();
  fill(w);
  return w.finish();
}

export class Reader {
  readonly #buf: Buffer;
  #pos: number;
  readonly #end: number;
  /** What is being read, for error messages: "TPM2_NV_Read response". */
  readonly what: string;

  constructor(buf: Uint8Array, what: string, start = 0, end = buf.length) {
    this.#buf = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
    this.#pos = start;
    this.#end = end;
    this.what = what;
  }

  get offset(): number {
    return this.#pos;
  }

  get remaining(): number {
    return this.#end - this.#pos;
  }

  /** The TPM_MALFORMED error for `message` at the current position. */
  error(message: string): TpmError {
    return new TpmError('TPM_MALFORMED', `${this.what}: ${message} (at byte ${this.#pos})`);
  }

  fail(message: string): never {
    throw this.error(message);
  }

  #need(n: number, field: string): void {
    if (n > this.#end - this.#pos) this.fail(`${field} needs ${n} bytes, ${this.#end - this.#pos} left`);
  }

  u8(field = 'u8'): number {
    this.#need(1, field);
    return this.#buf.readUInt8(this.#pos++);
  }

  u16(field = 'u16'): number {
    this.#need(2, field);
    const v = this.#buf.readUInt16BE(this.#pos);
    this.#pos += 2;
    return v;
  }

  u32(field = 'u32'): number {
    this.#need(4, field);
    const v = this.#buf.readUInt32BE(this.#pos);
    this.#pos += 4;
    return v;
  }

  u64(field = 'u64'): bigint {
    this.#need(8, field);
    const v = this.#buf.readBigUInt64BE(this.#pos);
    this.#pos += 8;
    return v;
  }

  /** `n` bytes, copied (the result outlives the response buffer). */
  bytes(n: number, field = 'bytes'): Buffer {
    this.#need(n, field);
    const out = Buffer.from(this.#buf.subarray(this.#pos, this.#pos + n));
    this.#pos += n;
    return out;
  }

  /** A TPM2B, refused when larger than `max`. */
  b(field: string, max = 0xffff): Buffer {
    const size = this.u16(`${field} size`);
    if (size > max) this.fail(`${field} is ${size} bytes, at most ${max} allowed`);
    return this.bytes(size, field);
  }

  /** A sized structure read by `read` from a reader bounded to its size, which must consume it all. */
  sized<T>(field: string, read: (r: Reader) => T, { allowEmpty = false } = {}): T | undefined {
    const size = this.u16(`${field} size`);
    if (size === 0) {
      if (allowEmpty) return undefined;
      this.fail(`${field} is empty`);
    }
    this.#need(size, field);
    const inner = new Reader(this.#buf, `${this.what}, ${field}`, this.#pos, this.#pos + size);
    const value = read(inner);
    inner.end(field);
    this.#pos += size;
    return value;
  }

  /** A u32-counted list, refused when the count exceeds `max`. */
  list<T>(field: string, max: number, read: (r: Reader) => T): T[] {
    const count = this.u32(`${field} count`);
    if (count > max) this.fail(`${field} has ${count} entries, at most ${max} allowed`);
    const out: T[] = [];
    for (let i = 0; i < count; i++) out.push(read(this));
    return out;
  }

  /** Refuses trailing bytes. */
  end(field = 'structure'): void {
    if (this.#pos !== this.#end) this.fail(`${this.#end - this.#pos} unexpected bytes after ${field}`);
  }

  /** A reader over the next `n` bytes, which this one skips. */
  sub(n: number, field: string): Reader {
    this.#need(n, field);
    const inner = new Reader(this.#buf, `${this.what}, ${field}`, this.#pos, this.#pos + n);
    this.#pos += n;
    return inner;
  }
}
