/**
 * TPM 2.0 response codes (Part 2, 6.6): format-0 errors and warnings, format-1 errors with the
 * handle, session or parameter they are about, vendor and TPM 1.2 codes. Decoding never fails:
 * an unknown code keeps its number.
 */

const RC_VER1 = 0x100;
const RC_FMT1 = 0x080;
const RC_WARN = 0x900;

/** Format-0 errors: RC_VER1 + n. */
const FORMAT0: Record<number, [string, string]> = {
  0: ['INITIALIZE', 'TPM not initialized by TPM2_Startup or already initialized'],
  1: ['FAILURE', 'the TPM is in failure mode'],
  3: ['SEQUENCE', 'improper use of a sequence handle'],
  11: ['PRIVATE', 'not currently used'],
  25: ['HMAC', 'not currently used'],
  32: ['DISABLED', 'the command is disabled'],
  33: ['EXCLUSIVE', 'the command failed because an audit sequence required exclusivity'],
  36: ['AUTH_TYPE', 'authorization handle is not correct for the command'],
  37: ['AUTH_MISSING', 'the command requires an authorization session for a handle and it is not present'],
  38: ['POLICY', 'policy failure in a math operation or an invalid authPolicy value'],
  39: ['PCR', 'PCR check fail'],
  40: ['PCR_CHANGED', 'PCRs changed since the policy session checked them'],
  45: ['UPGRADE', 'the TPM is in field upgrade mode'],
  46: ['TOO_MANY_CONTEXTS', 'context ID counter is at its maximum'],
  47: ['AUTH_UNAVAILABLE', 'authValue or authPolicy is not available for the selected entity'],
  48: ['REBOOT', 'a _TPM_Init and Startup(CLEAR) is required'],
  49: ['UNBALANCED', 'the protection algorithms (hash and symmetric) are not reasonably balanced'],
  66: ['COMMAND_SIZE', 'command size is inconsistent with the contents of the command buffer'],
  67: ['COMMAND_CODE', 'command code not supported'],
  68: ['AUTHSIZE', 'the authorization size is out of range or does not match the sessions'],
  69: [
    'AUTH_CONTEXT',
    'use of an authorization session with a context command or another command that cannot have one',
  ],
  70: ['NV_RANGE', 'NV offset+size is out of range'],
  71: ['NV_SIZE', 'requested allocation size is larger than allowed'],
  72: ['NV_LOCKED', 'NV access locked'],
  73: ['NV_AUTHORIZATION', 'NV access authorization fails in command actions'],
  74: ['NV_UNINITIALIZED', 'an NV index is used before being initialized (written)'],
  75: ['NV_SPACE', 'insufficient space for NV allocation'],
  76: ['NV_DEFINED', 'NV index or persistent object already defined'],
  80: ['BAD_CONTEXT', 'context in TPM2_ContextLoad is not valid'],
  81: ['CPHASH', 'cpHash value already set or not correct for use'],
  82: ['PARENT', 'handle for parent is not a valid parent'],
  83: ['NEEDS_TEST', 'some function needs testing'],
  84: ['NO_RESULT', 'an internal function cannot process a request due to an unspecified problem'],
  85: ['SENSITIVE', 'the sensitive area did not unmarshal correctly after decryption'],
};

/** Format-1 errors: RC_FMT1 + n. */
const FORMAT1: Record<number, [string, string]> = {
  1: ['ASYMMETRIC', 'asymmetric algorithm not supported or not correct'],
  2: ['ATTRIBUTES', 'inconsistent attributes'],
  3: ['HASH', 'hash algorithm not supported or not appropriate'],
  4: ['VALUE', 'value is out of range or is not correct for the context'],
  5: ['HIERARCHY', 'hierarchy is not enabled or is not correct for the use'],
  7: ['KEY_SIZE', 'key size is not supported'],
  8: ['MGF', 'mask generation function not supported'],
  9: ['MODE', 'mode of operation not supported'],
  10: ['TYPE', 'the type of the value is not appropriate for the use'],
  11: ['HANDLE', 'the handle is not correct for the use'],
  12: ['KDF', 'unsupported key derivation function or function not appropriate for use'],
  13: ['RANGE', 'value was out of allowed range'],
  14: ['AUTH_FAIL', 'the authorization HMAC check failed and DA counter incremented'],
  15: ['NONCE', 'invalid nonce size or nonce value mismatch'],
  16: ['PP', 'authorization requires assertion of physical presence'],
  18: ['SCHEME', 'unsupported or incompatible scheme'],
  21: ['SIZE', 'structure is the wrong size'],
  22: ['SYMMETRIC', 'unsupported symmetric algorithm or key size, or not appropriate for instance'],
  23: ['TAG', 'incorrect structure tag'],
  24: ['SELECTOR', 'union selector is incorrect'],
  26: [
    'INSUFFICIENT',
    'the TPM was unable to unmarshal a value because there were not enough octets in the input buffer',
  ],
  27: ['SIGNATURE', 'the signature is not valid'],
  28: ['KEY', 'key fields are not compatible with the selected use'],
  29: ['POLICY_FAIL', 'a policy check failed'],
  31: ['INTEGRITY', 'integrity check failed'],
  32: ['TICKET', 'invalid ticket'],
  33: ['RESERVED_BITS', 'reserved bits not set to zero as required'],
  34: ['BAD_AUTH', 'authorization failure without DA implications'],
  35: ['EXPIRED', 'the policy has expired'],
  36: [
    'POLICY_CC',
    'the commandCode in the policy is not the commandCode of the command or the command code in a policy command references a command that is not implemented',
  ],
  37: ['BINDING', 'public and sensitive portions of an object are not cryptographically bound'],
  38: ['CURVE', 'curve not supported'],
  39: ['ECC_POINT', 'point is not on the required curve'],
  40: ['FW_LIMITED', 'the hierarchy is firmware-limited but the firmware secret is unavailable'],
  41: ['SVN_LIMITED', 'the hierarchy is SVN-limited but the firmware SVN secret is unavailable'],
};

/** Warnings: RC_WARN + n. */
const WARNINGS: Record<number, [string, string]> = {
  1: ['CONTEXT_GAP', 'gap for context ID is too large'],
  2: ['OBJECT_MEMORY', 'out of memory for object contexts'],
  3: ['SESSION_MEMORY', 'out of memory for session contexts'],
  4: ['MEMORY', 'out of shared object/session memory or need space for internal operations'],
  5: ['SESSION_HANDLES', 'out of session handles: a session must be flushed'],
  6: ['OBJECT_HANDLES', 'out of object handles: an object must be flushed'],
  7: ['LOCALITY', 'bad locality'],
  8: ['YIELDED', 'the TPM has suspended operation on the command; the command may be retried'],
  9: ['CANCELED', 'the command was canceled'],
  10: ['TESTING', 'the TPM is performing self-tests'],
  16: [
    'REFERENCE_H0',
    'the 1st handle in the handle area references a transient object or session that is not loaded',
  ],
  17: ['REFERENCE_H1', 'the 2nd handle references a transient object or session that is not loaded'],
  18: ['REFERENCE_H2', 'the 3rd handle references a transient object or session that is not loaded'],
  19: ['REFERENCE_H3', 'the 4th handle references a transient object or session that is not loaded'],
  20: ['REFERENCE_H4', 'the 5th handle references a transient object or session that is not loaded'],
  21: ['REFERENCE_H5', 'the 6th handle references a transient object or session that is not loaded'],
  22: ['REFERENCE_H6', 'the 7th handle references a transient object or session that is not loaded'],
  24: ['REFERENCE_S0', 'the 1st authorization session handle references a session that is not loaded'],
  25: ['REFERENCE_S1', 'the 2nd authorization session handle references a session that is not loaded'],
  26: ['REFERENCE_S2', 'the 3rd authorization session handle references a session that is not loaded'],
  27: ['REFERENCE_S3', 'the 4th authorization session handle references a session that is not loaded'],
  28: ['REFERENCE_S4', 'the 5th session handle references a session that is not loaded'],
  29: ['REFERENCE_S5', 'the 6th session handle references a session that is not loaded'],
  30: ['REFERENCE_S6', 'the 7th authorization session handle references a session that is not loaded'],
  32: ['NV_RATE', 'the TPM is rate-limiting accesses to prevent wearout of NV'],
  33: [
    'LOCKOUT',
    'authorizations for objects subject to DA protection are not allowed at this time because the TPM is in DA lockout mode',
  ],
  34: ['RETRY', 'the TPM was not able to start the command'],
  35: ['NV_UNAVAILABLE', 'the command may require writing of NV and NV is not currently accessible'],
};

export interface DecodedRc {
  rc: number;
  /** `TPM_RC_POLICY_FAIL`, `TPM_RC_NV_LOCKED`, `TPM_RC_RETRY`… or `TPM_RC_0x…` when unknown. */
  name: string;
  description: string;
  kind: 'success' | 'error' | 'warning' | 'vendor' | 'tpm1.2';
  /** Format-1 codes say which handle (1-7), session (1-7) or parameter (1-15) they are about. */
  handle?: number;
  session?: number;
  parameter?: number;
}

export const RC = {
  SUCCESS: 0,
  INITIALIZE: RC_VER1 + 0x000,
  POLICY: RC_VER1 + 0x026,
  PCR_CHANGED: RC_VER1 + 0x028,
  NV_LOCKED: RC_VER1 + 0x048,
  NV_AUTHORIZATION: RC_VER1 + 0x049,
  NV_UNINITIALIZED: RC_VER1 + 0x04a,
  NV_DEFINED: RC_VER1 + 0x04c,
  VALUE: RC_FMT1 + 0x004,
  HANDLE: RC_FMT1 + 0x00b,
  AUTH_FAIL: RC_FMT1 + 0x00e,
  SIGNATURE: RC_FMT1 + 0x01b,
  POLICY_FAIL: RC_FMT1 + 0x01d,
  BAD_AUTH: RC_FMT1 + 0x022,
  YIELDED: RC_WARN + 0x008,
  TESTING: RC_WARN + 0x00a,
  RETRY: RC_WARN + 0x022,
} as const;

/** Decodes a response code into its name, its kind and, for format-1 codes, its subject. */
export function decodeRc(rc: number): DecodedRc {
  rc >>>= 0;
  if (rc === 0) return { rc, name: 'TPM_RC_SUCCESS', description: 'success', kind: 'success' };
  const unknown = `TPM_RC_0x${rc.toString(16).padStart(3, '0')}`;
  if (rc & RC_FMT1) {
    const n = rc & 0x3f;
    const [name, description] = FORMAT1[n] ?? [undefined, 'unknown format-1 error'];
    const out: DecodedRc = {
      rc,
      name: name ? `TPM_RC_${name}` : unknown,
      description,
      kind: 'error',
    };
    const number = (rc >> 8) & 0xf;
    if (rc & 0x40) out.parameter = number;
    else if (number & 0x8) out.session = number & 0x7;
    else if (number) out.handle = number;
    return out;
  }
  if (!(rc & RC_VER1)) return { rc, name: unknown, description: 'a TPM 1.2 response code', kind: 'tpm1.2' };
  if (rc & 0x400) return { rc, name: unknown, description: 'a vendor-defined response code', kind: 'vendor' };
  const n = rc & 0x7f;
  const warning = (rc & 0x800) !== 0;
  const [name, description] = (warning ? WARNINGS : FORMAT0)[n] ?? [
    undefined,
    warning ? 'unknown warning' : 'unknown error',
  ];
  return { rc, name: name ? `TPM_RC_${name}` : unknown, description, kind: warning ? 'warning' : 'error' };
}

/** The code without its handle/session/parameter number: what to compare with `RC.*`. */
export function baseRc(rc: number): number {
  return rc & RC_FMT1 ? rc & 0xbf : rc;
}

/** "TPM_RC_POLICY_FAIL (a policy check failed) in session 1". */
export function describeRc(rc: number): string {
  const d = decodeRc(rc);
  const where =
    d.parameter !== undefined
      ? ` in parameter ${d.parameter}`
      : d.session !== undefined
        ? ` in session ${d.session}`
        : d.handle !== undefined
          ? ` in handle ${d.handle}`
          : '';
  return `${d.name} (${d.description})${where}`;
}

/** Warnings after which the TPM did not run the command, so sending it again is right. */
export function isRetryable(rc: number): boolean {
  return rc === RC.RETRY || rc === RC.YIELDED || rc === RC.TESTING;
}
