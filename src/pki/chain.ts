/**
 * Certificate chain validation for signed manifests: the path from the signing certificate up
 * to the trusted CA (certificate by certificate: signature, validity period, CA constraints and
 * key usage), then the signing certificate's own usage. Each failure has its own code and names
 * the certificate.
 */
import { createPublicKey, type KeyObject, X509Certificate } from 'node:crypto';
import { type Certificate, CODE_SIGNING_OID } from './certificates.ts';
import { PkiError } from './errors.ts';
import { x509 } from './x509.ts';

export interface ChainOptions {
  /** When the signature was made or is checked (default now). */
  at?: Date;
  /** Extended key usage the signing certificate must have (default code signing; null: none). */
  purpose?: string | null;
}

function describe(cert: Certificate): string {
  return `certificate "${cert.subject}"`;
}

function checkValidity(cert: Certificate, at: Date): void {
  if (at < cert.notBefore) {
    throw new PkiError(
      'PKI_NOT_YET_VALID',
      `${describe(cert)} is not valid before ${cert.notBefore.toISOString()}`,
      {
        subject: cert.subject,
      },
    );
  }
  if (at > cert.notAfter) {
    throw new PkiError('PKI_EXPIRED', `${describe(cert)} expired on ${cert.notAfter.toISOString()}`, {
      subject: cert.subject,
    });
  }
}

function isCa(cert: Certificate): boolean {
  const constraints = cert.getExtension(x509.BasicConstraintsExtension);
  const usage = cert.getExtension(x509.KeyUsagesExtension);
  return constraints?.ca === true && (!usage || (usage.usages & x509.KeyUsageFlags.keyCertSign) !== 0);
}

/** The issuer's public key as node:crypto takes it, made once per certificate object. */
const issuerKeys = new WeakMap<Certificate, KeyObject>();

/**
 * Whether `issuer`'s key signed `cert` (the signature only: names and usage are checked by the
 * caller). OpenSSL checks it (node:crypto's X509Certificate), ten times faster than WebCrypto
 * through @peculiar/x509, which matters to a verifier that checks a chain per device.
 */
async function signedBy(cert: Certificate, issuer: Certificate): Promise<boolean> {
  if (cert.issuer !== issuer.subject) return false;
  try {
    let key = issuerKeys.get(issuer);
    if (!key) {
      key = createPublicKey({ key: Buffer.from(issuer.publicKey.rawData), format: 'der', type: 'spki' });
      issuerKeys.set(issuer, key);
    }
    return new X509Certificate(Buffer.from(cert.rawData)).verify(key);
  } catch {
    return false;
  }
}

/** Validates `leaf` (with `intermediates`) up to `trusted`; returns the path, leaf first. */
export async function verifyChain(
  leaf: Certificate,
  intermediates: Certificate[],
  trusted: Certificate,
  options: ChainOptions = {},
): Promise<Certificate[]> {
  const at = options.at ?? new Date();
  const trustedName = trusted.subject;
  const path = [leaf];
  let current = leaf;
  for (let depth = 0; ; depth++) {
    checkValidity(current, at);
    if (current.equal(trusted)) break;
    if (depth > 8) throw new PkiError('PKI_UNTRUSTED', `${describe(leaf)}: certificate path too long`);
    if (await signedBy(current, trusted)) {
      current = trusted;
    } else {
      let next: Certificate | undefined;
      for (const candidate of intermediates) {
        if (!path.includes(candidate) && (await signedBy(current, candidate))) next = candidate;
      }
      if (!next) {
        throw new PkiError(
          'PKI_UNTRUSTED',
          `${describe(current)} (issuer "${current.issuer}") does not chain to the trusted CA "${trustedName}"`,
          { subject: current.subject },
        );
      }
      current = next;
    }
    const issuer: Certificate = current;
    if (!isCa(issuer)) {
      throw new PkiError('PKI_BAD_USAGE', `${describe(issuer)} issued a certificate but is not a CA`, {
        subject: issuer.subject,
      });
    }
    path.push(current);
  }
  const usage = leaf.getExtension(x509.KeyUsagesExtension);
  if (usage && (usage.usages & x509.KeyUsageFlags.digitalSignature) === 0) {
    throw new PkiError('PKI_BAD_USAGE', `${describe(leaf)} may not make digital signatures`, {
      subject: leaf.subject,
    });
  }
  const purpose = options.purpose === undefined ? CODE_SIGNING_OID : options.purpose;
  const extended = leaf.getExtension(x509.ExtendedKeyUsageExtension);
  if (purpose !== null && !extended?.usages.map(String).includes(purpose)) {
    throw new PkiError(
      'PKI_BAD_USAGE',
      `${describe(leaf)} lacks the ${purpose === CODE_SIGNING_OID ? 'code-signing' : purpose} extended key usage`,
      { subject: leaf.subject },
    );
  }
  return path;
}
