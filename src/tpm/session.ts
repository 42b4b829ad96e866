/**
 * Authorization sessions (Part 1, 19): the password session, HMAC sessions (bound or not, salted
 * or not), policy and trial sessions, and what each contributes to a command — the HMAC over
 * the cpHash with rolling nonces, the response HMAC check, and AES-CFB encryption of the first
 * command parameter (`decrypt`) and of the first response parameter (`encrypt`).
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { HT, SESSION } from './constants.ts';
import { cfb } from './crypto.ts';
import { TpmError } from './errors.ts';
import { digestSize, type HashName, hmac } from './hash.ts';
import type { SymDef } from './structures.ts';

export type SessionKind = 'hmac' | 'policy' | 'trial';

/** authValues are used with their trailing zero bytes removed (Part 1, 19.6.4.3). */
export function trimAuth(auth: Uint8Array): Buffer {
  let end = auth.length;
  while (end > 0 && auth[end - 1] === 0) end--;
  return Buffer.from(auth.subarray(0, end));
}

/** The value a bound session compares entities by: the Name, XORed with the padded authValue (handles: the handle). */
export function bindValue(name: Uint8Array, authValue: Uint8Array): Buffer {
  const out = Buffer.from(name);
  if (out.length === 4) return out;
  const auth = trimAuth(authValue);
  for (let i = 0; i < out.length && i < auth.length; i++) out[i]! ^= auth[i]!;
  return out;
}

export interface SessionInit {
  handle: number;
  kind: SessionKind;
  hashAlg: HashName;
  symmetric: SymDef;
  sessionKey: Buffer;
  nonceCaller: Buffer;
  nonceTPM: Buffer;
  /** The bind value of the entity the session is bound to. */
  bound?: Buffer;
}

/** A started HMAC, policy or trial session. It is flushed with `Tpm.flushContext(session.handle)`. */
export class AuthSession {
  readonly handle: number;
  readonly kind: SessionKind;
  readonly hashAlg: HashName;
  readonly symmetric: SymDef;
  readonly sessionKey: Buffer;
  readonly bound: Buffer | undefined;
  nonceCaller: Buffer;
  nonceTPM: Buffer;
  /** TPMA_SESSION bits sent with the next commands (continueSession is on by default). */
  attributes: number = SESSION.continueSession;
  /** Policy sessions: PolicyAuthValue / PolicyPassword ran, so the entity's authValue is needed. */
  authValueNeeded = false;
  passwordNeeded = false;
  /** False once the TPM has dropped the session (used without continueSession, or flushed). */
  open = true;

  constructor(init: SessionInit) {
    this.handle = init.handle;
    this.kind = init.kind;
    this.hashAlg = init.hashAlg;
    this.symmetric = init.symmetric;
    this.sessionKey = init.sessionKey;
    this.nonceCaller = init.nonceCaller;
    this.nonceTPM = init.nonceTPM;
    this.bound = init.bound;
  }

  get salted(): boolean {
    return this.sessionKey.length > 0;
  }

  /** Sets or clears the decrypt (command) and encrypt (response) parameter-encryption attributes. */
  encrypting({ decrypt = false, encrypt = false }: { decrypt?: boolean; encrypt?: boolean }): this {
    this.attributes =
      (this.attributes & ~(SESSION.decrypt | SESSION.encrypt)) |
      (decrypt ? SESSION.decrypt : 0) |
      (encrypt ? SESSION.encrypt : 0);
    return this;
  }

  /** Whether the authValue of the authorized entity goes into this session's HMAC key. */
  includesAuth(entityBindValue: Buffer | undefined): boolean {
    if (this.kind !== 'hmac') return this.authValueNeeded;
    return !(this.bound && entityBindValue && this.bound.equals(entityBindValue));
  }

  /** The policy state the TPM resets after the session authorizes a command or on PolicyRestart. */
  resetPolicy(): void {
    this.authValueNeeded = false;
    this.passwordNeeded = false;
  }
}

/** How one authorized handle of a command is authorized. */
export type Authorization =
  | { password: Uint8Array }
  | {
      session: AuthSession;
      /** The authValue of the entity (for HMAC sessions, PolicyAuthValue and parameter encryption). */
      authValue?: Uint8Array;
    };

export const EMPTY_PASSWORD: Authorization = { password: Buffer.alloc(0) };

/** One entry of a command's authorization area, with what is needed to check the response. */
export interface PreparedAuth {
  session?: AuthSession;
  /** HMAC and parameter-encryption key: sessionKey ‖ authValue as the rules say. */
  hmacKey: Buffer;
  cryptKey: Buffer;
  nonceCaller: Buffer;
  attributes: number;
  /** The entity's authValue (for entities whose authValue the command changes, the caller swaps it). */
  authValue: Buffer;
  includeAuth: boolean;
}

export function isSessionHandle(handle: number): boolean {
  const type = handle >>> 24;
  return type === HT.HMAC_SESSION || type === HT.POLICY_SESSION;
}

/** Fresh caller nonces for a command, and the HMAC and encryption keys each session uses. */
export function prepareAuths(
  auths: Authorization[],
  extra: AuthSession[],
  bindValues: (Buffer | undefined)[],
  /** The parameter-encryption attributes the command allows (a session's others are left off for it). */
  allowed: number = SESSION.decrypt | SESSION.encrypt,
): PreparedAuth[] {
  const out: PreparedAuth[] = [];
  const all: [Authorization | { session: AuthSession; extra: true }, number][] = [
    ...auths.map((a, i) => [a, i] as [Authorization, number]),
    ...extra.map(
      (s) => [{ session: s, extra: true as const }, -1] as [{ session: AuthSession; extra: true }, number],
    ),
  ];
  for (const [auth, i] of all) {
    if ('password' in auth) {
      out.push({
        hmacKey: Buffer.alloc(0),
        cryptKey: Buffer.alloc(0),
        nonceCaller: Buffer.alloc(0),
        attributes: SESSION.continueSession,
        authValue: Buffer.from(auth.password),
        includeAuth: false,
      });
      continue;
    }
    const session = auth.session;
    if (!session.open)
      throw new TpmError(
        'TPM_INVALID_ARGUMENT',
        `session 0x${session.handle.toString(16)} is no longer open`,
      );
    if (session.kind === 'trial' && i >= 0)
      throw new TpmError('TPM_INVALID_ARGUMENT', 'a trial session cannot authorize a command');
    const authValue = 'extra' in auth ? Buffer.alloc(0) : trimAuth(auth.authValue ?? Buffer.alloc(0));
    const includeAuth = i >= 0 && session.includesAuth(bindValues[i]);
    session.nonceCaller = randomBytes(digestSize(session.hashAlg));
    out.push({
      session,
      hmacKey: Buffer.concat([session.sessionKey, includeAuth ? authValue : Buffer.alloc(0)]),
      // Parameter encryption always adds the authorized entity's authValue (SessionProcess.c).
      cryptKey: Buffer.concat([session.sessionKey, authValue]),
      nonceCaller: session.nonceCaller,
      attributes: session.attributes & ~((SESSION.decrypt | SESSION.encrypt) & ~allowed),
      authValue,
      includeAuth,
    });
  }
  return out;
}

/** The command HMAC of session `index` (Part 1, 19.6.5). */
export function commandHmac(
  prepared: PreparedAuth[],
  index: number,
  cpHash: (alg: HashName) => Buffer,
  authCount: number,
): Buffer {
  const p = prepared[index]!;
  const s = p.session!;
  if (s.kind === 'policy' && s.passwordNeeded) return p.authValue;
  if (p.hmacKey.length === 0) return Buffer.alloc(0);
  const parts = [cpHash(s.hashAlg), p.nonceCaller, s.nonceTPM];
  if (index === 0 && authCount > 0) {
    const decrypt = prepared.findIndex((q) => (q.attributes & SESSION.decrypt) !== 0);
    const encrypt = prepared.findIndex((q) => (q.attributes & SESSION.encrypt) !== 0);
    if (decrypt > 0) parts.push(prepared[decrypt]!.session!.nonceTPM);
    if (encrypt > 0 && encrypt !== decrypt) parts.push(prepared[encrypt]!.session!.nonceTPM);
  }
  parts.push(Buffer.from([p.attributes]));
  return hmac(s.hashAlg, p.hmacKey, ...parts);
}

/** Checks one response HMAC; `nonceTPM` is the new one from the response. */
export function checkResponseHmac(
  p: PreparedAuth,
  rpHash: (alg: HashName) => Buffer,
  nonceTPM: Buffer,
  attributes: number,
  received: Buffer,
  what: string,
): void {
  const s = p.session!;
  if (s.kind === 'policy' && s.passwordNeeded) {
    if (received.length !== 0)
      throw new TpmError('TPM_RESPONSE_HMAC', `${what}: a policy password session answered with an HMAC`);
    return;
  }
  if (p.hmacKey.length === 0) {
    if (received.length !== 0)
      throw new TpmError('TPM_RESPONSE_HMAC', `${what}: an HMAC came for a session without a key`);
    return;
  }
  const expected = hmac(
    s.hashAlg,
    p.hmacKey,
    rpHash(s.hashAlg),
    nonceTPM,
    p.nonceCaller,
    Buffer.from([attributes]),
  );
  if (received.length !== expected.length || !timingSafeEqual(received, expected))
    throw new TpmError(
      'TPM_RESPONSE_HMAC',
      `${what}: the response HMAC of session 0x${s.handle.toString(16)} does not verify`,
    );
}

/** Encrypts (command) or decrypts (response) the data of a leading TPM2B parameter in place. */
export function cryptFirstParameter(
  direction: 'encrypt' | 'decrypt',
  p: PreparedAuth,
  nonceNewer: Buffer,
  nonceOlder: Buffer,
  parameters: Buffer,
  what: string,
): void {
  const s = p.session!;
  if (parameters.length < 2) throw new TpmError('TPM_MALFORMED', `${what}: no sized parameter to decrypt`);
  const size = parameters.readUInt16BE(0);
  if (size + 2 > parameters.length)
    throw new TpmError('TPM_MALFORMED', `${what}: encrypted parameter overruns the parameters`);
  if (s.symmetric.alg !== 0x0006 || !s.symmetric.keyBits)
    throw new TpmError(
      'TPM_INVALID_ARGUMENT',
      `session 0x${s.handle.toString(16)} has no AES parameter encryption`,
    );
  const data = parameters.subarray(2, 2 + size);
  cfb(direction, s.hashAlg, s.symmetric.keyBits, p.cryptKey, nonceNewer, nonceOlder, data).copy(data);
}
