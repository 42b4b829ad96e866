/**
 * The evidence document: what a device sends a verifier to prove its boot — one self-describing
 * JSON object, version 1 (docs/attestation.md describes it for other implementations):
 *
 *   {
 *     "type": "seal-attest-evidence",
 *     "version": 1,
 *     "nonce": HEX,                       the verifier's nonce as the device received it
 *     "tpm": {
 *       "attestationKey": BASE64,         TPMT_PUBLIC of the key that quoted (the device identity key)
 *       "quote": BASE64,                  TPMS_ATTEST, as TPM2_Quote returned it (the signed bytes)
 *       "signature": BASE64,              TPMT_SIGNATURE over it
 *       "pcrs": { BANK: { "N": HEX } }    the quoted PCR values, one bank
 *     },
 *     "eventLog": BASE64,                 the TCG2 event log (binary_bios_measurements)
 *     "certificates": [BASE64, …],        the attestation key's certificate (DER), then intermediates
 *     "binding": {                        optional: a key to release secrets to (see binding.ts)
 *       "public": BASE64,                 its TPMT_PUBLIC
 *       "parentQualifiedName": HEX,       the Qualified Name of the parent it shares with the attestation key
 *       "certify": BASE64,                TPMS_ATTEST of TPM2_Certify(binding key, attestation key, nonce)
 *       "signature": BASE64               TPMT_SIGNATURE over it
 *     }
 *   }
 *
 * Binary fields are standard base64; digests and nonces lowercase hex. Readers refuse another
 * type or version and bound every field; unknown fields are ignored.
 */
import { BANKS, type Bank, DIGEST_SIZES } from '../measure/index.ts';
import {
  type Attest,
  LIMITS,
  marshal,
  objectName,
  type PublicArea,
  publicBytes,
  Reader,
  readAttest,
  readPublic,
  readSignature,
  type Signature,
  TpmError,
  writeSignature,
} from '../tpm/index.ts';
import { AttestError } from './errors.ts';

export const EVIDENCE_TYPE = 'seal-attest-evidence';
export const EVIDENCE_VERSION = 1;

/** The most an evidence document (JSON) may hold; an event log is tens of KiB. */
export const MAX_EVIDENCE = 4 << 20;
const MAX_EVENT_LOG = 3 << 20;
const MAX_CERTIFICATES = 8;
const MAX_CERTIFICATE = 16 << 10;
const MAX_NONCE = 64;

export interface SignedAttest {
  /** The TPMS_ATTEST bytes the signature covers. */
  bytes: Buffer;
  attest: Attest;
  signatureBytes: Buffer;
  signature: Signature;
}

export interface Binding {
  publicBytes: Buffer;
  public: PublicArea;
  name: Buffer;
  parentQualifiedName: Buffer;
  certify: SignedAttest;
}

export interface Evidence {
  nonce: Buffer;
  attestationKeyBytes: Buffer;
  attestationKey: PublicArea;
  /** The attestation key's Name. */
  attestationKeyName: Buffer;
  quote: SignedAttest;
  bank: Bank;
  /** Quoted PCR values of `bank`, by index. */
  pcrs: Map<number, Buffer>;
  eventLog: Buffer;
  /** DER, the attestation key's certificate first. */
  certificates: Buffer[];
  binding?: Binding;
}

/** What a device assembles: the raw pieces, before encoding. */
export interface EvidenceParts {
  nonce: Uint8Array;
  attestationKey: PublicArea;
  quote: { attestBytes: Buffer; signature: Signature };
  bank: Bank;
  pcrs: Map<number, Buffer> | Record<number, Buffer>;
  eventLog: Uint8Array;
  certificates: Uint8Array[];
  binding?: {
    public: PublicArea;
    parentQualifiedName: Uint8Array;
    certify: { attestBytes: Buffer; signature: Signature };
  };
}

const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');
const signatureBytes = (s: Signature) => marshal((w) => writeSignature(w, s));

/** The evidence document (JSON text, deterministic for the same parts). */
export function encodeEvidence(parts: EvidenceParts): string {
  const pcrs =
    parts.pcrs instanceof Map
      ? parts.pcrs
      : new Map(Object.entries(parts.pcrs).map(([k, v]) => [Number(k), v]));
  const doc = {
    type: EVIDENCE_TYPE,
    version: EVIDENCE_VERSION,
    nonce: Buffer.from(parts.nonce).toString('hex'),
    tpm: {
      attestationKey: b64(publicBytes(parts.attestationKey)),
      quote: b64(parts.quote.attestBytes),
      signature: b64(signatureBytes(parts.quote.signature)),
      pcrs: {
        [parts.bank]: Object.fromEntries(
          [...pcrs.entries()].sort(([a], [b]) => a - b).map(([n, v]) => [String(n), v.toString('hex')]),
        ),
      },
    },
    eventLog: b64(parts.eventLog),
    certificates: parts.certificates.map(b64),
    ...(parts.binding
      ? {
          binding: {
            public: b64(publicBytes(parts.binding.public)),
            parentQualifiedName: Buffer.from(parts.binding.parentQualifiedName).toString('hex'),
            certify: b64(parts.binding.certify.attestBytes),
            signature: b64(signatureBytes(parts.binding.certify.signature)),
          },
        }
      : {}),
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}

function fail(message: string, subject: string): never {
  throw new AttestError('ATTEST_EVIDENCE', `${subject}: ${message}`, { subject });
}

type Json = Record<string, unknown>;

function object(value: unknown, field: string, subject: string): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    fail(`${field} is not an object`, subject);
  return value as Json;
}

function base64(value: unknown, field: string, max: number, subject: string): Buffer {
  if (typeof value !== 'string') fail(`${field} is not a base64 string`, subject);
  if (value.length > Math.ceil(max / 3) * 4 + 4) fail(`${field} is larger than ${max} bytes`, subject);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 !== 0)
    fail(`${field} is not standard base64`, subject);
  const bytes = Buffer.from(value, 'base64');
  if (bytes.length > max) fail(`${field} is larger than ${max} bytes`, subject);
  return bytes;
}

function hex(value: unknown, field: string, max: number, subject: string): Buffer {
  if (typeof value !== 'string' || !/^(?:[0-9a-f]{2})*$/.test(value) || value.length > max * 2)
    fail(`${field} is not lowercase hex of at most ${max} bytes`, subject);
  return Buffer.from(value, 'hex');
}

/** Parses a TPM structure from evidence bytes, turning the reader's TPM_MALFORMED into ATTEST_EVIDENCE. */
function tpmStructure<T>(bytes: Buffer, field: string, subject: string, read: (r: Reader) => T): T {
  try {
    const r = new Reader(bytes, field);
    const value = read(r);
    r.end(field);
    return value;
  } catch (error) {
    if (error instanceof TpmError) fail(`${field} is not a TPM structure: ${error.message}`, subject);
    throw error;
  }
}

function signedAttest(
  attestB64: unknown,
  signatureB64: unknown,
  field: string,
  subject: string,
): SignedAttest {
  const bytes = base64(attestB64, `${field} attestation`, LIMITS.buffer, subject);
  const sigBytes = base64(signatureB64, `${field} signature`, LIMITS.buffer, subject);
  return {
    bytes,
    attest: tpmStructure(bytes, `${field} attestation`, subject, (r) =>
      readAttest(r, `${field} attestation`),
    ),
    signatureBytes: sigBytes,
    signature: tpmStructure(sigBytes, `${field} signature`, subject, (r) =>
      readSignature(r, `${field} signature`),
    ),
  };
}

/** Reads an evidence document; every malformation is ATTEST_EVIDENCE naming the field. */
export function parseEvidence(text: string | Uint8Array, subject = 'evidence'): Evidence {
  const size = typeof text === 'string' ? Buffer.byteLength(text) : text.length;
  if (size > MAX_EVIDENCE)
    fail(`${size} bytes is more than an evidence document holds (${MAX_EVIDENCE})`, subject);
  let json: unknown;
  try {
    json = JSON.parse(typeof text === 'string' ? text : Buffer.from(text).toString('utf8'));
  } catch {
    fail('not JSON', subject);
  }
  return evidenceFromJson(json, subject);
}

/** An evidence document already parsed from JSON (inside a protocol message). */
export function evidenceFromJson(json: unknown, subject = 'evidence'): Evidence {
  const doc = object(json, 'the document', subject);
  if (doc.type !== EVIDENCE_TYPE)
    fail(`type is ${JSON.stringify(doc.type)}, not "${EVIDENCE_TYPE}"`, subject);
  if (doc.version !== EVIDENCE_VERSION)
    fail(`version ${JSON.stringify(doc.version)} is not one Seal reads (${EVIDENCE_VERSION})`, subject);
  const nonce = hex(doc.nonce, 'nonce', MAX_NONCE, subject);
  const tpm = object(doc.tpm, 'tpm', subject);
  const attestationKeyBytes = base64(tpm.attestationKey, 'tpm.attestationKey', LIMITS.buffer, subject);
  const attestationKey = tpmStructure(attestationKeyBytes, 'tpm.attestationKey', subject, (r) =>
    readPublic(r, 'attestation key'),
  );
  const quote = signedAttest(tpm.quote, tpm.signature, 'tpm.quote', subject);
  const pcrsJson = object(tpm.pcrs, 'tpm.pcrs', subject);
  const banks = Object.keys(pcrsJson);
  if (banks.length !== 1 || !(BANKS as readonly string[]).includes(banks[0]!))
    fail(
      `tpm.pcrs holds ${banks.length === 1 ? `bank ${JSON.stringify(banks[0])}` : `${banks.length} banks`}, not one of ${BANKS.join(', ')}`,
      subject,
    );
  const bank = banks[0] as Bank;
  const values = object(pcrsJson[bank], `tpm.pcrs.${bank}`, subject);
  const pcrs = new Map<number, Buffer>();
  for (const [key, value] of Object.entries(values)) {
    if (!/^(?:[0-9]|1[0-9]|2[0-3])$/.test(key))
      fail(`tpm.pcrs.${bank} names PCR ${JSON.stringify(key)}`, subject);
    const v = hex(value, `tpm.pcrs.${bank}.${key}`, DIGEST_SIZES[bank], subject);
    if (v.length !== DIGEST_SIZES[bank]) fail(`tpm.pcrs.${bank}.${key} is not a ${bank} digest`, subject);
    pcrs.set(Number(key), v);
  }
  if (pcrs.size === 0) fail('tpm.pcrs is empty', subject);
  const eventLog = base64(doc.eventLog, 'eventLog', MAX_EVENT_LOG, subject);
  if (
    !Array.isArray(doc.certificates) ||
    doc.certificates.length === 0 ||
    doc.certificates.length > MAX_CERTIFICATES
  )
    fail(`certificates is not a list of 1 to ${MAX_CERTIFICATES} certificates`, subject);
  const certificates = (doc.certificates as unknown[]).map((c, i) =>
    base64(c, `certificates[${i}]`, MAX_CERTIFICATE, subject),
  );
  const evidence: Evidence = {
    nonce,
    attestationKeyBytes,
    attestationKey,
    attestationKeyName: objectName(attestationKey),
    quote,
    bank,
    pcrs,
    eventLog,
    certificates,
  };
  if (doc.binding !== undefined) {
    const b = object(doc.binding, 'binding', subject);
    const publicBytes = base64(b.public, 'binding.public', LIMITS.buffer, subject);
    const pub = tpmStructure(publicBytes, 'binding.public', subject, (r) => readPublic(r, 'binding key'));
    evidence.binding = {
      publicBytes,
      public: pub,
      name: objectName(pub),
      parentQualifiedName: hex(b.parentQualifiedName, 'binding.parentQualifiedName', LIMITS.name, subject),
      certify: signedAttest(b.certify, b.signature, 'binding.certify', subject),
    };
  }
  return evidence;
}
