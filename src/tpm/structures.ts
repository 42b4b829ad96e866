/**
 * The TPM 2.0 structures Seal's commands send and receive (Part 2): PCR selections, public
 * areas of keys and NV indices and their Names, signatures, tickets, attestation structures and
 * capability data. Each has a writer and a bounded reader.
 */
import { ALG, CAP, ST } from './constants.ts';
import { TpmError } from './errors.ts';
import { digestSize, type HashName, hash, hashId, hashNameOf } from './hash.ts';
import { marshal, type Reader, type Writer } from './marshal.ts';

/** Bounds on what a well-formed response can hold; anything larger is refused as malformed. */
export const LIMITS = {
  digest: 64,
  name: 2 + 64,
  pcrSelectBytes: 8,
  banks: 16,
  /** RSA-4096 modulus, the largest key parameter. */
  key: 512,
  /** MAX_NV_BUFFER_SIZE, MAX_DIGEST_BUFFER and similar buffers. */
  buffer: 4096,
  listEntries: 1024,
} as const;

// ---------------------------------------------------------------- PCR selections

export interface PcrSelection {
  hash: HashName;
  pcrs: number[];
}

function pcrBitmap(pcrs: number[]): Buffer {
  const size = Math.max(3, Math.ceil((Math.max(-1, ...pcrs) + 1) / 8));
  const bitmap = Buffer.alloc(size);
  for (const pcr of pcrs) {
    if (!Number.isInteger(pcr) || pcr < 0 || pcr >= LIMITS.pcrSelectBytes * 8)
      throw new TpmError('TPM_INVALID_ARGUMENT', `PCR ${pcr} is out of range`);
    bitmap[pcr >> 3]! |= 1 << (pcr & 7);
  }
  return bitmap;
}

/** TPML_PCR_SELECTION. */
export function writePcrSelections(w: Writer, selections: PcrSelection[]): void {
  w.u32(selections.length);
  for (const s of selections) {
    const bitmap = pcrBitmap(s.pcrs);
    w.u16(hashId(s.hash)).u8(bitmap.length).bytes(bitmap);
  }
}

export function pcrSelectionBytes(selections: PcrSelection[]): Buffer {
  return marshal((w) => writePcrSelections(w, selections));
}

/** TPML_PCR_SELECTION; banks of hashes Seal does not know are returned with `alg` only. */
export function readPcrSelections(r: Reader, field = 'PCR selection'): (PcrSelection & { alg: number })[] {
  return r.list(field, LIMITS.banks, (item) => {
    const alg = item.u16(`${field} hash`);
    const size = item.u8(`${field} size`);
    if (size > LIMITS.pcrSelectBytes) item.fail(`${field} bitmap of ${size} bytes`);
    const bitmap = item.bytes(size, `${field} bitmap`);
    const pcrs: number[] = [];
    for (let i = 0; i < size * 8; i++) if (bitmap[i >> 3]! & (1 << (i & 7))) pcrs.push(i);
    return { alg, hash: (hashNameOf(alg) ?? `0x${alg.toString(16)}`) as HashName, pcrs };
  });
}

/** Selections in the TPM's canonical order: each bank's PCRs ascending. */
export function sortedSelections(selections: PcrSelection[]): PcrSelection[] {
  return selections.map((s) => ({ hash: s.hash, pcrs: [...new Set(s.pcrs)].sort((a, b) => a - b) }));
}

// ---------------------------------------------------------------- public areas

/** TPMT_SYM_DEF(_OBJECT): `alg` NULL has no key size or mode. */
export interface SymDef {
  alg: number;
  keyBits?: number;
  mode?: number;
}

/** A TPMT_*_SCHEME: `scheme` NULL has no details. */
export interface Scheme {
  scheme: number;
  hash?: number;
  /** ECDAA's count, XOR's KDF. */
  extra?: number;
}

export const NULL_SYM: SymDef = { alg: ALG.NULL };
export const AES_128_CFB: SymDef = { alg: ALG.AES, keyBits: 128, mode: ALG.CFB };
export const NULL_SCHEME: Scheme = { scheme: ALG.NULL };

interface PublicCommon {
  nameAlg: HashName;
  attributes: number;
  authPolicy: Buffer;
}

export interface EccPublic extends PublicCommon {
  type: 'ecc';
  symmetric: SymDef;
  scheme: Scheme;
  curve: number;
  kdf: Scheme;
  x: Buffer;
  y: Buffer;
}

export interface RsaPublic extends PublicCommon {
  type: 'rsa';
  symmetric: SymDef;
  scheme: Scheme;
  keyBits: number;
  /** 0 means 65537. */
  exponent: number;
  modulus: Buffer;
}

export interface KeyedHashPublic extends PublicCommon {
  type: 'keyedhash';
  scheme: Scheme;
  unique: Buffer;
}

export interface SymCipherPublic extends PublicCommon {
  type: 'symcipher';
  symmetric: SymDef;
  unique: Buffer;
}

/** TPMT_PUBLIC. */
export type PublicArea = EccPublic | RsaPublic | KeyedHashPublic | SymCipherPublic;

function writeSym(w: Writer, s: SymDef): void {
  w.u16(s.alg);
  if (s.alg === ALG.NULL) return;
  w.u16(s.keyBits ?? 0);
  if (s.alg !== ALG.XOR) w.u16(s.mode ?? ALG.NULL);
}

function readSym(r: Reader, field: string): SymDef {
  const alg = r.u16(`${field} algorithm`);
  if (alg === ALG.NULL) return { alg };
  if (alg === ALG.XOR) return { alg, keyBits: r.u16(`${field} hash`) };
  return { alg, keyBits: r.u16(`${field} key bits`), mode: r.u16(`${field} mode`) };
}

export function writeScheme(w: Writer, s: Scheme): void {
  w.u16(s.scheme);
  if (s.scheme === ALG.NULL) return;
  w.u16(s.hash ?? ALG.NULL);
  if (s.scheme === ALG.ECDAA || s.scheme === ALG.XOR) w.u16(s.extra ?? 0);
}

function readScheme(r: Reader, field: string): Scheme {
  const scheme = r.u16(`${field}`);
  if (scheme === ALG.NULL) return { scheme };
  const hashAlg = r.u16(`${field} hash`);
  if (scheme === ALG.ECDAA || scheme === ALG.XOR)
    return { scheme, hash: hashAlg, extra: r.u16(`${field} detail`) };
  return { scheme, hash: hashAlg };
}

const TYPE_IDS = { ecc: ALG.ECC, rsa: ALG.RSA, keyedhash: ALG.KEYEDHASH, symcipher: ALG.SYMCIPHER } as const;

export function writePublic(w: Writer, p: PublicArea): void {
  w.u16(TYPE_IDS[p.type]).u16(hashId(p.nameAlg)).u32(p.attributes).b(p.authPolicy);
  switch (p.type) {
    case 'ecc':
      writeSym(w, p.symmetric);
      writeScheme(w, p.scheme);
      w.u16(p.curve);
      writeScheme(w, p.kdf);
      w.b(p.x).b(p.y);
      break;
    case 'rsa':
      writeSym(w, p.symmetric);
      writeScheme(w, p.scheme);
      w.u16(p.keyBits).u32(p.exponent).b(p.modulus);
      break;
    case 'keyedhash':
      writeScheme(w, p.scheme);
      w.b(p.unique);
      break;
    case 'symcipher':
      writeSym(w, p.symmetric);
      w.b(p.unique);
      break;
  }
}

export function publicBytes(p: PublicArea): Buffer {
  return marshal((w) => writePublic(w, p));
}

function readNameAlg(r: Reader, field: string): HashName {
  const id = r.u16(field);
  const name = hashNameOf(id);
  if (!name) r.fail(`${field} 0x${id.toString(16)} is not a hash Seal supports`);
  return name;
}

export function readPublic(r: Reader, field = 'public area'): PublicArea {
  const type = r.u16(`${field} type`);
  const nameAlg = readNameAlg(r, `${field} nameAlg`);
  const attributes = r.u32(`${field} attributes`);
  const authPolicy = r.b(`${field} authPolicy`, LIMITS.digest);
  const common = { nameAlg, attributes, authPolicy };
  switch (type) {
    case ALG.ECC: {
      const symmetric = readSym(r, `${field} symmetric`);
      const scheme = readScheme(r, `${field} scheme`);
      const curve = r.u16(`${field} curve`);
      const kdf = readScheme(r, `${field} kdf`);
      const x = r.b(`${field} x`, LIMITS.key);
      const y = r.b(`${field} y`, LIMITS.key);
      return { type: 'ecc', ...common, symmetric, scheme, curve, kdf, x, y };
    }
    case ALG.RSA: {
      const symmetric = readSym(r, `${field} symmetric`);
      const scheme = readScheme(r, `${field} scheme`);
      const keyBits = r.u16(`${field} key bits`);
      const exponent = r.u32(`${field} exponent`);
      const modulus = r.b(`${field} modulus`, LIMITS.key);
      return { type: 'rsa', ...common, symmetric, scheme, keyBits, exponent, modulus };
    }
    case ALG.KEYEDHASH: {
      const scheme = readScheme(r, `${field} scheme`);
      return { type: 'keyedhash', ...common, scheme, unique: r.b(`${field} unique`, LIMITS.digest) };
    }
    case ALG.SYMCIPHER: {
      const symmetric = readSym(r, `${field} symmetric`);
      return { type: 'symcipher', ...common, symmetric, unique: r.b(`${field} unique`, LIMITS.digest) };
    }
    default:
      return r.fail(`${field} type 0x${type.toString(16)} is not a key type`);
  }
}

/** TPM2B_PUBLIC. */
export function readPublic2B(r: Reader, field = 'public area'): PublicArea {
  return r.sized(field, (inner) => readPublic(inner, field))!;
}

/** An object's Name: nameAlg ‖ H_nameAlg(TPMT_PUBLIC). */
export function objectName(p: PublicArea): Buffer {
  const alg = Buffer.alloc(2);
  alg.writeUInt16BE(hashId(p.nameAlg));
  return Buffer.concat([alg, hash(p.nameAlg, publicBytes(p))]);
}

/**
 * A Qualified Name (Part 1, 16): nameAlg ‖ H_nameAlg(parent's Qualified Name ‖ Name). A primary
 * object's parent Qualified Name is its hierarchy's handle (`handleName(RH.OWNER)`).
 */
export function qualifiedName(parentQualifiedName: Uint8Array, name: Uint8Array): Buffer {
  if (name.length < 2) throw new TpmError('TPM_INVALID_ARGUMENT', 'an empty Name has no Qualified Name');
  const alg = hashNameOf(Buffer.from(name).readUInt16BE(0));
  if (!alg) throw new TpmError('TPM_INVALID_ARGUMENT', 'a Name of an unknown hash algorithm');
  return Buffer.concat([name.subarray(0, 2), hash(alg, parentQualifiedName, name)]);
}

/** TPM2B_SENSITIVE_CREATE. */
export function writeSensitiveCreate(
  w: Writer,
  userAuth: Uint8Array,
  data: Uint8Array = Buffer.alloc(0),
): void {
  w.sized((s) => s.b(userAuth).b(data));
}

// ---------------------------------------------------------------- NV

/** TPMS_NV_PUBLIC. */
export interface NvPublic {
  index: number;
  nameAlg: HashName;
  attributes: number;
  authPolicy: Buffer;
  dataSize: number;
}

export function writeNvPublic(w: Writer, p: NvPublic): void {
  w.u32(p.index).u16(hashId(p.nameAlg)).u32(p.attributes).b(p.authPolicy).u16(p.dataSize);
}

export function readNvPublic(r: Reader, field = 'NV public area'): NvPublic {
  const index = r.u32(`${field} index`);
  const nameAlg = readNameAlg(r, `${field} nameAlg`);
  const attributes = r.u32(`${field} attributes`);
  const authPolicy = r.b(`${field} authPolicy`, LIMITS.digest);
  const dataSize = r.u16(`${field} size`);
  return { index, nameAlg, attributes, authPolicy, dataSize };
}

/** An NV index's Name: nameAlg ‖ H_nameAlg(TPMS_NV_PUBLIC). It changes as WRITTEN, WRITELOCKED… change. */
export function nvName(p: NvPublic): Buffer {
  const alg = Buffer.alloc(2);
  alg.writeUInt16BE(hashId(p.nameAlg));
  return Buffer.concat([
    alg,
    hash(
      p.nameAlg,
      marshal((w) => writeNvPublic(w, p)),
    ),
  ]);
}

/** The Name of a handle that is its own name: PCRs, sessions, hierarchies. */
export function handleName(handle: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(handle >>> 0);
  return b;
}

// ---------------------------------------------------------------- signatures and tickets

export type Signature =
  | { sigAlg: typeof ALG.ECDSA | typeof ALG.ECSCHNORR | typeof ALG.ECDAA; hash: number; r: Buffer; s: Buffer }
  | { sigAlg: typeof ALG.RSASSA | typeof ALG.RSAPSS; hash: number; sig: Buffer }
  | { sigAlg: typeof ALG.HMAC; hash: number; digest: Buffer }
  | { sigAlg: typeof ALG.NULL };

/** TPMT_SIGNATURE. */
export function writeSignature(w: Writer, s: Signature): void {
  w.u16(s.sigAlg);
  if (s.sigAlg === ALG.NULL) return;
  w.u16(s.hash);
  if ('r' in s) w.b(s.r).b(s.s);
  else if ('sig' in s) w.b(s.sig);
  else w.bytes(s.digest);
}

export function readSignature(r: Reader, field = 'signature'): Signature {
  const sigAlg = r.u16(`${field} algorithm`);
  if (sigAlg === ALG.NULL) return { sigAlg };
  const hashAlg = r.u16(`${field} hash`);
  switch (sigAlg) {
    case ALG.ECDSA:
    case ALG.ECSCHNORR:
    case ALG.ECDAA:
      return {
        sigAlg,
        hash: hashAlg,
        r: r.b(`${field} r`, LIMITS.key),
        s: r.b(`${field} s`, LIMITS.key),
      };
    case ALG.RSASSA:
    case ALG.RSAPSS:
      return { sigAlg, hash: hashAlg, sig: r.b(`${field} value`, LIMITS.key) };
    case ALG.HMAC: {
      const name = hashNameOf(hashAlg);
      if (!name) r.fail(`${field} HMAC hash 0x${hashAlg.toString(16)}`);
      return { sigAlg, hash: hashAlg, digest: r.bytes(digestSize(name), `${field} HMAC`) };
    }
    default:
      return r.fail(`${field} algorithm 0x${sigAlg.toString(16)} is not a signature scheme`);
  }
}

/** TPMT_TK_VERIFIED, TPMT_TK_HASHCHECK, TPMT_TK_AUTH, TPMT_TK_CREATION. */
export interface Ticket {
  tag: number;
  hierarchy: number;
  digest: Buffer;
}

export function writeTicket(w: Writer, t: Ticket): void {
  w.u16(t.tag).u32(t.hierarchy).b(t.digest);
}

export function readTicket(r: Reader, field = 'ticket'): Ticket {
  return {
    tag: r.u16(`${field} tag`),
    hierarchy: r.u32(`${field} hierarchy`),
    digest: r.b(`${field} digest`, LIMITS.digest),
  };
}

// ---------------------------------------------------------------- attestation

export interface ClockInfo {
  clock: bigint;
  resetCount: number;
  restartCount: number;
  safe: boolean;
}

/** TPMS_ATTEST (the signed part of a quote or certification). */
export interface Attest {
  magic: number;
  type: number;
  qualifiedSigner: Buffer;
  extraData: Buffer;
  clockInfo: ClockInfo;
  firmwareVersion: bigint;
  quote?: { pcrSelect: PcrSelection[]; pcrDigest: Buffer };
  certify?: { name: Buffer; qualifiedName: Buffer };
  /** The attested union of other types, unparsed. */
  other?: Buffer;
}

export function readAttest(r: Reader, field = 'attestation'): Attest {
  const magic = r.u32(`${field} magic`);
  const type = r.u16(`${field} type`);
  const qualifiedSigner = r.b(`${field} signer`, LIMITS.name);
  const extraData = r.b(`${field} extra data`, LIMITS.digest);
  const clockInfo = {
    clock: r.u64(`${field} clock`),
    resetCount: r.u32(`${field} reset count`),
    restartCount: r.u32(`${field} restart count`),
    safe: r.u8(`${field} safe`) !== 0,
  };
  const firmwareVersion = r.u64(`${field} firmware version`);
  const out: Attest = { magic, type, qualifiedSigner, extraData, clockInfo, firmwareVersion };
  if (type === ST.ATTEST_QUOTE) {
    out.quote = {
      pcrSelect: readPcrSelections(r, `${field} PCR selection`),
      pcrDigest: r.b(`${field} PCR digest`, LIMITS.digest),
    };
  } else if (type === ST.ATTEST_CERTIFY) {
    out.certify = {
      name: r.b(`${field} name`, LIMITS.name),
      qualifiedName: r.b(`${field} qualified name`, LIMITS.name),
    };
  } else {
    out.other = r.bytes(r.remaining, `${field} attested`);
  }
  return out;
}

// ---------------------------------------------------------------- capabilities

export type CapabilityData =
  | { capability: typeof CAP.TPM_PROPERTIES; properties: { property: number; value: number }[] }
  | { capability: typeof CAP.PCRS; banks: PcrSelection[] }
  | { capability: typeof CAP.HANDLES; handles: number[] }
  | { capability: typeof CAP.ALGS; algorithms: { alg: number; attributes: number }[] }
  | { capability: typeof CAP.COMMANDS; commands: number[] };

/** TPMS_CAPABILITY_DATA for the capabilities Seal asks for. */
export function readCapabilityData(r: Reader): CapabilityData {
  const capability = r.u32('capability');
  switch (capability) {
    case CAP.TPM_PROPERTIES:
      return {
        capability,
        properties: r.list('properties', LIMITS.listEntries, (i) => ({
          property: i.u32('property'),
          value: i.u32('value'),
        })),
      };
    case CAP.PCRS:
      return { capability, banks: readPcrSelections(r, 'PCR banks') };
    case CAP.HANDLES:
      return { capability, handles: r.list('handles', LIMITS.listEntries, (i) => i.u32('handle')) };
    case CAP.ALGS:
      return {
        capability,
        algorithms: r.list('algorithms', LIMITS.listEntries, (i) => ({
          alg: i.u16('algorithm'),
          attributes: i.u32('attributes'),
        })),
      };
    case CAP.COMMANDS:
      return {
        capability,
        commands: r.list('commands', LIMITS.listEntries, (i) => i.u32('command') & 0xffff),
      };
    default:
      return r.fail(`capability ${capability} is not one Seal asked for`);
  }
}
