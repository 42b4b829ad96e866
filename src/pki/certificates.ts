/**
 * Issuing and reading the product PKI's certificates: the manifest-signing and device-identity
 * CAs, product signing certificates (product ID in the subject, code-signing usage) and device
 * identity certificates (Project Machine's `serialNumber=PID:<product> SN:<serial>`).
 */
import { type KeyObject, randomBytes } from 'node:crypto';
import { PkiError } from './errors.ts';
import { keyTypeOf, signingAlgorithm, toCryptoKey } from './keys.ts';
import { x509 } from './x509.ts';

export type Certificate = x509.X509Certificate;

const SERIAL_NUMBER_OID = '2.5.4.5';
export const CODE_SIGNING_OID = '1.3.6.1.5.5.7.3.3';
export const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';
const DAY = 86_400_000;

export interface IssueOptions {
  /** Distinguished name as attribute/value pairs, most significant first. */
  subject: [attribute: string, value: string][];
  publicKey: KeyObject;
  /** The issuer's key and certificate; absent for a self-signed CA. */
  issuer?: { key: KeyObject; certificate: Certificate };
  /** Self-signed: the subject's own private key. */
  selfKey?: KeyObject;
  ca: boolean;
  extendedKeyUsage?: string[];
  notBefore?: Date;
  days: number;
}

function name(pairs: [string, string][]): x509.Name {
  return new x509.Name(pairs.map(([attribute, value]) => ({ [attribute]: [value] })));
}

export async function issueCertificate(options: IssueOptions): Promise<Certificate> {
  const signingKey = options.issuer?.key ?? options.selfKey;
  if (!signingKey) throw new PkiError('PKI_INVALID_OPTION', 'a certificate needs an issuer or its own key');
  const algorithm = signingAlgorithm(keyTypeOf(signingKey));
  const publicKey = await toCryptoKey(options.publicKey, 'verify');
  const notBefore = options.notBefore ?? new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(options.ca, options.ca ? 0 : undefined, true),
    new x509.KeyUsagesExtension(
      options.ca
        ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign
        : x509.KeyUsageFlags.digitalSignature,
      true,
    ),
    await x509.SubjectKeyIdentifierExtension.create(publicKey),
  ];
  if (options.extendedKeyUsage)
    extensions.push(new x509.ExtendedKeyUsageExtension(options.extendedKeyUsage, false));
  if (options.issuer) {
    extensions.push(await x509.AuthorityKeyIdentifierExtension.create(options.issuer.certificate, false));
  }
  // Serial numbers: 16 random bytes, positive.
  const serial = randomBytes(16);
  serial[0]! &= 0x7f;
  return x509.X509CertificateGenerator.create({
    serialNumber: serial.toString('hex'),
    subject: name(options.subject),
    issuer: options.issuer ? options.issuer.certificate.subject : name(options.subject),
    notBefore,
    notAfter: new Date(notBefore.getTime() + options.days * DAY),
    signingAlgorithm: algorithm,
    publicKey,
    signingKey: await toCryptoKey(signingKey, 'sign'),
    extensions,
  });
}

export function parseCertificate(pem: string | Uint8Array, subject?: string): Certificate {
  try {
    return new x509.X509Certificate(typeof pem === 'string' ? pem : Buffer.from(pem));
  } catch (error) {
    throw new PkiError('PKI_BAD_CERTIFICATE', `${subject ?? 'certificate'} is not an X.509 certificate`, {
      subject,
      cause: error,
    });
  }
}

/** Every certificate of a PEM bundle, in order. */
export function parseCertificates(pem: string, subject?: string): Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0)
    throw new PkiError('PKI_BAD_CERTIFICATE', `${subject ?? 'file'} holds no certificate`, { subject });
  return blocks.map((b) => parseCertificate(b, subject));
}

function attributes(cert: Certificate, attribute: string): string[] {
  const out: string[] = [];
  for (const rdn of new x509.Name(cert.subject).toJSON()) for (const v of rdn[attribute] ?? []) out.push(v);
  return out;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The product ID a signing certificate is for: Seal's `serialNumber=PRODUCT:<uuid>` or Project
 * Machine's `CN=manifest PRODUCT:<uuid>`.
 */
export function productIdOf(cert: Certificate): string | undefined {
  for (const v of attributes(cert, SERIAL_NUMBER_OID)) {
    const m = /^PRODUCT:(.+)$/.exec(v);
    if (m && UUID.test(m[1]!)) return m[1]!.toLowerCase();
  }
  for (const v of attributes(cert, 'CN')) {
    const m = /^manifest PRODUCT:(.+)$/.exec(v);
    if (m && UUID.test(m[1]!)) return m[1]!.toLowerCase();
  }
  return undefined;
}

/** The product and serial number of a device identity certificate (`PID:<product> SN:<serial>`). */
export function deviceIdOf(cert: Certificate): { product: string; serial: string } | undefined {
  for (const v of attributes(cert, SERIAL_NUMBER_OID)) {
    const m = /^PID:(\S+) SN:(.+)$/.exec(v);
    if (m) return { product: m[1]!.toLowerCase(), serial: m[2]! };
  }
  return undefined;
}

export const productSubject = (id: string, productName: string): [string, string][] => [
  ['O', productName],
  ['CN', `manifest PRODUCT:${id}`],
  [SERIAL_NUMBER_OID, `PRODUCT:${id}`],
];

export const deviceSubject = (product: string, serial: string): [string, string][] => [
  ['CN', serial],
  [SERIAL_NUMBER_OID, `PID:${product} SN:${serial}`],
];

export function isUuid(value: string): boolean {
  return UUID.test(value);
}
