/**
 * The TPM 2.0 client: builds commands with their handles, authorization sessions and
 * parameters, sends them over a transport, retries the TPM's "try again" warnings, checks
 * response HMACs, decrypts encrypted response parameters and parses the results with bounded
 * readers. One method per command Seal uses.
 */
import { randomBytes } from 'node:crypto';
import {
  ALG,
  CAP,
  CC,
  commandName,
  EO,
  HT,
  NV,
  type Operation,
  PT,
  RH,
  SE,
  SESSION,
  ST,
  SU,
} from './constants.ts';
import { kdfa, makeSalt } from './crypto.ts';
import { TpmError } from './errors.ts';
import { digestSize, type HashName, hash, hashId } from './hash.ts';
import { marshal, Reader, Writer } from './marshal.ts';
import { baseRc, decodeRc, describeRc, isRetryable } from './rc.ts';
import {
  type Authorization,
  AuthSession,
  bindValue,
  checkResponseHmac,
  commandHmac,
  cryptFirstParameter,
  EMPTY_PASSWORD,
  isSessionHandle,
  prepareAuths,
} from './session.ts';
import {
  AES_128_CFB,
  type Attest,
  type CapabilityData,
  handleName,
  LIMITS,
  type NvPublic,
  nvName,
  objectName,
  type PcrSelection,
  type PublicArea,
  readAttest,
  readCapabilityData,
  readNvPublic,
  readPcrSelections,
  readPublic2B,
  readSignature,
  readTicket,
  type Scheme,
  type Signature,
  type SymDef,
  type Ticket,
  writeNvPublic,
  writePcrSelections,
  writePublic,
  writeScheme,
  writeSensitiveCreate,
  writeSignature,
  writeTicket,
} from './structures.ts';
import { openTransport, type SocketTransportOptions, type TpmTransport } from './transport.ts';

/** A TPM answered with an error: the decoded code, the command, and what it was about. */
export class TpmResponseError extends TpmError {
  readonly command: string;
  readonly rcName: string;
  /** The code without its handle/session/parameter number, to compare with `RC.*`. */
  readonly base: number;
  readonly handle: number | undefined;
  readonly session: number | undefined;
  readonly parameter: number | undefined;

  constructor(rc: number, command: number, subject: string) {
    const decoded = decodeRc(rc);
    super('TPM_RESPONSE', `${commandName(command)} failed: ${describeRc(rc)}`, { subject, rc });
    this.command = commandName(command);
    this.rcName = decoded.name;
    this.base = baseRc(rc);
    this.handle = decoded.handle;
    this.session = decoded.session;
    this.parameter = decoded.parameter;
  }
}

/** A handle with the Name the cpHash needs (looked up when absent and sessions need it). */
export interface Entity {
  handle: number;
  name?: Buffer;
}

interface CommandSpec {
  cc: number;
  handles: (number | Entity)[];
  /** One per authorized handle; those are always the first handles. */
  auths?: Authorization[];
  /** Sessions that only encrypt or audit. */
  extraSessions?: AuthSession[];
  params?: Buffer;
  /** The first command / response parameter is a TPM2B that sessions may encrypt. */
  decryptable?: boolean;
  encryptable?: boolean;
  responseHandles?: number;
  /** The authorized entity's authValue to check the response HMAC with, when the command changes it. */
  responseAuthValue?: (index: number) => Buffer | undefined;
}

interface CommandResult {
  handles: number[];
  params: Reader;
}

export interface TpmOptions extends SocketTransportOptions {
  /** Attempts for TPM_RC_RETRY / YIELDED / TESTING before giving up (default 50). */
  retries?: number;
}

export interface CreatedObject {
  handle: number;
  public: PublicArea;
  name: Buffer;
}

export interface StartSessionOptions {
  type: 'hmac' | 'policy' | 'trial';
  hash?: HashName;
  /** Parameter encryption: AES-128-CFB by default; pass `{ alg: ALG.NULL }` for none. */
  symmetric?: SymDef;
  /** A loaded decryption key that salts the session (its public area: the client encrypts the salt to it). */
  salt?: { handle: number; public: PublicArea };
  /** An entity the session is bound to, with its authValue. */
  bind?: { handle: number; authValue?: Uint8Array };
}

export interface PcrValue {
  hash: HashName;
  pcr: number;
  value: Buffer;
}

/** A TPM 2.0 reached through a transport. */
export class Tpm {
  readonly transport: TpmTransport;
  readonly #retries: number;
  /** Names of objects and NV indices this client has seen, for cpHashes. */
  readonly #names = new Map<number, Buffer>();
  readonly #nvPublics = new Map<number, NvPublic>();
  #nvBufferMax: number | undefined;
  /** Commands sent (retries included): for benchmarks and tests. */
  commandCount = 0;

  constructor(transport: TpmTransport, options: TpmOptions = {}) {
    this.transport = transport;
    this.#retries = options.retries ?? 50;
  }

  /** Opens `/dev/tpmrm0`, `/dev/tpm0`, `swtpm:HOST:PORT` or `swtpm:unix:PATH`. */
  static async open(address: string, options: TpmOptions = {}): Promise<Tpm> {
    return new Tpm(await openTransport(address, options), options);
  }

  get address(): string {
    return this.transport.address;
  }

  close(): Promise<void> {
    return this.transport.close();
  }

  // ------------------------------------------------------------------ names

  /** Records a Name for a handle (as a signed policy or provisioning record knows it). */
  rememberName(handle: number, name: Buffer): void {
    this.#names.set(handle >>> 0, name);
  }

  #rememberNv(pub: NvPublic): Buffer {
    this.#nvPublics.set(pub.index, pub);
    const name = nvName(pub);
    this.#names.set(pub.index, name);
    return name;
  }

  #updateNvAttributes(index: number, set: number): void {
    const pub = this.#nvPublics.get(index);
    if (pub) this.#rememberNv({ ...pub, attributes: (pub.attributes | set) >>> 0 });
    else this.#names.delete(index);
  }

  forget(handle: number): void {
    this.#names.delete(handle);
    this.#nvPublics.delete(handle);
  }

  /** The Name of a handle: its own bytes for PCRs, sessions and hierarchies; else asked of the TPM. */
  async nameOf(handle: number): Promise<Buffer> {
    handle >>>= 0;
    const type = handle >>> 24;
    if (type === HT.PCR || type === HT.PERMANENT || isSessionHandle(handle)) return handleName(handle);
    const known = this.#names.get(handle);
    if (known) return known;
    if (type === HT.NV_INDEX) return (await this.nvReadPublic(handle)).name;
    return (await this.readPublic(handle)).name;
  }

  // ------------------------------------------------------------------ execution

  async #send(command: Buffer, cc: number): Promise<Buffer> {
    for (let attempt = 0; ; attempt++) {
      this.commandCount++;
      const response = await this.transport.send(command);
      if (response.length < 10 || response.readUInt32BE(2) !== response.length)
        throw new TpmError('TPM_MALFORMED', `${commandName(cc)} response is not framed`, {
          subject: this.address,
        });
      const rc = response.readUInt32BE(6);
      if (rc !== 0 && isRetryable(rc) && attempt < this.#retries) {
        await new Promise((r) => setTimeout(r, Math.min(100, 5 * (attempt + 1))));
        continue;
      }
      return response;
    }
  }

  async #execute(spec: CommandSpec): Promise<CommandResult> {
    const auths = spec.auths ?? [];
    const extra = spec.extraSessions ?? [];
    const entities = spec.handles.map((h) => (typeof h === 'number' ? { handle: h >>> 0 } : h));
    const sessions = auths.length + extra.length;
    const hmacSessions = [...auths.filter((a) => 'session' in a), ...extra].length > 0;
    // Names are needed for cpHash (any non-password session) and for bound-session checks.
    const names: Buffer[] = [];
    if (hmacSessions) for (const e of entities) names.push(e.name ?? (await this.nameOf(e.handle)));
    const bindValues = auths.map((a, i) =>
      'session' in a && a.session.bound && names[i]
        ? bindValue(names[i]!, a.authValue ?? Buffer.alloc(0))
        : undefined,
    );
    const prepared = prepareAuths(
      auths,
      extra,
      bindValues,
      (spec.decryptable ? SESSION.decrypt : 0) | (spec.encryptable ? SESSION.encrypt : 0),
    );
    const params = Buffer.from(spec.params ?? Buffer.alloc(0));
    const what = commandName(spec.cc);

    // Parameter encryption of the first command parameter.
    const decryptIndex = prepared.findIndex((p) => (p.attributes & SESSION.decrypt) !== 0);
    const encryptIndex = prepared.findIndex((p) => (p.attributes & SESSION.encrypt) !== 0);
    if (decryptIndex >= 0) {
      if (!spec.decryptable)
        throw new TpmError('TPM_INVALID_ARGUMENT', `${what} has no parameter to encrypt`);
      const p = prepared[decryptIndex]!;
      cryptFirstParameter('encrypt', p, p.nonceCaller, p.session!.nonceTPM, params, what);
    }

    const cpHashes = new Map<HashName, Buffer>();
    const cpHash = (alg: HashName) => {
      let h = cpHashes.get(alg);
      if (!h) {
        const cc = Buffer.alloc(4);
        cc.writeUInt32BE(spec.cc);
        cpHashes.set(alg, (h = hash(alg, cc, ...names, params)));
      }
      return h;
    };

    const w = new Writer();
    w.u16(sessions ? ST.SESSIONS : ST.NO_SESSIONS)
      .u32(0)
      .u32(spec.cc);
    for (const e of entities) w.u32(e.handle);
    if (sessions) {
      const area = new Writer();
      prepared.forEach((p, i) => {
        if (!p.session) {
          area.u32(RH.PW).b(Buffer.alloc(0)).u8(p.attributes).b(p.authValue);
          return;
        }
        const mac = commandHmac(prepared, i, cpHash, auths.length);
        area.u32(p.session.handle).b(p.nonceCaller).u8(p.attributes).b(mac);
      });
      const bytes = area.finish();
      w.u32(bytes.length).bytes(bytes);
    }
    w.bytes(params);
    const command = w.finish();
    command.writeUInt32BE(command.length, 2);

    const response = await this.#send(command, spec.cc);
    const rc = response.readUInt32BE(6);
    if (rc !== 0) throw new TpmResponseError(rc, spec.cc, this.address);

    const r = new Reader(response, `${what} response`, 10);
    const tag = response.readUInt16BE(0);
    if (tag !== (sessions ? ST.SESSIONS : ST.NO_SESSIONS))
      r.fail(`tag 0x${tag.toString(16)} does not match the command's sessions`);
    const handles: number[] = [];
    for (let i = 0; i < (spec.responseHandles ?? 0); i++) handles.push(r.u32('handle'));
    if (!sessions) return { handles, params: r };

    const paramSize = r.u32('parameter size');
    const paramReader = r.sub(paramSize, 'parameters');
    const paramStart = paramReader.offset;
    const rParams = response.subarray(paramStart, paramStart + paramSize);
    const rpHashes = new Map<HashName, Buffer>();
    const rpHash = (alg: HashName) => {
      let h = rpHashes.get(alg);
      if (!h) {
        const head = Buffer.alloc(8);
        head.writeUInt32BE(spec.cc, 4);
        rpHashes.set(alg, (h = hash(alg, head, rParams)));
      }
      return h;
    };
    const answers: { nonce: Buffer; attributes: number; mac: Buffer }[] = [];
    for (let i = 0; i < sessions; i++) {
      answers.push({
        nonce: r.b('session nonce', LIMITS.digest),
        attributes: r.u8('session attributes'),
        mac: r.b('session HMAC', LIMITS.digest),
      });
    }
    r.end('the response sessions');
    prepared.forEach((p, i) => {
      const a = answers[i]!;
      if (!p.session) {
        if (a.nonce.length || a.mac.length) r.fail('the password session answered with a nonce or HMAC');
        return;
      }
      const s = p.session;
      if (a.nonce.length !== digestSize(s.hashAlg)) r.fail(`session nonce of ${a.nonce.length} bytes`);
      const changed = spec.responseAuthValue?.(i);
      const check =
        changed !== undefined && p.includeAuth
          ? { ...p, hmacKey: Buffer.concat([s.sessionKey, changed]) }
          : p;
      checkResponseHmac(check, rpHash, a.nonce, a.attributes, a.mac, what);
      s.nonceTPM = a.nonce;
      if (s.kind !== 'hmac' && i < auths.length) s.resetPolicy();
      if (!(a.attributes & SESSION.continueSession)) s.open = false;
    });
    if (encryptIndex >= 0) {
      const p = prepared[encryptIndex]!;
      cryptFirstParameter('decrypt', p, p.session!.nonceTPM, p.nonceCaller, rParams, what);
    }
    return { handles, params: paramReader };
  }

  // ------------------------------------------------------------------ start-up and capabilities

  async startup(type: 'clear' | 'state' = 'clear'): Promise<void> {
    await this.#execute({
      cc: CC.Startup,
      handles: [],
      params: marshal((w) => w.u16(type === 'clear' ? SU.CLEAR : SU.STATE)),
    });
  }

  async shutdown(type: 'clear' | 'state' = 'clear'): Promise<void> {
    await this.#execute({
      cc: CC.Shutdown,
      handles: [],
      params: marshal((w) => w.u16(type === 'clear' ? SU.CLEAR : SU.STATE)),
    });
  }

  async getCapability(
    capability: number,
    property: number,
    count: number,
  ): Promise<{ more: boolean; data: CapabilityData }> {
    const { params } = await this.#execute({
      cc: CC.GetCapability,
      handles: [],
      params: marshal((w) => w.u32(capability).u32(property).u32(count)),
    });
    const more = params.u8('moreData') !== 0;
    const data = readCapabilityData(params);
    params.end();
    if (data.capability !== capability)
      params.fail(`capability ${data.capability} answered for ${capability}`);
    return { more, data };
  }

  /** A TPM property (TPM_PT), or undefined when the TPM does not report it. */
  async getProperty(property: number): Promise<number | undefined> {
    const { data } = await this.getCapability(CAP.TPM_PROPERTIES, property, 1);
    if (data.capability !== CAP.TPM_PROPERTIES) return undefined;
    const p = data.properties[0];
    return p && p.property === property ? p.value : undefined;
  }

  /** The allocated PCR banks. */
  async pcrBanks(): Promise<PcrSelection[]> {
    const { data } = await this.getCapability(CAP.PCRS, 0, 1);
    return data.capability === CAP.PCRS ? data.banks : [];
  }

  /** Handles in use of one type (HT.PERSISTENT, HT.NV_INDEX, …). */
  async handles(type: number): Promise<number[]> {
    const out: number[] = [];
    let start = (type << 24) >>> 0;
    for (;;) {
      const { more, data } = await this.getCapability(CAP.HANDLES, start, 128);
      if (data.capability !== CAP.HANDLES) break;
      const mine = data.handles.filter((h) => h >>> 24 === type && h >= start);
      out.push(...mine);
      if (!more || mine.length === 0) break;
      start = (Math.max(...mine) + 1) >>> 0;
    }
    return out;
  }

  /** TPM_PT_NV_BUFFER_MAX: the most an NV_Read or NV_Write moves at once (asked once). */
  async nvBufferMax(): Promise<number> {
    this.#nvBufferMax ??= (await this.getProperty(PT.NV_BUFFER_MAX)) ?? 512;
    return this.#nvBufferMax;
  }

  async getRandom(size: number, { session }: { session?: AuthSession } = {}): Promise<Buffer> {
    const out: Buffer[] = [];
    let have = 0;
    while (have < size) {
      const { params } = await this.#execute({
        cc: CC.GetRandom,
        handles: [],
        extraSessions: session ? [session] : [],
        encryptable: true,
        params: marshal((w) => w.u16(Math.min(size - have, 32))),
      });
      const bytes = params.b('random bytes', LIMITS.digest);
      params.end();
      if (bytes.length === 0) params.fail('no random bytes');
      out.push(bytes);
      have += bytes.length;
    }
    return Buffer.concat(out).subarray(0, size);
  }

  // ------------------------------------------------------------------ PCRs

  /** The values of the selected PCRs (several reads when the TPM returns at most 8 at a time). */
  async pcrRead(selections: PcrSelection[]): Promise<PcrValue[]> {
    const wanted = selections.map((s) => ({ hash: s.hash, pcrs: new Set(s.pcrs) }));
    const out: PcrValue[] = [];
    while (wanted.some((s) => s.pcrs.size > 0)) {
      const request = wanted.filter((s) => s.pcrs.size > 0).map((s) => ({ hash: s.hash, pcrs: [...s.pcrs] }));
      const { params } = await this.#execute({
        cc: CC.PCR_Read,
        handles: [],
        params: marshal((w) => writePcrSelections(w, request)),
      });
      params.u32('update counter');
      const returned = readPcrSelections(params, 'PCR selection out');
      const values = params.list('PCR values', 64, (r) => r.b('PCR value', LIMITS.digest));
      params.end();
      let k = 0;
      let progress = false;
      for (const sel of returned) {
        const bank = wanted.find((s) => hashId(s.hash) === sel.alg);
        for (const pcr of sel.pcrs) {
          const value = values[k++];
          if (!value) throw params.error('fewer PCR values than selected');
          if (!bank?.pcrs.has(pcr))
            throw params.error(`PCR ${pcr} of bank 0x${sel.alg.toString(16)} was not asked for`);
          if (value.length !== digestSize(bank.hash))
            throw params.error(`PCR ${pcr} value of ${value.length} bytes`);
          bank.pcrs.delete(pcr);
          out.push({ hash: bank.hash, pcr, value });
          progress = true;
        }
      }
      if (k !== values.length) params.fail('more PCR values than selected');
      if (!progress) {
        const missing = wanted.filter((s) => s.pcrs.size).map((s) => `${s.hash}:${[...s.pcrs].join(',')}`);
        throw new TpmError(
          'TPM_INVALID_ARGUMENT',
          `the TPM has no PCR ${missing.join(' ')} (bank not allocated?)`,
          {
            subject: this.address,
          },
        );
      }
    }
    return out;
  }

  async pcrExtend(
    pcr: number,
    digests: { hash: HashName; digest: Uint8Array }[],
    auth: Authorization = EMPTY_PASSWORD,
  ): Promise<void> {
    await this.#execute({
      cc: CC.PCR_Extend,
      handles: [pcr],
      auths: [auth],
      params: marshal((w) => {
        w.u32(digests.length);
        for (const d of digests) {
          if (d.digest.length !== digestSize(d.hash))
            throw new TpmError(
              'TPM_INVALID_ARGUMENT',
              `a ${d.hash} digest is ${digestSize(d.hash)} bytes, not ${d.digest.length}`,
            );
          w.u16(hashId(d.hash)).bytes(d.digest);
        }
      }),
    });
  }

  // ------------------------------------------------------------------ objects

  async createPrimary(
    hierarchy: number,
    template: PublicArea,
    {
      userAuth = Buffer.alloc(0),
      auth = EMPTY_PASSWORD,
    }: { userAuth?: Uint8Array; auth?: Authorization } = {},
  ): Promise<CreatedObject> {
    const { handles, params } = await this.#execute({
      cc: CC.CreatePrimary,
      handles: [hierarchy],
      auths: [auth],
      decryptable: true,
      encryptable: true,
      responseHandles: 1,
      params: marshal((w) => {
        writeSensitiveCreate(w, userAuth);
        w.sized((p) => writePublic(p, template));
        w.b(Buffer.alloc(0)); // outsideInfo
        w.u32(0); // creationPCR: none
      }),
    });
    const pub = readPublic2B(params, 'outPublic');
    params.b('creation data', LIMITS.buffer);
    params.b('creation hash', LIMITS.digest);
    readTicket(params, 'creation ticket');
    const name = params.b('name', LIMITS.name);
    params.end();
    if (!name.equals(objectName(pub))) params.fail('the Name does not match the public area');
    this.#names.set(handles[0]!, name);
    return { handle: handles[0]!, public: pub, name };
  }

  async create(
    parent: number,
    template: PublicArea,
    {
      userAuth = Buffer.alloc(0),
      data = Buffer.alloc(0),
      auth = EMPTY_PASSWORD,
    }: { userAuth?: Uint8Array; data?: Uint8Array; auth?: Authorization } = {},
  ): Promise<{ private: Buffer; public: PublicArea }> {
    const { params } = await this.#execute({
      cc: CC.Create,
      handles: [parent],
      auths: [auth],
      decryptable: true,
      encryptable: true,
      params: marshal((w) => {
        writeSensitiveCreate(w, userAuth, data);
        w.sized((p) => writePublic(p, template));
        w.b(Buffer.alloc(0));
        w.u32(0);
      }),
    });
    const priv = params.b('outPrivate', LIMITS.buffer);
    const pub = readPublic2B(params, 'outPublic');
    params.b('creation data', LIMITS.buffer);
    params.b('creation hash', LIMITS.digest);
    readTicket(params, 'creation ticket');
    params.end();
    return { private: priv, public: pub };
  }

  async load(
    parent: number,
    priv: Buffer,
    pub: PublicArea,
    { auth = EMPTY_PASSWORD }: { auth?: Authorization } = {},
  ): Promise<CreatedObject> {
    const { handles, params } = await this.#execute({
      cc: CC.Load,
      handles: [parent],
      auths: [auth],
      decryptable: true,
      encryptable: true,
      responseHandles: 1,
      params: marshal((w) => w.b(priv).sized((p) => writePublic(p, pub))),
    });
    const name = params.b('name', LIMITS.name);
    params.end();
    if (!name.equals(objectName(pub))) params.fail('the Name does not match the public area');
    this.#names.set(handles[0]!, name);
    return { handle: handles[0]!, public: pub, name };
  }

  /** Loads a public key (no private part) into `hierarchy`: owner for tickets PolicyAuthorize accepts. */
  async loadExternal(pub: PublicArea, hierarchy: number = RH.OWNER): Promise<CreatedObject> {
    const { handles, params } = await this.#execute({
      cc: CC.LoadExternal,
      handles: [],
      responseHandles: 1,
      params: marshal((w) => {
        w.u16(0); // no sensitive area
        w.sized((p) => writePublic(p, pub));
        w.u32(hierarchy);
      }),
    });
    const name = params.b('name', LIMITS.name);
    params.end();
    if (!name.equals(objectName(pub))) params.fail('the Name does not match the public area');
    this.#names.set(handles[0]!, name);
    return { handle: handles[0]!, public: pub, name };
  }

  async readPublic(handle: number): Promise<{ public: PublicArea; name: Buffer; qualifiedName: Buffer }> {
    const { params } = await this.#execute({ cc: CC.ReadPublic, handles: [handle], encryptable: true });
    const pub = readPublic2B(params, 'outPublic');
    const name = params.b('name', LIMITS.name);
    const qualifiedName = params.b('qualifiedName', LIMITS.name);
    params.end();
    if (!name.equals(objectName(pub))) params.fail('the Name does not match the public area');
    this.#names.set(handle >>> 0, name);
    return { public: pub, name, qualifiedName };
  }

  async flushContext(handle: number): Promise<void> {
    await this.#execute({ cc: CC.FlushContext, handles: [], params: marshal((w) => w.u32(handle)) });
    this.forget(handle >>> 0);
  }

  /** Flushes a session (ignoring one the TPM already dropped). */
  async flushSession(session: AuthSession): Promise<void> {
    if (!session.open) return;
    session.open = false;
    await this.flushContext(session.handle);
  }

  /** Makes a loaded object persistent at `persistent` (or, given a persistent object, evicts it). */
  async evictControl(
    objectHandle: number,
    persistent: number,
    { hierarchy = RH.OWNER, auth = EMPTY_PASSWORD }: { hierarchy?: number; auth?: Authorization } = {},
  ): Promise<void> {
    await this.#execute({
      cc: CC.EvictControl,
      handles: [hierarchy, objectHandle],
      auths: [auth],
      params: marshal((w) => w.u32(persistent)),
    });
    const name = this.#names.get(objectHandle >>> 0);
    if (objectHandle >>> 24 === HT.PERSISTENT) this.forget(objectHandle >>> 0);
    else if (name) this.#names.set(persistent >>> 0, name);
  }

  async hierarchyChangeAuth(
    hierarchy: number,
    newAuth: Uint8Array,
    { auth = EMPTY_PASSWORD }: { auth?: Authorization } = {},
  ): Promise<void> {
    await this.#execute({
      cc: CC.HierarchyChangeAuth,
      handles: [hierarchy],
      auths: [auth],
      decryptable: true,
      params: marshal((w) => w.b(newAuth)),
      // The response HMAC is keyed with the new authValue.
      responseAuthValue: () => Buffer.from(newAuth),
    });
  }

  /** TPM2_Clear (lockout or platform authorization): removes the owner's keys, NV indices and auths. */
  async clear(authHandle: number = RH.PLATFORM, auth: Authorization = EMPTY_PASSWORD): Promise<void> {
    await this.#execute({
      cc: CC.Clear,
      handles: [authHandle],
      auths: [auth],
      responseAuthValue: () => Buffer.alloc(0),
    });
    this.#names.clear();
    this.#nvPublics.clear();
  }

  async unseal(handle: number, auth: Authorization = EMPTY_PASSWORD): Promise<Buffer> {
    const { params } = await this.#execute({
      cc: CC.Unseal,
      handles: [handle],
      auths: [auth],
      encryptable: true,
    });
    const data = params.b('outData', 128);
    params.end();
    return data;
  }

  // ------------------------------------------------------------------ NV

  async nvDefineSpace(
    pub: NvPublic,
    {
      authValue = Buffer.alloc(0),
      hierarchy = RH.OWNER,
      auth = EMPTY_PASSWORD,
    }: { authValue?: Uint8Array; hierarchy?: number; auth?: Authorization } = {},
  ): Promise<Buffer> {
    await this.#execute({
      cc: CC.NV_DefineSpace,
      handles: [hierarchy],
      auths: [auth],
      decryptable: true,
      params: marshal((w) => w.b(authValue).sized((p) => writeNvPublic(p, pub))),
    });
    return this.#rememberNv(pub);
  }

  async nvUndefineSpace(
    index: number,
    { hierarchy = RH.OWNER, auth = EMPTY_PASSWORD }: { hierarchy?: number; auth?: Authorization } = {},
  ): Promise<void> {
    await this.#execute({ cc: CC.NV_UndefineSpace, handles: [hierarchy, index], auths: [auth] });
    this.forget(index >>> 0);
  }

  async nvReadPublic(index: number): Promise<{ public: NvPublic; name: Buffer }> {
    const { params } = await this.#execute({ cc: CC.NV_ReadPublic, handles: [index] });
    const pub = params.sized('nvPublic', (r) => readNvPublic(r))!;
    const name = params.b('nvName', LIMITS.name);
    params.end();
    if (pub.index !== index >>> 0) params.fail(`public area of index 0x${pub.index.toString(16)}`);
    if (!name.equals(nvName(pub))) params.fail('the Name does not match the public area');
    this.#rememberNv(pub);
    return { public: pub, name };
  }

  /**
   * Writes `data` at `offset`, in chunks of TPM_PT_NV_BUFFER_MAX. `auth` is called for each
   * chunk (a policy must be satisfied anew each time); `authHandle` defaults to the index.
   */
  async nvWrite(
    index: number,
    data: Uint8Array,
    {
      offset = 0,
      authHandle = index,
      auth = () => EMPTY_PASSWORD,
    }: { offset?: number; authHandle?: number; auth?: () => Authorization | Promise<Authorization> } = {},
  ): Promise<void> {
    const max = await this.nvBufferMax();
    let at = 0;
    do {
      const chunk = data.subarray(at, at + max);
      await this.#execute({
        cc: CC.NV_Write,
        handles: [authHandle, index],
        auths: [await auth()],
        decryptable: true,
        params: marshal((w) => w.b(chunk).u16(offset + at)),
      });
      this.#updateNvAttributes(index >>> 0, NV.WRITTEN);
      at += chunk.length;
    } while (at < data.length);
  }

  /** Reads `size` bytes at `offset` in chunks of TPM_PT_NV_BUFFER_MAX, calling `auth` before each chunk. */
  async nvRead(
    index: number,
    size: number,
    {
      offset = 0,
      authHandle = index,
      auth = () => EMPTY_PASSWORD,
    }: { offset?: number; authHandle?: number; auth?: () => Authorization | Promise<Authorization> } = {},
  ): Promise<Buffer> {
    const max = await this.nvBufferMax();
    const out = Buffer.alloc(size);
    let at = 0;
    while (at < size) {
      const n = Math.min(max, size - at);
      const { params } = await this.#execute({
        cc: CC.NV_Read,
        handles: [authHandle, index],
        auths: [await auth()],
        encryptable: true,
        params: marshal((w) => w.u16(n).u16(offset + at)),
      });
      const data = params.b('data', LIMITS.buffer);
      params.end();
      if (data.length !== n) params.fail(`${data.length} bytes for ${n} asked`);
      data.copy(out, at);
      data.fill(0);
      at += n;
    }
    return out;
  }

  async nvIncrement(
    index: number,
    { authHandle = index, auth = EMPTY_PASSWORD }: { authHandle?: number; auth?: Authorization } = {},
  ): Promise<void> {
    await this.#execute({ cc: CC.NV_Increment, handles: [authHandle, index], auths: [auth] });
    this.#updateNvAttributes(index >>> 0, NV.WRITTEN);
  }

  async nvWriteLock(
    index: number,
    { authHandle = index, auth = EMPTY_PASSWORD }: { authHandle?: number; auth?: Authorization } = {},
  ): Promise<void> {
    await this.#execute({ cc: CC.NV_WriteLock, handles: [authHandle, index], auths: [auth] });
    this.#updateNvAttributes(index >>> 0, NV.WRITELOCKED);
  }

  /** A counter index's value (8 bytes, big-endian). */
  async nvReadCounter(
    index: number,
    options: { authHandle?: number; auth?: () => Authorization } = {},
  ): Promise<bigint> {
    return (await this.nvRead(index, 8, options)).readBigUInt64BE(0);
  }

  // ------------------------------------------------------------------ sessions and policies

  async startAuthSession(options: StartSessionOptions): Promise<AuthSession> {
    const hashAlg = options.hash ?? 'sha256';
    const symmetric = options.symmetric ?? AES_128_CFB;
    const nonceCaller = randomBytes(digestSize(hashAlg));
    const salt = options.salt ? makeSalt(options.salt.public) : undefined;
    const bindHandle = options.bind?.handle ?? RH.NULL;
    const handles: Entity[] = [
      { handle: options.salt?.handle ?? RH.NULL, name: Buffer.alloc(0) },
      { handle: bindHandle, name: Buffer.alloc(0) },
    ];
    const type = { hmac: SE.HMAC, policy: SE.POLICY, trial: SE.TRIAL }[options.type];
    const { handles: out, params } = await this.#execute({
      cc: CC.StartAuthSession,
      handles,
      responseHandles: 1,
      params: marshal((w) => {
        w.b(nonceCaller)
          .b(salt?.encryptedSalt ?? Buffer.alloc(0))
          .u8(type);
        w.u16(symmetric.alg);
        if (symmetric.alg !== ALG.NULL) w.u16(symmetric.keyBits ?? 0).u16(symmetric.mode ?? ALG.NULL);
        w.u16(hashId(hashAlg));
      }),
    });
    const nonceTPM = params.b('nonceTPM', LIMITS.digest);
    params.end();
    const handle = out[0]!;
    const expectedType = options.type === 'hmac' ? HT.HMAC_SESSION : HT.POLICY_SESSION;
    if (handle >>> 24 !== expectedType) params.fail(`session handle 0x${handle.toString(16)}`);
    if (nonceTPM.length !== digestSize(hashAlg)) params.fail(`nonceTPM of ${nonceTPM.length} bytes`);
    const bindAuth = options.bind ? Buffer.from(options.bind.authValue ?? Buffer.alloc(0)) : Buffer.alloc(0);
    let trimmed = bindAuth;
    while (trimmed.length && trimmed[trimmed.length - 1] === 0) trimmed = trimmed.subarray(0, -1);
    const keyInput = Buffer.concat([trimmed, salt?.salt ?? Buffer.alloc(0)]);
    const sessionKey =
      options.bind || salt
        ? kdfa(hashAlg, keyInput, 'ATH', nonceTPM, nonceCaller, digestSize(hashAlg) * 8)
        : Buffer.alloc(0);
    const bound =
      options.bind && options.type === 'hmac'
        ? bindValue(await this.nameOf(bindHandle), bindAuth)
        : undefined;
    return new AuthSession({
      handle,
      kind: options.type,
      hashAlg,
      symmetric,
      sessionKey,
      nonceCaller,
      nonceTPM,
      ...(bound ? { bound } : {}),
    });
  }

  async policyPCR(
    session: AuthSession,
    selections: PcrSelection[],
    pcrDigest: Uint8Array = Buffer.alloc(0),
  ): Promise<void> {
    await this.#execute({
      cc: CC.PolicyPCR,
      handles: [session.handle],
      params: marshal((w) => {
        w.b(pcrDigest);
        writePcrSelections(w, selections);
      }),
    });
  }

  async policyNV(
    session: AuthSession,
    {
      index,
      operandB,
      offset = 0,
      operation = 'eq',
      authHandle = index,
      auth = EMPTY_PASSWORD,
    }: {
      index: number;
      operandB: Uint8Array;
      offset?: number;
      operation?: Operation;
      authHandle?: number;
      auth?: Authorization;
    },
  ): Promise<void> {
    await this.#execute({
      cc: CC.PolicyNV,
      handles: [authHandle, index, session.handle],
      auths: [auth],
      decryptable: true,
      params: marshal((w) => w.b(operandB).u16(offset).u16(EO[operation])),
    });
  }

  async policyAuthorize(
    session: AuthSession,
    {
      approvedPolicy,
      policyRef = Buffer.alloc(0),
      keySign,
      checkTicket,
    }: { approvedPolicy: Uint8Array; policyRef?: Uint8Array; keySign: Uint8Array; checkTicket: Ticket },
  ): Promise<void> {
    await this.#execute({
      cc: CC.PolicyAuthorize,
      handles: [session.handle],
      decryptable: true,
      params: marshal((w) => {
        w.b(approvedPolicy).b(policyRef).b(keySign);
        writeTicket(w, checkTicket);
      }),
    });
  }

  async policyAuthorizeNV(
    session: AuthSession,
    {
      index,
      authHandle = index,
      auth = EMPTY_PASSWORD,
    }: { index: number; authHandle?: number; auth?: Authorization },
  ): Promise<void> {
    await this.#execute({
      cc: CC.PolicyAuthorizeNV,
      handles: [authHandle, index, session.handle],
      auths: [auth],
    });
  }

  async policyOR(session: AuthSession, digests: Uint8Array[]): Promise<void> {
    if (digests.length < 2 || digests.length > 8)
      throw new TpmError('TPM_INVALID_ARGUMENT', `PolicyOR takes 2 to 8 digests, not ${digests.length}`);
    await this.#execute({
      cc: CC.PolicyOR,
      handles: [session.handle],
      params: marshal((w) => {
        w.u32(digests.length);
        for (const d of digests) w.b(d);
      }),
    });
  }

  async policyCommandCode(session: AuthSession, code: number): Promise<void> {
    await this.#execute({
      cc: CC.PolicyCommandCode,
      handles: [session.handle],
      params: marshal((w) => w.u32(code)),
    });
  }

  async policyAuthValue(session: AuthSession): Promise<void> {
    await this.#execute({ cc: CC.PolicyAuthValue, handles: [session.handle] });
    session.authValueNeeded = true;
  }

  async policyPassword(session: AuthSession): Promise<void> {
    await this.#execute({ cc: CC.PolicyPassword, handles: [session.handle] });
    session.passwordNeeded = true;
  }

  async policySecret(
    session: AuthSession,
    {
      authHandle,
      auth = EMPTY_PASSWORD,
      policyRef = Buffer.alloc(0),
      expiration = 0,
      includeNonce = false,
    }: {
      authHandle: number;
      auth?: Authorization;
      policyRef?: Uint8Array;
      expiration?: number;
      includeNonce?: boolean;
    },
  ): Promise<{ timeout: Buffer; ticket: Ticket }> {
    const { params } = await this.#execute({
      cc: CC.PolicySecret,
      handles: [authHandle, session.handle],
      auths: [auth],
      decryptable: true,
      encryptable: true,
      params: marshal((w) => {
        w.b(includeNonce ? session.nonceTPM : Buffer.alloc(0))
          .b(Buffer.alloc(0))
          .b(policyRef)
          .u32(expiration | 0);
      }),
    });
    const timeout = params.b('timeout', LIMITS.digest);
    const ticket = readTicket(params, 'policy ticket');
    params.end();
    return { timeout, ticket };
  }

  async policyRestart(session: AuthSession): Promise<void> {
    await this.#execute({ cc: CC.PolicyRestart, handles: [session.handle] });
    session.resetPolicy();
  }

  async policyGetDigest(session: AuthSession): Promise<Buffer> {
    const { params } = await this.#execute({
      cc: CC.PolicyGetDigest,
      handles: [session.handle],
      encryptable: true,
    });
    const digest = params.b('policyDigest', LIMITS.digest);
    params.end();
    return digest;
  }

  // ------------------------------------------------------------------ signatures and attestation

  /** Verifies a signature over `digest` with a loaded key; the ticket feeds PolicyAuthorize. */
  async verifySignature(keyHandle: number, digest: Uint8Array, signature: Signature): Promise<Ticket> {
    const { params } = await this.#execute({
      cc: CC.VerifySignature,
      handles: [keyHandle],
      decryptable: true,
      params: marshal((w) => {
        w.b(digest);
        writeSignature(w, signature);
      }),
    });
    const ticket = readTicket(params, 'validation');
    params.end();
    if (ticket.tag !== ST.VERIFIED) params.fail(`ticket tag 0x${ticket.tag.toString(16)}`);
    return ticket;
  }

  /** Hashes data in the TPM; for a restricted signing key the ticket says the data is not TPM-generated. */
  async hash(
    data: Uint8Array,
    hashName: HashName = 'sha256',
    hierarchy: number = RH.OWNER,
  ): Promise<{ digest: Buffer; validation: Ticket }> {
    const { params } = await this.#execute({
      cc: CC.Hash,
      handles: [],
      decryptable: true,
      encryptable: true,
      params: marshal((w) => w.b(data).u16(hashId(hashName)).u32(hierarchy)),
    });
    const digest = params.b('outHash', LIMITS.digest);
    const validation = readTicket(params, 'validation');
    params.end();
    return { digest, validation };
  }

  async sign(
    keyHandle: number,
    digest: Uint8Array,
    {
      scheme = { scheme: ALG.NULL },
      validation = { tag: ST.HASHCHECK, hierarchy: RH.NULL, digest: Buffer.alloc(0) },
      auth = EMPTY_PASSWORD,
    }: { scheme?: Scheme; validation?: Ticket; auth?: Authorization } = {},
  ): Promise<Signature> {
    const { params } = await this.#execute({
      cc: CC.Sign,
      handles: [keyHandle],
      auths: [auth],
      decryptable: true,
      params: marshal((w) => {
        w.b(digest);
        writeScheme(w, scheme);
        writeTicket(w, validation);
      }),
    });
    const signature = readSignature(params);
    params.end();
    return signature;
  }

  async quote(
    signHandle: number,
    {
      qualifyingData = Buffer.alloc(0),
      selections,
      scheme = { scheme: ALG.NULL },
      auth = EMPTY_PASSWORD,
    }: { qualifyingData?: Uint8Array; selections: PcrSelection[]; scheme?: Scheme; auth?: Authorization },
  ): Promise<{ attestBytes: Buffer; attest: Attest; signature: Signature }> {
    const { params } = await this.#execute({
      cc: CC.Quote,
      handles: [signHandle],
      auths: [auth],
      decryptable: true,
      encryptable: true,
      params: marshal((w) => {
        w.b(qualifyingData);
        writeScheme(w, scheme);
        writePcrSelections(w, selections);
      }),
    });
    return this.#attested(params);
  }

  async certify(
    objectHandle: number,
    signHandle: number,
    {
      qualifyingData = Buffer.alloc(0),
      scheme = { scheme: ALG.NULL },
      objectAuth = EMPTY_PASSWORD,
      signAuth = EMPTY_PASSWORD,
    }: {
      qualifyingData?: Uint8Array;
      scheme?: Scheme;
      objectAuth?: Authorization;
      signAuth?: Authorization;
    } = {},
  ): Promise<{ attestBytes: Buffer; attest: Attest; signature: Signature }> {
    const { params } = await this.#execute({
      cc: CC.Certify,
      handles: [objectHandle, signHandle],
      auths: [objectAuth, signAuth],
      decryptable: true,
      encryptable: true,
      params: marshal((w) => {
        w.b(qualifyingData);
        writeScheme(w, scheme);
      }),
    });
    return this.#attested(params);
  }

  // ------------------------------------------------------------------ credentials

  /**
   * TPM2_MakeCredential: protects `credential` for the object named `objectName` with the public
   * part of the loaded decryption key `handle` (the TPM does what `makeCredential` in credential.ts
   * does offline). No authorization.
   */
  async makeCredential(
    handle: number,
    credential: Uint8Array,
    objectName: Uint8Array,
  ): Promise<{ credentialBlob: Buffer; secret: Buffer }> {
    const { params } = await this.#execute({
      cc: CC.MakeCredential,
      handles: [handle],
      params: marshal((w) => w.b(credential).b(objectName)),
    });
    const credentialBlob = params.b('credentialBlob', LIMITS.buffer);
    const secret = params.b('secret', LIMITS.buffer);
    params.end();
    return { credentialBlob, secret };
  }

  /**
   * TPM2_ActivateCredential: the TPM recovers a credential made for `activateHandle`'s Name and
   * protected with `keyHandle`'s public key, and releases it only when both objects are loaded in
   * it (ADMIN role of the first, USER role of the second).
   */
  async activateCredential(
    activateHandle: number,
    keyHandle: number,
    credentialBlob: Uint8Array,
    secret: Uint8Array,
    {
      activateAuth = EMPTY_PASSWORD,
      keyAuth = EMPTY_PASSWORD,
    }: { activateAuth?: Authorization; keyAuth?: Authorization } = {},
  ): Promise<Buffer> {
    const { params } = await this.#execute({
      cc: CC.ActivateCredential,
      handles: [activateHandle, keyHandle],
      auths: [activateAuth, keyAuth],
      decryptable: true,
      encryptable: true,
      params: marshal((w) => w.b(credentialBlob).b(secret)),
    });
    const certInfo = params.b('certInfo', LIMITS.digest);
    params.end();
    return certInfo;
  }

  #attested(params: Reader): { attestBytes: Buffer; attest: Attest; signature: Signature } {
    const attestBytes = params.b('attestation', LIMITS.buffer);
    const signature = readSignature(params);
    params.end();
    const attest = readAttest(new Reader(attestBytes, 'attestation'));
    return { attestBytes, attest, signature };
  }
}
