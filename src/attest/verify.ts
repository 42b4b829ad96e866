/**
 * Verifying evidence: that a genuine device, freshly, booted a system the reference accepts.
 * Each step refuses with its own AttestError code, in this order:
 *
 *   1. the certificate chain leads to the device CA and names a product and serial   ATTEST_UNTRUSTED_KEY
 *      the key that quoted is that certificate's key, a TPM-resident restricted signing key
 *   2. the quote's signature verifies with it                                          ATTEST_SIGNATURE
 *      and it is a TPM-generated quote                                                 ATTEST_EVIDENCE
 *   3. the quote answers this verifier's nonce                                         ATTEST_NONCE
 *   4. the device is of the reference's product                                        ATTEST_PRODUCT
 *   5. the PCR values carried are the quoted ones (their digest is the quote's)        ATTEST_PCR_VALUES
 *   6. the event log parses, replays to every quoted PCR it extends, and every event   ATTEST_EVENT_LOG
 *      whose digest is the hash of its data still has that data
 *   7. the events of the PCRs the reference governs are, one by one, those of one of   ATTEST_REFERENCE_MISMATCH
 *      its systems (else the first event that differs is named)
 *   8. a binding key, when present, is the same TPM's and bound to the quoted PCRs     ATTEST_BINDING
 *
 * A restricted signing key signs only structures the TPM made (TPM_GENERATED_VALUE), so a valid
 * signature by the certified key over a quote with our nonce means: that TPM, now, held these
 * PCR values. The event log is untrusted until it replays to them.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import {
  type Bank,
  describeEvent,
  EV,
  type EventLog,
  eventTypeName,
  extend,
  type LogEvent,
  MeasureError,
  parseEventLog,
  zeros,
} from '../measure/index.ts';
import { type Certificate, deviceIdOf, PkiError, parseCertificate, verifyChain } from '../pki/index.ts';
import {
  hashNameOf,
  keyObjectOf,
  lockDigest,
  OBJECT,
  policy,
  qualifiedName,
  type Signature,
  ST,
  TPM_GENERATED_VALUE,
  TpmError,
  verifyTpmSignature,
} from '../tpm/index.ts';
import { AttestError, type NamedEvent } from './errors.ts';
import type { Evidence, SignedAttest } from './evidence.ts';
import type { Reference, ReferenceEvent, ReferenceSystem } from './reference.ts';

export interface VerifyOptions {
  /** The device-identity CA every device certificate must chain to. */
  deviceCa: Certificate;
  reference: Reference;
  /** The nonce this verifier issued for this attestation. */
  nonce: Uint8Array;
  /** When the certificates must be valid (default now). */
  at?: Date;
  /** Chain verdicts kept between calls, for a service that sees the same devices again. */
  chains?: ChainCache;
}

export interface Verdict {
  product: string;
  serial: string;
  /** The device certificate's subject. */
  subject: string;
  /** The reference system the boot matched. */
  system: string;
  bank: Bank;
  /** Quoted PCR values, hex. */
  pcrs: Record<number, string>;
  /** Quoted PCRs that no event of the log extends (their values are not explained by the log). */
  unlogged: number[];
  /** Events in the log (the header included). */
  events: number;
  attestationKeyName: string;
  clock: { clock: string; resetCount: number; restartCount: number; safe: boolean };
  firmwareVersion: string;
  /** The verified binding key, when the evidence carries one. */
  binding?: Evidence['binding'];
}

interface ChainVerdict {
  product: string;
  serial: string;
  subject: string;
  /** The leaf's SubjectPublicKeyInfo (DER). */
  spki: Buffer;
  key: KeyObject;
  /** The attestation key's public area (TPMT_PUBLIC) found to hold this key with the right attributes. */
  attestationKey?: Buffer;
  notBefore: number;
  notAfter: number;
}

/** Verified certificate chains by their bytes and the CA (bounded; the oldest are forgotten first). */
export class ChainCache {
  readonly #entries = new Map<string, ChainVerdict>();
  readonly #max: number;
  constructor(max = 10_000) {
    this.#max = max;
  }
  get(key: string): ChainVerdict | undefined {
    return this.#entries.get(key);
  }
  set(key: string, value: ChainVerdict): void {
    if (this.#entries.size >= this.#max) this.#entries.delete(this.#entries.keys().next().value!);
    this.#entries.set(key, value);
  }
  get size(): number {
    return this.#entries.size;
  }
}

/** The attributes a TPM-resident attestation key has (and a software key pretending cannot sign quotes with). */
const AK_REQUIRED =
  OBJECT.fixedTPM | OBJECT.fixedParent | OBJECT.sensitiveDataOrigin | OBJECT.restricted | OBJECT.sign;
const BINDING_REQUIRED =
  OBJECT.fixedTPM | OBJECT.fixedParent | OBJECT.sensitiveDataOrigin | OBJECT.restricted | OBJECT.decrypt;

async function checkChain(evidence: Evidence, options: VerifyOptions): Promise<ChainVerdict> {
  const at = options.at ?? new Date();
  const key = createHash('sha256')
    .update(Buffer.from(options.deviceCa.rawData))
    .update(Buffer.from(evidence.certificates.map((c) => c.length).join(',')))
    .update(Buffer.concat(evidence.certificates))
    .digest('hex');
  const cached = options.chains?.get(key);
  if (cached && at.getTime() >= cached.notBefore && at.getTime() <= cached.notAfter) return cached;
  let certs: Certificate[];
  try {
    certs = evidence.certificates.map((der, i) => parseCertificate(der, `evidence certificate ${i}`));
  } catch (error) {
    throw new AttestError('ATTEST_EVIDENCE', `the evidence's certificates: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const [leaf, ...intermediates] = certs as [Certificate, ...Certificate[]];
  let path: Certificate[];
  try {
    path = await verifyChain(leaf, intermediates, options.deviceCa, { at, purpose: null });
  } catch (error) {
    if (error instanceof PkiError)
      throw new AttestError(
        'ATTEST_UNTRUSTED_KEY',
        `the attestation key's certificate "${leaf.subject}" is not trusted: ${error.message}`,
        { subject: leaf.subject, cause: error },
      );
    throw error;
  }
  const id = deviceIdOf(leaf);
  if (!id)
    throw new AttestError(
      'ATTEST_UNTRUSTED_KEY',
      `the certificate "${leaf.subject}" is not a device certificate (no serialNumber=PID:<product> SN:<serial>)`,
      { subject: leaf.subject },
    );
  const spki = Buffer.from(leaf.publicKey.rawData);
  const verdict: ChainVerdict = {
    ...id,
    subject: leaf.subject,
    spki,
    key: createPublicKey({ key: spki, format: 'der', type: 'spki' }),
    notBefore: Math.max(...path.map((c) => c.notBefore.getTime())),
    notAfter: Math.min(...path.map((c) => c.notAfter.getTime())),
  };
  options.chains?.set(key, verdict);
  return verdict;
}

function checkSignature(key: KeyObject, signed: SignedAttest, what: string): void {
  const hash = 'hash' in signed.signature ? hashNameOf(signed.signature.hash) : undefined;
  if (!hash || hash === 'sha1')
    throw new AttestError(
      'ATTEST_SIGNATURE',
      `the ${what} is signed with ${describeSignature(signed.signature)}, not a scheme Seal accepts`,
    );
  if (!verifyTpmSignature(key, signed.bytes, signed.signature))
    throw new AttestError(
      'ATTEST_SIGNATURE',
      `the ${what}'s signature does not verify with the certified attestation key`,
    );
  if (signed.attest.magic !== TPM_GENERATED_VALUE)
    throw new AttestError(
      'ATTEST_EVIDENCE',
      `the ${what} is not TPM-generated (magic 0x${signed.attest.magic.toString(16)})`,
    );
}

function describeSignature(s: Signature): string {
  return `algorithm 0x${s.sigAlg.toString(16)}${'hash' in s ? `/hash 0x${s.hash.toString(16)}` : ''}`;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** Event types whose digest is, by the TCG PC Client spec (and OVMF), the hash of their data. */
const DATA_HASHED = new Set<number>([
  EV.SEPARATOR,
  EV.EFI_ACTION,
  EV.EFI_VARIABLE_DRIVER_CONFIG,
  EV.EFI_VARIABLE_AUTHORITY,
]);

function named(event: LogEvent): NamedEvent {
  return {
    index: event.index,
    pcr: event.pcr,
    type: eventTypeName(event.type),
    description: describeEvent(event.type, event.data),
  };
}

function showEvent(e: NamedEvent): string {
  return `event ${e.index} (PCR ${e.pcr}, ${e.type}, ${e.description})`;
}

interface Difference {
  system: ReferenceSystem;
  /** Position in log order of the first differing event; Infinity when the log is only short. */
  at: number;
  message: string;
  event?: NamedEvent;
}

/** Where the log's events of the governed PCRs first differ from `system`'s, or undefined when they match. */
function firstDifference(
  byPcr: Map<number, LogEvent[]>,
  system: ReferenceSystem,
  reference: Reference,
): Difference | undefined {
  let best: Difference | undefined;
  const consider = (d: Difference) => {
    if (!best || d.at < best.at) best = d;
  };
  for (const pcr of reference.pcrs) {
    const logged = byPcr.get(pcr) ?? [];
    const expected = system.events.filter((e) => e.pcr === pcr);
    const n = Math.max(logged.length, expected.length);
    for (let i = 0; i < n; i++) {
      const got = logged[i];
      const want: ReferenceEvent | undefined = expected[i];
      if (
        got &&
        want &&
        got.digests[reference.bank]!.equals(want.digest) &&
        eventTypeName(got.type) === want.type
      )
        continue;
      if (got && want) {
        const e = named(got);
        consider({
          system,
          at: got.index,
          event: e,
          message: `${showEvent(e)} differs from the reference: system "${system.name}" expects ${want.type} ${want.description} (${reference.bank} ${hex(want.digest)}), the log has ${hex(got.digests[reference.bank]!)}`,
        });
      } else if (got) {
        const e = named(got);
        consider({
          system,
          at: got.index,
          event: e,
          message: `${showEvent(e)} is not in the reference: system "${system.name}" measures no more into PCR ${pcr}`,
        });
      } else {
        const last = logged[logged.length - 1];
        consider({
          system,
          at: Number.POSITIVE_INFINITY,
          message: `the log ends PCR ${pcr} ${last ? `after event ${last.index}` : 'without any event'}: system "${system.name}" expects ${want!.type} ${want!.description} next`,
        });
      }
      break;
    }
  }
  return best;
}

/** The closest system's first difference (the one whose first difference comes latest in the log). */
function closestDifference(
  log: EventLog,
  reference: Reference,
): { match?: ReferenceSystem; diff?: Difference } {
  const byPcr = new Map<number, LogEvent[]>();
  for (const e of log.events) {
    if (e.type === EV.NO_ACTION || !reference.pcrs.includes(e.pcr)) continue;
    if (!byPcr.has(e.pcr)) byPcr.set(e.pcr, []);
    byPcr.get(e.pcr)!.push(e);
  }
  let closest: Difference | undefined;
  for (const system of reference.systems) {
    const d = firstDifference(byPcr, system, reference);
    if (!d) return { match: system };
    if (!closest || d.at > closest.at) closest = d;
  }
  return { diff: closest };
}

function parseLog(evidence: Evidence): EventLog {
  try {
    return parseEventLog(evidence.eventLog, 'the evidence event log');
  } catch (error) {
    if (error instanceof MeasureError)
      throw new AttestError('ATTEST_EVENT_LOG', error.message, { cause: error });
    throw error;
  }
}

/** The key that quoted is the certified key, a TPM-resident restricted signing key. */
function checkAttestationKey(evidence: Evidence, chain: ChainVerdict): void {
  let akKey: KeyObject;
  try {
    akKey = keyObjectOf(evidence.attestationKey);
  } catch (error) {
    // An unsupported curve (TpmError), or a point not on it (node:crypto refuses the key).
    throw new AttestError(
      'ATTEST_UNTRUSTED_KEY',
      `the attestation key is not a usable public key: ${error instanceof TpmError ? error.message : 'invalid key'}`,
      { cause: error },
    );
  }
  if (!Buffer.from(akKey.export({ type: 'spki', format: 'der' })).equals(chain.spki))
    throw new AttestError(
      'ATTEST_UNTRUSTED_KEY',
      `the key that quoted is not the key certified by "${chain.subject}"`,
      { subject: chain.subject },
    );
  const attributes = evidence.attestationKey.attributes;
  if ((attributes & AK_REQUIRED) !== AK_REQUIRED || attributes & OBJECT.decrypt)
    throw new AttestError(
      'ATTEST_UNTRUSTED_KEY',
      `the attestation key (attributes 0x${attributes.toString(16)}) is not a TPM-resident restricted signing key`,
    );
  chain.attestationKey = evidence.attestationKeyBytes;
}

/** Verifies `evidence`; returns what it proves, or throws the AttestError of the first check that fails. */
export async function verifyEvidence(evidence: Evidence, options: VerifyOptions): Promise<Verdict> {
  const { reference } = options;
  // 1. The key: certified by the device CA, the key that quoted, TPM-resident.
  const chain = await checkChain(evidence, options);
  // The attestation key: the certificate's key (remembered with a cached chain: checked once).
  if (!chain.attestationKey?.equals(evidence.attestationKeyBytes)) checkAttestationKey(evidence, chain);
  // 2. The quote: signed by it, made by the TPM.
  checkSignature(chain.key, evidence.quote, 'quote');
  const attest = evidence.quote.attest;
  if (attest.type !== ST.ATTEST_QUOTE || !attest.quote)
    throw new AttestError(
      'ATTEST_EVIDENCE',
      `the quote is an attestation of type 0x${attest.type.toString(16)}, not a quote`,
    );
  // The signer the TPM names is this key (its Qualified Name ends in its Name's algorithm).
  if (
    attest.qualifiedSigner.length < 2 ||
    !attest.qualifiedSigner.subarray(0, 2).equals(evidence.attestationKeyName.subarray(0, 2))
  )
    throw new AttestError('ATTEST_EVIDENCE', 'the quote names a signer of another name algorithm');
  // 3. Fresh: our nonce.
  if (!attest.extraData.equals(Buffer.from(options.nonce)))
    throw new AttestError(
      'ATTEST_NONCE',
      `the quote answers nonce ${hex(attest.extraData) || '(none)'}, not this verifier's ${hex(options.nonce)}: a replayed or foreign quote`,
    );
  // 4. The product.
  if (chain.product !== reference.product)
    throw new AttestError(
      'ATTEST_PRODUCT',
      `the device "${chain.subject}" is of product ${chain.product}, not ${reference.product}`,
      { subject: chain.subject },
    );
  // 5. The PCR values carried are the quoted ones.
  const selection = attest.quote.pcrSelect;
  if (selection.length !== 1 || selection[0]!.hash !== evidence.bank)
    throw new AttestError(
      'ATTEST_PCR_VALUES',
      `the quote selects ${selection.map((s) => s.hash).join(', ') || 'no bank'}, the evidence carries ${evidence.bank} values`,
    );
  const quoted = selection[0]!.pcrs;
  const carried = [...evidence.pcrs.keys()].sort((a, b) => a - b);
  if (quoted.join() !== carried.join())
    throw new AttestError(
      'ATTEST_PCR_VALUES',
      `the quote covers PCRs ${quoted.join(',')}, the evidence carries ${carried.join(',')}`,
    );
  const digest = createHash(evidence.bank);
  for (const pcr of quoted) digest.update(evidence.pcrs.get(pcr)!);
  if (!digest.digest().equals(attest.quote.pcrDigest))
    throw new AttestError(
      'ATTEST_PCR_VALUES',
      'the PCR values the evidence carries are not the ones the TPM quoted',
    );
  if (reference.bank !== evidence.bank)
    throw new AttestError(
      'ATTEST_REFERENCE_MISMATCH',
      `the reference is for the ${reference.bank} bank, the quote for ${evidence.bank}`,
    );
  for (const pcr of reference.pcrs)
    if (!quoted.includes(pcr))
      throw new AttestError(
        'ATTEST_REFERENCE_MISMATCH',
        `the quote does not cover PCR ${pcr}, which the reference governs`,
      );
  // 6. The event log: parses, replays to the quote, holds no edited event.
  const log = parseLog(evidence);
  if (!log.banks.includes(evidence.bank))
    throw new AttestError('ATTEST_EVENT_LOG', `the event log has no ${evidence.bank} digests`);
  for (const event of log.events) {
    if (!DATA_HASHED.has(event.type)) continue;
    for (const [bank, d] of Object.entries(event.digests) as [Bank, Buffer][]) {
      if (!createHash(bank).update(event.data).digest().equals(d)) {
        const e = named(event);
        throw new AttestError(
          'ATTEST_EVENT_LOG',
          `${showEvent(e)}: its data does not hash to its ${bank} digest: the log was edited`,
          { event: e },
        );
      }
    }
  }
  const replayed = new Map<number, Buffer>();
  for (const event of log.events) {
    if (event.type === EV.NO_ACTION) continue;
    const d = event.digests[evidence.bank];
    if (!d)
      throw new AttestError('ATTEST_EVENT_LOG', `${showEvent(named(event))} has no ${evidence.bank} digest`);
    let current = replayed.get(event.pcr);
    if (!current) {
      current = zeros(evidence.bank);
      if (event.pcr === 0 && log.startupLocality) current[current.length - 1] = log.startupLocality;
    }
    replayed.set(event.pcr, extend(evidence.bank, current, d));
  }
  const unlogged: number[] = [];
  for (const pcr of quoted) {
    const value = replayed.get(pcr);
    if (!value) {
      unlogged.push(pcr);
      continue;
    }
    const quotedValue = evidence.pcrs.get(pcr)!;
    if (!value.equals(quotedValue)) {
      // Seal's agent locks PCR 7 once the device secrets are read; that extension is not logged.
      if (pcr === 7 && extend(evidence.bank, value, lockDigest(evidence.bank)).equals(quotedValue))
        throw new AttestError(
          'ATTEST_EVENT_LOG',
          'PCR 7 was locked after the boot (the agent locks it once the device secrets are read): attest before the lock',
        );
      // Name the event the reference disagrees with, when the PCR is one it governs.
      const { diff } = reference.pcrs.includes(pcr) ? closestDifference(log, reference) : {};
      throw new AttestError(
        'ATTEST_EVENT_LOG',
        `the event log does not replay to the quoted PCR ${pcr} (it gives ${hex(value)}, the TPM quoted ${hex(quotedValue)}): the log was altered, or the PCR extended without a log entry${diff ? `; ${diff.message}` : ''}`,
        diff?.event ? { event: diff.event } : {},
      );
    }
  }
  // 7. The reference.
  const { match, diff } = closestDifference(log, reference);
  if (!match)
    throw new AttestError(
      'ATTEST_REFERENCE_MISMATCH',
      diff!.message,
      diff!.event ? { event: diff!.event } : {},
    );
  for (const pcr of reference.pcrs)
    if (!match.values.get(pcr)!.equals(evidence.pcrs.get(pcr)!))
      throw new AttestError('ATTEST_REFERENCE_MISMATCH', `PCR ${pcr} is not system "${match.name}"'s value`);
  // 8. The binding key.
  if (evidence.binding) {
    const b = evidence.binding;
    checkSignature(chain.key, b.certify, 'binding key certification');
    const c = b.certify.attest;
    if (c.type !== ST.ATTEST_CERTIFY || !c.certify)
      throw new AttestError(
        'ATTEST_BINDING',
        'the binding key certification is not a TPM2_Certify attestation',
      );
    if (!c.extraData.equals(Buffer.from(options.nonce)))
      throw new AttestError('ATTEST_BINDING', 'the binding key certification answers another nonce');
    if (!c.certify.name.equals(b.name))
      throw new AttestError('ATTEST_BINDING', 'the certification is of another key than the binding key');
    // Same parent as the attestation key, so the same TPM (both are fixedTPM children of it).
    let parentOk = false;
    try {
      parentOk =
        qualifiedName(b.parentQualifiedName, evidence.attestationKeyName).equals(attest.qualifiedSigner) &&
        c.qualifiedSigner.equals(attest.qualifiedSigner) &&
        qualifiedName(b.parentQualifiedName, b.name).equals(c.certify.qualifiedName);
    } catch {
      parentOk = false;
    }
    if (!parentOk)
      throw new AttestError(
        'ATTEST_BINDING',
        "the binding key is not a child of the attestation key's parent in the same TPM",
      );
    const battr = b.public.attributes;
    if ((battr & BINDING_REQUIRED) !== BINDING_REQUIRED || battr & (OBJECT.userWithAuth | OBJECT.sign))
      throw new AttestError(
        'ATTEST_BINDING',
        `the binding key (attributes 0x${battr.toString(16)}) is not a TPM-made restricted decryption key usable by policy only`,
      );
    const expected =
      b.public.nameAlg === 'sha256' && attest.quote.pcrDigest.length === 32
        ? policy('sha256').pcr(selection, attest.quote.pcrDigest).digest
        : undefined;
    if (!expected || !b.public.authPolicy.equals(expected))
      throw new AttestError(
        'ATTEST_BINDING',
        'the binding key is not bound to the quoted PCR values (its policy differs)',
      );
  }
  return {
    product: chain.product,
    serial: chain.serial,
    subject: chain.subject,
    system: match.name,
    bank: evidence.bank,
    pcrs: Object.fromEntries(quoted.map((n) => [n, hex(evidence.pcrs.get(n)!)])),
    unlogged,
    events: log.events.length,
    attestationKeyName: hex(evidence.attestationKeyName),
    clock: {
      clock: attest.clockInfo.clock.toString(),
      resetCount: attest.clockInfo.resetCount,
      restartCount: attest.clockInfo.restartCount,
      safe: attest.clockInfo.safe,
    },
    firmwareVersion: attest.firmwareVersion.toString(16),
    ...(evidence.binding ? { binding: evidence.binding } : {}),
  };
}
