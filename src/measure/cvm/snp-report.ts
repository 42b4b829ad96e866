/**
 * SEV-SNP attestation reports (SNP firmware ABI, "ATTESTATION_REPORT", 0x4A0 bytes, little-endian):
 * every field read, every reserved byte required to be zero, so that no byte of a report can
 * change without either changing a field or failing to parse. Bytes [0, 0x2A0) are signed; the
 * signature (ECDSA P-384 with SHA-384) is R and S, each 72 little-endian bytes of which the top
 * 24 are zero, followed by reserved zeros up to the end.
 */
import { CvmError } from './errors.ts';

export const REPORT_SIZE = 0x4a0;
export const SIGNED_SIZE = 0x2a0;
const SIG_R = 0x2a0;
const SIG_S = 0x2e8;
const SIG_COMPONENT = 72;
const SIG_END = 0x330;

/** ECDSA P-384 with SHA-384, the only signature algorithm SNP firmware uses. */
export const SIG_ALGO_ECDSA_P384_SHA384 = 1;

export type SigningKey = 'vcek' | 'vlek' | 'none';

/** A TCB_VERSION: security patch levels of the firmware components. */
export interface TcbVersion {
  raw: bigint;
  /** AMD Turin and later have an FMC level and a different byte order. */
  fmc?: number;
  bootloader: number;
  tee: number;
  snp: number;
  microcode: number;
}

export interface GuestPolicy {
  raw: bigint;
  abiMinor: number;
  abiMajor: number;
  smt: boolean;
  migrateMa: boolean;
  debug: boolean;
  singleSocket: boolean;
  cxlAllow: boolean;
  memAes256Xts: boolean;
  raplDis: boolean;
  ciphertextHiding: boolean;
  pageSwapDisable: boolean;
}

export interface Version {
  major: number;
  minor: number;
  build: number;
}

export interface SnpReport {
  version: number;
  guestSvn: number;
  policy: GuestPolicy;
  familyId: Buffer;
  imageId: Buffer;
  vmpl: number;
  signatureAlgorithm: number;
  currentTcb: TcbVersion;
  platformInfo: bigint;
  authorKeyEn: boolean;
  maskChipKey: boolean;
  signingKey: SigningKey;
  reportData: Buffer;
  measurement: Buffer;
  hostData: Buffer;
  idKeyDigest: Buffer;
  authorKeyDigest: Buffer;
  reportId: Buffer;
  reportIdMa: Buffer;
  reportedTcb: TcbVersion;
  /** Family, model and stepping of the chip (report version 3 and later). */
  cpuid?: { family: number; model: number; stepping: number };
  chipId: Buffer;
  committedTcb: TcbVersion;
  current: Version;
  committed: Version;
  launchTcb: TcbVersion;
  /** Mitigation vectors (report version 5 and later). */
  launchMitVector?: bigint;
  currentMitVector?: bigint;
  /** R and S of the signature, big-endian, 48 bytes each. */
  signature: { r: Buffer; s: Buffer };
  /** The signed bytes. */
  signed: Buffer;
}

const SIGNING_KEYS: Record<number, SigningKey> = { 0: 'vcek', 1: 'vlek', 7: 'none' };
/** Family 0x1A (Zen 5, Turin) lays its TCB_VERSION out differently. */
const TURIN_FAMILY = 0x1a;

export function parseTcb(raw: bigint, turin: boolean): TcbVersion {
  const b = (i: number) => Number((raw >> BigInt(8 * i)) & 0xffn);
  return turin
    ? { raw, fmc: b(0), bootloader: b(1), tee: b(2), snp: b(3), microcode: b(7) }
    : { raw, bootloader: b(0), tee: b(1), snp: b(6), microcode: b(7) };
}

export function parsePolicy(raw: bigint): GuestPolicy {
  const bit = (n: number) => ((raw >> BigInt(n)) & 1n) === 1n;
  return {
    raw,
    abiMinor: Number(raw & 0xffn),
    abiMajor: Number((raw >> 8n) & 0xffn),
    smt: bit(16),
    migrateMa: bit(18),
    debug: bit(19),
    singleSocket: bit(20),
    cxlAllow: bit(21),
    memAes256Xts: bit(22),
    raplDis: bit(23),
    ciphertextHiding: bit(24),
    pageSwapDisable: bit(25),
  };
}

function zeroRange(data: Buffer, from: number, to: number, name: string): void {
  for (let i = from; i < to; i++)
    if (data[i] !== 0)
      throw new CvmError('CVM_BAD_REPORT', `${name}: reserved byte 0x${i.toString(16)} is not zero`, {
        subject: name,
      });
}

/** Reads a report; `name` names it in errors. */
export function parseSnpReport(data: Uint8Array, name = 'report'): SnpReport {
  const r = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const bad = (message: string) => new CvmError('CVM_BAD_REPORT', `${name}: ${message}`, { subject: name });
  if (r.length !== REPORT_SIZE)
    throw bad(`an SNP attestation report is ${REPORT_SIZE} bytes, not ${r.length}`);
  const version = r.readUInt32LE(0);
  if (version < 2 || version > 5) throw bad(`report version ${version} is not one Seal reads (2 to 5)`);
  const signatureAlgorithm = r.readUInt32LE(0x34);
  if (signatureAlgorithm !== SIG_ALGO_ECDSA_P384_SHA384)
    throw bad(`signature algorithm ${signatureAlgorithm} is not ECDSA P-384 with SHA-384`);
  const policyRaw = r.readBigUInt64LE(0x08);
  if (((policyRaw >> 17n) & 1n) !== 1n) throw bad('guest policy bit 17 (reserved, must be one) is zero');
  const vmpl = r.readUInt32LE(0x30);
  if (vmpl > 3) throw bad(`VMPL ${vmpl} is not 0 to 3`);
  const signer = r.readUInt32LE(0x48);
  if (signer >>> 5 !== 0) throw bad(`signer information 0x${signer.toString(16)} sets reserved bits`);
  const signingKey = SIGNING_KEYS[(signer >>> 2) & 7];
  if (signingKey === undefined) throw bad(`signing key ${(signer >>> 2) & 7} is not VCEK, VLEK or none`);
  zeroRange(r, 0x4c, 0x50, name);
  let cpuid: SnpReport['cpuid'];
  if (version >= 3) {
    cpuid = { family: r[0x188] as number, model: r[0x189] as number, stepping: r[0x18a] as number };
    zeroRange(r, 0x18b, 0x1a0, name);
  } else {
    zeroRange(r, 0x188, 0x1a0, name);
  }
  zeroRange(r, 0x1eb, 0x1ec, name);
  zeroRange(r, 0x1ef, 0x1f0, name);
  zeroRange(r, version >= 5 ? 0x208 : 0x1f8, SIGNED_SIZE, name);
  // Signature: only the low 48 bytes of R and S may be non-zero, and nothing after them.
  zeroRange(r, SIG_R + 48, SIG_R + SIG_COMPONENT, name);
  zeroRange(r, SIG_S + 48, SIG_S + SIG_COMPONENT, name);
  zeroRange(r, SIG_END, REPORT_SIZE, name);
  const turin = cpuid?.family === TURIN_FAMILY;
  const tcb = (at: number) => parseTcb(r.readBigUInt64LE(at), turin);
  const slice = (from: number, to: number) => Buffer.from(r.subarray(from, to));
  const be = (at: number) => Buffer.from(r.subarray(at, at + 48)).reverse();
  return {
    version,
    guestSvn: r.readUInt32LE(0x04),
    policy: parsePolicy(policyRaw),
    familyId: slice(0x10, 0x20),
    imageId: slice(0x20, 0x30),
    vmpl,
    signatureAlgorithm,
    currentTcb: tcb(0x38),
    platformInfo: r.readBigUInt64LE(0x40),
    authorKeyEn: (signer & 1) === 1,
    maskChipKey: (signer & 2) === 2,
    signingKey,
    reportData: slice(0x50, 0x90),
    measurement: slice(0x90, 0xc0),
    hostData: slice(0xc0, 0xe0),
    idKeyDigest: slice(0xe0, 0x110),
    authorKeyDigest: slice(0x110, 0x140),
    reportId: slice(0x140, 0x160),
    reportIdMa: slice(0x160, 0x180),
    reportedTcb: tcb(0x180),
    ...(cpuid ? { cpuid } : {}),
    chipId: slice(0x1a0, 0x1e0),
    committedTcb: tcb(0x1e0),
    current: { build: r[0x1e8] as number, minor: r[0x1e9] as number, major: r[0x1ea] as number },
    committed: { build: r[0x1ec] as number, minor: r[0x1ed] as number, major: r[0x1ee] as number },
    launchTcb: tcb(0x1f0),
    ...(version >= 5
      ? { launchMitVector: r.readBigUInt64LE(0x1f8), currentMitVector: r.readBigUInt64LE(0x200) }
      : {}),
    signature: { r: be(SIG_R), s: be(SIG_S) },
    signed: slice(0, SIGNED_SIZE),
  };
}
