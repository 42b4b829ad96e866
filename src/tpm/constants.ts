/**
 * TPM 2.0 constants (TCG TPM 2.0 Library, Part 2: Structures) that Seal's client uses: command
 * codes, algorithm identifiers, handles, structure tags and attribute bits.
 */

/** Command codes (TPM_CC). */
export const CC = {
  NV_UndefineSpaceSpecial: 0x11f,
  EvictControl: 0x120,
  HierarchyControl: 0x121,
  NV_UndefineSpace: 0x122,
  Clear: 0x126,
  ClearControl: 0x127,
  HierarchyChangeAuth: 0x129,
  NV_DefineSpace: 0x12a,
  PCR_Allocate: 0x12b,
  CreatePrimary: 0x131,
  NV_GlobalWriteLock: 0x132,
  NV_Increment: 0x134,
  NV_SetBits: 0x135,
  NV_Extend: 0x136,
  NV_Write: 0x137,
  NV_WriteLock: 0x138,
  DictionaryAttackLockReset: 0x139,
  NV_ChangeAuth: 0x13b,
  PCR_Event: 0x13c,
  PCR_Reset: 0x13d,
  SelfTest: 0x143,
  Startup: 0x144,
  Shutdown: 0x145,
  StirRandom: 0x146,
  ActivateCredential: 0x147,
  Certify: 0x148,
  PolicyNV: 0x149,
  NV_Read: 0x14e,
  NV_ReadLock: 0x14f,
  ObjectChangeAuth: 0x150,
  PolicySecret: 0x151,
  Create: 0x153,
  Load: 0x157,
  Quote: 0x158,
  Sign: 0x15d,
  Unseal: 0x15e,
  PolicySigned: 0x160,
  ContextLoad: 0x161,
  ContextSave: 0x162,
  FlushContext: 0x165,
  LoadExternal: 0x167,
  MakeCredential: 0x168,
  NV_ReadPublic: 0x169,
  PolicyAuthorize: 0x16a,
  PolicyAuthValue: 0x16b,
  PolicyCommandCode: 0x16c,
  PolicyCpHash: 0x16e,
  PolicyLocality: 0x16f,
  PolicyOR: 0x171,
  ReadPublic: 0x173,
  StartAuthSession: 0x176,
  VerifySignature: 0x177,
  GetCapability: 0x17a,
  GetRandom: 0x17b,
  GetTestResult: 0x17c,
  Hash: 0x17d,
  PCR_Read: 0x17e,
  PolicyPCR: 0x17f,
  PolicyRestart: 0x180,
  PCR_Extend: 0x182,
  PolicyGetDigest: 0x189,
  PolicyPassword: 0x18c,
  PolicyNvWritten: 0x18f,
  PolicyAuthorizeNV: 0x192,
} as const;

const COMMAND_NAMES = new Map<number, string>(Object.entries(CC).map(([name, code]) => [code, name]));

/** `TPM2_NV_Read` for 0x14e; `TPM2_CC_0x...` for codes Seal does not name. */
export function commandName(code: number): string {
  const name = COMMAND_NAMES.get(code);
  return name ? `TPM2_${name}` : `TPM2_CC_0x${code.toString(16).padStart(3, '0')}`;
}

/** Algorithm identifiers (TPM_ALG_ID). */
export const ALG = {
  RSA: 0x0001,
  SHA1: 0x0004,
  HMAC: 0x0005,
  AES: 0x0006,
  KEYEDHASH: 0x0008,
  XOR: 0x000a,
  SHA256: 0x000b,
  SHA384: 0x000c,
  SHA512: 0x000d,
  NULL: 0x0010,
  RSASSA: 0x0014,
  RSAES: 0x0015,
  RSAPSS: 0x0016,
  OAEP: 0x0017,
  ECDSA: 0x0018,
  ECDH: 0x0019,
  ECDAA: 0x001a,
  ECSCHNORR: 0x001c,
  KDF1_SP800_56A: 0x0020,
  KDF1_SP800_108: 0x0022,
  ECC: 0x0023,
  SYMCIPHER: 0x0025,
  CFB: 0x0043,
} as const;

/** ECC curves (TPM_ECC_CURVE). */
export const ECC_CURVE = { NIST_P256: 0x0003, NIST_P384: 0x0004, NIST_P521: 0x0005 } as const;

/** Reserved handles (TPM_RH) and the password session (TPM_RS_PW). */
export const RH = {
  OWNER: 0x40000001,
  NULL: 0x40000007,
  PW: 0x40000009,
  LOCKOUT: 0x4000000a,
  ENDORSEMENT: 0x4000000b,
  PLATFORM: 0x4000000c,
  PLATFORM_NV: 0x4000000d,
} as const;

/** Handle types: the most significant byte of a handle (TPM_HT). */
export const HT = {
  PCR: 0x00,
  NV_INDEX: 0x01,
  HMAC_SESSION: 0x02,
  POLICY_SESSION: 0x03,
  PERMANENT: 0x40,
  TRANSIENT: 0x80,
  PERSISTENT: 0x81,
} as const;

/** Structure tags (TPM_ST). */
export const ST = {
  RSP_COMMAND: 0x00c4,
  NULL: 0x8000,
  NO_SESSIONS: 0x8001,
  SESSIONS: 0x8002,
  ATTEST_NV: 0x8014,
  ATTEST_COMMAND_AUDIT: 0x8015,
  ATTEST_SESSION_AUDIT: 0x8016,
  ATTEST_CERTIFY: 0x8017,
  ATTEST_QUOTE: 0x8018,
  ATTEST_TIME: 0x8019,
  ATTEST_CREATION: 0x801a,
  CREATION: 0x8021,
  VERIFIED: 0x8022,
  AUTH_SECRET: 0x8023,
  HASHCHECK: 0x8024,
  AUTH_SIGNED: 0x8025,
} as const;

/** The magic at the start of every TPM-generated attestation structure (TPM_GENERATED_VALUE). */
export const TPM_GENERATED_VALUE = 0xff544347;

/** Session types (TPM_SE). */
export const SE = { HMAC: 0x00, POLICY: 0x01, TRIAL: 0x03 } as const;

/** Startup and shutdown types (TPM_SU). */
export const SU = { CLEAR: 0x0000, STATE: 0x0001 } as const;

/** Capabilities (TPM_CAP). */
export const CAP = {
  ALGS: 0,
  HANDLES: 1,
  COMMANDS: 2,
  PCRS: 5,
  TPM_PROPERTIES: 6,
  ECC_CURVES: 8,
} as const;

/** TPM properties (TPM_PT) Seal reads. */
export const PT = {
  FAMILY_INDICATOR: 0x100,
  MANUFACTURER: 0x105,
  INPUT_BUFFER: 0x10d,
  NV_INDEX_MAX: 0x117,
  NV_BUFFER_MAX: 0x12c,
  PERMANENT: 0x200,
  STARTUP_CLEAR: 0x201,
} as const;

/** TPMA_PERMANENT bits. */
export const PERMANENT = {
  ownerAuthSet: 1 << 0,
  endorsementAuthSet: 1 << 1,
  lockoutAuthSet: 1 << 2,
  disableClear: 1 << 8,
  inLockout: 1 << 9,
} as const;

/** TPMA_SESSION bits. */
export const SESSION = {
  continueSession: 0x01,
  auditExclusive: 0x02,
  auditReset: 0x04,
  decrypt: 0x20,
  encrypt: 0x40,
  audit: 0x80,
} as const;

/** TPMA_OBJECT bits. */
export const OBJECT = {
  fixedTPM: 1 << 1,
  stClear: 1 << 2,
  fixedParent: 1 << 4,
  sensitiveDataOrigin: 1 << 5,
  userWithAuth: 1 << 6,
  adminWithPolicy: 1 << 7,
  noDA: 1 << 10,
  encryptedDuplication: 1 << 11,
  restricted: 1 << 16,
  decrypt: 1 << 17,
  sign: 1 << 18,
} as const;

/** TPMA_NV bits; the index type (TPM_NT) is a 4-bit field at bit 4, see `NT`. */
export const NV = {
  PPWRITE: 1 << 0,
  OWNERWRITE: 1 << 1,
  AUTHWRITE: 1 << 2,
  POLICYWRITE: 1 << 3,
  POLICY_DELETE: 1 << 10,
  WRITELOCKED: 1 << 11,
  WRITEALL: 1 << 12,
  WRITEDEFINE: 1 << 13,
  WRITE_STCLEAR: 1 << 14,
  GLOBALLOCK: 1 << 15,
  PPREAD: 1 << 16,
  OWNERREAD: 1 << 17,
  AUTHREAD: 1 << 18,
  POLICYREAD: 1 << 19,
  NO_DA: 1 << 25,
  ORDERLY: 1 << 26,
  CLEAR_STCLEAR: 1 << 27,
  READLOCKED: 1 << 28,
  WRITTEN: 1 << 29,
  PLATFORMCREATE: 1 << 30,
  READ_STCLEAR: 2 ** 31,
} as const;

/** NV index types (TPM_NT), already shifted into TPMA_NV's bits 4-7. */
export const NT = {
  ORDINARY: 0x0 << 4,
  COUNTER: 0x1 << 4,
  BITS: 0x2 << 4,
  EXTEND: 0x4 << 4,
  PIN_FAIL: 0x8 << 4,
  PIN_PASS: 0x9 << 4,
} as const;

/** PolicyNV / PolicyCounterTimer comparisons (TPM_EO). */
export const EO = {
  eq: 0x0000,
  neq: 0x0001,
  sgt: 0x0002,
  ugt: 0x0003,
  slt: 0x0004,
  ult: 0x0005,
  sge: 0x0006,
  uge: 0x0007,
  sle: 0x0008,
  ule: 0x0009,
  bs: 0x000a,
  bc: 0x000b,
} as const;

export type Operation = keyof typeof EO;
export const OPERATIONS = Object.keys(EO) as Operation[];
