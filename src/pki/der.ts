/**
 * A strict DER walker for the few places where the exact encoded bytes of a structure matter
 * (the signed attributes a CMS signature covers, the content a message digest covers) and where
 * anything after a structure must be noticed. Definite, minimal lengths only; low tag numbers.
 * Typed parsing of the structures themselves is left to @peculiar/asn1-schema.
 */
import { PkiError } from './errors.ts';

export interface Tlv {
  tag: number;
  /** Offset of the tag byte. */
  offset: number;
  /** Offset of the value. */
  start: number;
  /** Offset after the value. */
  end: number;
  /** The whole encoding: tag, length and value. */
  bytes: Buffer;
  /** The value alone. */
  value: Buffer;
}

/** The TLV at `offset` of `data`; bad or non-minimal encodings and overruns are PKI_BAD_CMS. */
export function readTlv(data: Buffer, offset: number, what = 'structure'): Tlv {
  const fail = (message: string) => new PkiError('PKI_BAD_CMS', `${what}: ${message} at byte ${offset}`);
  if (offset + 2 > data.length) throw fail('truncated DER');
  const tag = data[offset]!;
  if ((tag & 0x1f) === 0x1f) throw fail('unsupported high tag number');
  let length = data[offset + 1]!;
  let start = offset + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0) throw fail('indefinite length (BER, not DER)');
    if (count > 4) throw fail('length too large');
    if (start + count > data.length) throw fail('truncated length');
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + data[start + i]!;
    if (data[start] === 0 || length < 0x80) throw fail('non-minimal length encoding');
    start += count;
  }
  const end = start + length;
  if (end > data.length) throw fail(`length ${length} runs past the data`);
  return { tag, offset, start, end, bytes: data.subarray(offset, end), value: data.subarray(start, end) };
}

/** The TLVs inside a constructed TLV's value, which they must fill exactly. */
export function children(tlv: Tlv, data: Buffer, what = 'structure'): Tlv[] {
  if (!(tlv.tag & 0x20))
    throw new PkiError('PKI_BAD_CMS', `${what}: expected a constructed value at byte ${tlv.offset}`);
  const out: Tlv[] = [];
  for (let at = tlv.start; at < tlv.end; ) {
    const child = readTlv(data.subarray(0, tlv.end), at, what);
    out.push(child);
    at = child.end;
  }
  return out;
}

/** DER length octets for `length`. */
export function encodeLength(length: number): Buffer {
  if (length < 0x80) return Buffer.of(length);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** A TLV from a tag and its value. */
export function encodeTlv(tag: number, value: Uint8Array): Buffer {
  return Buffer.concat([Buffer.of(tag), encodeLength(value.length), value]);
}

/** An OBJECT IDENTIFIER's DER encoding. */
export function encodeOid(oid: string): Buffer {
  const arcs = oid.split('.').map(Number);
  if (arcs.length < 2 || arcs.some((a) => !Number.isSafeInteger(a) || a < 0))
    throw new PkiError('PKI_BAD_CMS', `bad OID ${oid}`);
  const bytes: number[] = [];
  const push = (value: number) => {
    const group: number[] = [value & 0x7f];
    for (let v = Math.floor(value / 128); v > 0; v = Math.floor(v / 128)) group.unshift(0x80 | (v & 0x7f));
    bytes.push(...group);
  };
  push(arcs[0]! * 40 + arcs[1]!);
  for (const arc of arcs.slice(2)) push(arc);
  return encodeTlv(0x06, Buffer.from(bytes));
}

/** The dotted form of an OBJECT IDENTIFIER value (the bytes after tag and length). */
export function decodeOid(value: Buffer): string {
  const arcs: number[] = [];
  let n = 0;
  for (const byte of value) {
    n = n * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) {
      if (arcs.length === 0) arcs.push(n < 80 ? Math.floor(n / 40) : 2, n < 80 ? n % 40 : n - 80);
      else arcs.push(n);
      n = 0;
    }
  }
  return arcs.join('.');
}

/** UTCTime for 1950-2049, GeneralizedTime otherwise (RFC 5280 4.1.2.5). */
export function encodeTime(date: Date): Buffer {
  const iso = date
    .toISOString()
    .replace(/\.\d+Z$/, 'Z')
    .replace(/[-:T]/g, '');
  const year = date.getUTCFullYear();
  return year >= 1950 && year < 2050
    ? encodeTlv(0x17, Buffer.from(iso.slice(2), 'latin1'))
    : encodeTlv(0x18, Buffer.from(iso, 'latin1'));
}
