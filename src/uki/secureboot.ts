/**
 * Secure Boot for Seal devices: the PK, KEK and db keys and certificates, a varstore enrolled
 * with them (OVMF's, for VMs and tests: PK, KEK, db, dbx written as time-based authenticated
 * variables and Secure Boot enabled, so the firmware boots in user mode with these keys and no
 * others), signed variable updates (`.auth` payloads for key rotation from a running system, as
 * sign-efi-sig-list makes them) and the state a varstore is in.
 */
import { createPublicKey, type KeyObject, type X509Certificate as NodeCertificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ATTR,
  authenticatedPayload,
  encodeAuthenticatedVariable,
  encodeEfiTime,
  encodeSignatureLists,
  GUIDS,
  SECURE_BOOT_ATTRIBUTES,
  SECURE_BOOT_VARIABLES,
  type SecureBootState,
  type SecureBootVariable,
  type SignatureEntry,
  secureBootState,
  Varstore,
} from '../efi/index.ts';
import { toNodeCertificate } from '../pki/authenticode.ts';
import { type CertificateInput, certificateDer, signCms } from '../pki/cms.ts';
import {
  CODE_SIGNING_OID,
  generateKeyPair,
  issueCertificate,
  type KeyType,
  PkiError,
  privateKeyPem,
} from '../pki/index.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { UkiError } from './errors.ts';

/** The owner GUID Seal writes on signature entries unless told otherwise. */
export const SEAL_OWNER_GUID = '5ea1b007-0000-4000-8000-5ea15ea15ea1';
/** The timestamp of enrolled variables unless told otherwise: any later signed update is accepted. */
export const DEFAULT_ENROLL_TIME = new Date(Date.UTC(2020, 0, 1));

/** An entry for db or dbx: a certificate, or an image digest (Authenticode SHA-256). */
export type DatabaseEntry = { certificate: CertificateInput } | { sha256: Buffer };

export function signatureEntry(entry: DatabaseEntry, owner = SEAL_OWNER_GUID): SignatureEntry {
  if ('sha256' in entry) {
    if (entry.sha256.length !== 32) throw new UkiError('UKI_INVALID_OPTION', 'a SHA-256 entry is 32 bytes');
    return { type: GUIDS.certSha256, owner, data: Buffer.from(entry.sha256) };
  }
  return { type: GUIDS.certX509, owner, data: certificateDer(entry.certificate) };
}

export interface SecureBootKeyFiles {
  name: 'PK' | 'KEK' | 'db';
  certificate: string;
  key: string;
  subject: string;
}

/**
 * Creates PK, KEK and db keys and self-signed certificates in `dir` (NAME.key, NAME.crt as PEM,
 * NAME.der). `db` may be an existing certificate (e.g. the kernel-signing CA from `seal pki`),
 * in which case only PK and KEK are made. Nothing is overwritten.
 */
export async function createSecureBootKeys(
  dir: string,
  options: { keyType?: KeyType; commonName?: string; days?: number; passphrase?: string } = {},
): Promise<SecureBootKeyFiles[]> {
  mkdirSync(dir, { recursive: true });
  const type = options.keyType ?? 'rsa-2048';
  if (!type.startsWith('rsa-') && !type.startsWith('ecdsa-'))
    throw new PkiError('PKI_INVALID_OPTION', 'Secure Boot keys are RSA (most firmware) or ECDSA');
  const out: SecureBootKeyFiles[] = [];
  const names = ['PK', 'KEK', 'db'] as const;
  for (const name of names)
    for (const ext of ['key', 'crt', 'der'])
      if (existsSync(join(dir, `${name}.${ext}`)))
        throw new PkiError(
          'PKI_EXISTS',
          `${join(dir, `${name}.${ext}`)} already exists; Seal never overwrites keys`,
        );
  const base = options.commonName ?? 'Seal';
  for (const name of names) {
    const pair = await generateKeyPair(type);
    const cert = await issueCertificate({
      subject: [
        [
          'CN',
          `${base} ${name === 'PK' ? 'Platform Key' : name === 'KEK' ? 'Key Exchange Key' : 'Signature Database Key'}`,
        ],
      ],
      publicKey: pair.publicKey,
      selfKey: pair.privateKey,
      ca: false,
      ...(name === 'db' ? { extendedKeyUsage: [CODE_SIGNING_OID] } : {}),
      days: options.days ?? 3650 * 3,
    });
    const files = {
      name,
      certificate: join(dir, `${name}.crt`),
      key: join(dir, `${name}.key`),
      subject: cert.subject,
    };
    await writeFileAtomic(files.key, privateKeyPem(pair.privateKey, options.passphrase), 0o600);
    await writeFileAtomic(files.certificate, cert.toString('pem'));
    await writeFileAtomic(join(dir, `${name}.der`), Buffer.from(cert.rawData));
    out.push(files);
  }
  return out;
}

export interface EnrollOptions {
  pk: CertificateInput[];
  kek: CertificateInput[];
  db: DatabaseEntry[];
  dbx?: DatabaseEntry[];
  owner?: string;
  /** The timestamp of the enrolled variables (default DEFAULT_ENROLL_TIME, so output is reproducible). */
  time?: Date;
}

/**
 * Writes the Secure Boot variables into a varstore: PK, KEK, db and dbx replaced (dbt and dbr
 * removed), SecureBootEnable on, CustomMode off, and the time-based authentication database
 * (certdb) emptied. The firmware then starts in user mode with Secure Boot enforced.
 */
export function enrollSecureBoot(varstore: Varstore, options: EnrollOptions): void {
  if (options.pk.length !== 1) throw new UkiError('UKI_INVALID_OPTION', 'PK holds exactly one certificate');
  if (options.kek.length === 0)
    throw new UkiError('UKI_INVALID_OPTION', 'KEK needs at least one certificate');
  if (options.db.length === 0) throw new UkiError('UKI_INVALID_OPTION', 'db needs at least one entry');
  const owner = options.owner ?? SEAL_OWNER_GUID;
  const timestamp = encodeEfiTime(options.time ?? DEFAULT_ENROLL_TIME);
  for (const name of ['PK', 'KEK', 'db', 'dbx', 'dbt', 'dbr'])
    varstore.delete(
      name,
      name === 'PK' || name === 'KEK' ? GUIDS.globalVariable : GUIDS.imageSecurityDatabase,
    );
  const lists: [SecureBootVariable, SignatureEntry[]][] = [
    ['db', options.db.map((e) => signatureEntry(e, owner))],
    ['dbx', (options.dbx ?? []).map((e) => signatureEntry(e, owner))],
    ['KEK', options.kek.map((c) => signatureEntry({ certificate: c }, owner))],
    ['PK', options.pk.map((c) => signatureEntry({ certificate: c }, owner))],
  ];
  for (const [name, entries] of lists) {
    if (entries.length === 0) continue;
    varstore.set({
      name,
      guid: SECURE_BOOT_VARIABLES[name],
      attributes: SECURE_BOOT_ATTRIBUTES,
      data: encodeSignatureLists(entries),
      timestamp,
    });
  }
  const flag = (value: number) => Buffer.of(value);
  varstore.set({
    name: 'certdb',
    guid: GUIDS.certDb,
    attributes: SECURE_BOOT_ATTRIBUTES,
    data: Buffer.from([4, 0, 0, 0]),
  });
  varstore.set({
    name: 'SecureBootEnable',
    guid: GUIDS.secureBootEnableDisable,
    attributes: 0x3,
    data: flag(1),
  });
  varstore.set({ name: 'CustomMode', guid: GUIDS.customMode, attributes: 0x3, data: flag(0) });
}

/** Reads `input`, enrolls, writes `output` atomically. */
export async function enrollVarstoreFile(
  input: string,
  output: string,
  options: EnrollOptions,
): Promise<SecureBootState> {
  const varstore = Varstore.parse(readFileSync(input), input);
  enrollSecureBoot(varstore, options);
  const bytes = varstore.toBuffer();
  await writeFileAtomic(output, bytes);
  return secureBootState(Varstore.parse(bytes, output));
}

export interface SignedUpdateOptions {
  /** The variable: PK, KEK, db, dbx (or any name with `guid`). */
  name: string;
  guid?: string;
  entries: DatabaseEntry[];
  /** Adds to the variable instead of replacing it (EFI_VARIABLE_APPEND_WRITE). */
  append?: boolean;
  /** Must be later than the variable's current timestamp (default: now). */
  time?: Date;
  owner?: string;
  /** The key whose certificate is in PK (for PK and KEK) or KEK (for db and dbx). */
  key: KeyObject;
  certificate: CertificateInput;
}

/**
 * A signed variable update (EFI_VARIABLE_AUTHENTICATION_2 followed by the signature lists), the
 * `.auth` file sign-efi-sig-list makes: a bare PKCS#7 SignedData without signed attributes over
 * name ‖ GUID ‖ attributes ‖ timestamp ‖ data.
 */
export function signedVariableUpdate(options: SignedUpdateOptions): Buffer {
  const guid = options.guid ?? SECURE_BOOT_VARIABLES[options.name as SecureBootVariable];
  if (!guid) throw new UkiError('UKI_INVALID_OPTION', `give the vendor GUID of variable ${options.name}`);
  const attributes = SECURE_BOOT_ATTRIBUTES | (options.append ? ATTR.APPEND_WRITE : 0);
  const timestamp = encodeEfiTime(options.time ?? new Date(Math.floor(Date.now() / 1000) * 1000));
  const data = encodeSignatureLists(options.entries.map((e) => signatureEntry(e, options.owner)));
  const payload = authenticatedPayload(options.name, guid, attributes, timestamp, data);
  const spki = createPublicKey(options.key).export({ type: 'spki', format: 'der' });
  const certificate = toNodeCertificate(certificateDer(options.certificate));
  if (!certificate.publicKey.export({ type: 'spki', format: 'der' }).equals(spki))
    throw new PkiError('PKI_BAD_KEY', 'the key does not belong to the certificate');
  const pkcs7 = signCms({
    key: options.key,
    certificates: [certificate],
    contentType: '1.2.840.113549.1.7.1',
    data: payload,
    signedAttributes: false,
    wrap: false,
  });
  return encodeAuthenticatedVariable(timestamp, pkcs7, data);
}

/** The X.509 certificates of signature entries. */
export function entryCertificates(entries: SignatureEntry[]): NodeCertificate[] {
  return entries.filter((e) => e.type === GUIDS.certX509).map((e) => toNodeCertificate(e.data));
}

export { type SecureBootState, type SecureBootVariable, secureBootState };

const HASH_ENTRY_TYPES: Record<string, 'sha1' | 'sha256' | 'sha384' | 'sha512'> = {
  [GUIDS.certSha1]: 'sha1',
  [GUIDS.certSha256]: 'sha256',
  [GUIDS.certSha384]: 'sha384',
  [GUIDS.certSha512]: 'sha512',
};

/** What db and dbx of a varstore allow and forbid, for `verifyPe`. */
export function databaseTrust(state: SecureBootState): {
  anchors: NodeCertificate[];
  allowedDigests: { algorithm: 'sha1' | 'sha256' | 'sha384' | 'sha512'; digest: Buffer }[];
  forbidden: {
    certificates: NodeCertificate[];
    digests: { algorithm: 'sha1' | 'sha256' | 'sha384' | 'sha512'; digest: Buffer }[];
  };
} {
  const digests = (entries: SignatureEntry[]) =>
    entries
      .filter((e) => HASH_ENTRY_TYPES[e.type])
      .map((e) => ({ algorithm: HASH_ENTRY_TYPES[e.type]!, digest: e.data }));
  return {
    anchors: entryCertificates(state.db),
    allowedDigests: digests(state.db),
    forbidden: { certificates: entryCertificates(state.dbx), digests: digests(state.dbx) },
  };
}
