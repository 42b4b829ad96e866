/**
 * The PKI directory `seal pki` manages:
 *   manifest-ca.{pem,key}   the manifest-signing CA (its certificate goes into the signed initrd)
 *   device-ca.{pem,key}     the device-identity CA
 *   products/<uuid>.{pem,key}  product signing certificates (chain: product, manifest CA)
 *   devices/<serial>.{pem,key} device identity certificates
 *   kernel-ca.{pem,key}     the kernel-signing CA (its certificate goes into Secure Boot's db)
 *   kernel/<name>.{pem,key}    kernel-signing certificates (code signing; chain: name, kernel CA)
 * Keys are PKCS#8 PEM, mode 0600, optionally passphrase-encrypted; nothing is ever overwritten.
 */
import { createPublicKey, type KeyObject, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic.ts';
import {
  type Certificate,
  CLIENT_AUTH_OID,
  CODE_SIGNING_OID,
  deviceSubject,
  issueCertificate,
  isUuid,
  parseCertificate,
  productSubject,
} from './certificates.ts';
import { PkiError } from './errors.ts';
import { generateKeyPair, type KeyType, loadPrivateKey, privateKeyPem } from './keys.ts';

export interface IssuedFiles {
  certificate: string;
  key: string;
  subject: string;
  notAfter: string;
}

interface KeyOptions {
  keyType?: KeyType;
  /** Encrypts the new private key. */
  passphrase?: string;
  /** Validity in days. */
  days?: number;
}

function refuseExisting(...paths: string[]): void {
  for (const p of paths) {
    if (existsSync(p))
      throw new PkiError('PKI_EXISTS', `${p} already exists; Seal never overwrites keys`, { subject: p });
  }
}

async function save(certPath: string, keyPath: string, cert: Certificate, key: string): Promise<IssuedFiles> {
  await writeFileAtomic(keyPath, key, 0o600);
  await writeFileAtomic(certPath, cert.toString('pem'));
  return {
    certificate: certPath,
    key: keyPath,
    subject: cert.subject,
    notAfter: cert.notAfter.toISOString(),
  };
}

function loadCa(dir: string, name: string, passphrase?: string) {
  const certPath = join(dir, `${name}.pem`);
  const keyPath = join(dir, `${name}.key`);
  if (!existsSync(certPath)) {
    throw new PkiError('PKI_INVALID_OPTION', `${dir} has no ${name}: run seal pki init first`, {
      subject: dir,
    });
  }
  return {
    certificate: parseCertificate(readFileSync(certPath, 'utf8'), certPath),
    key: loadPrivateKey(readFileSync(keyPath), passphrase, keyPath),
  };
}

/** Creates the manifest-signing CA and the device-identity CA in `dir`. */
export async function initPki(dir: string, options: KeyOptions = {}): Promise<IssuedFiles[]> {
  mkdirSync(dir, { recursive: true });
  const out: IssuedFiles[] = [];
  const names = [
    ['manifest-ca', 'Seal manifest signing CA'],
    ['device-ca', 'Seal device identity CA'],
  ] as const;
  refuseExisting(...names.flatMap(([n]) => [join(dir, `${n}.pem`), join(dir, `${n}.key`)]));
  for (const [file, commonName] of names) {
    const pair = await generateKeyPair(options.keyType ?? 'ecdsa-p256');
    const cert = await issueCertificate({
      subject: [['CN', commonName]],
      publicKey: pair.publicKey,
      selfKey: pair.privateKey,
      ca: true,
      days: options.days ?? 3650 * 2,
    });
    out.push(
      await save(
        join(dir, `${file}.pem`),
        join(dir, `${file}.key`),
        cert,
        privateKeyPem(pair.privateKey, options.passphrase),
      ),
    );
  }
  return out;
}

/** A product signing key and certificate, signed by the manifest CA. */
export async function newProduct(
  dir: string,
  options: KeyOptions & { name: string; id?: string; caPassphrase?: string },
): Promise<IssuedFiles & { product: string; chain: string }> {
  const id = (options.id ?? randomUUID()).toLowerCase();
  if (!isUuid(id))
    throw new PkiError('PKI_INVALID_OPTION', `product ID ${id} is not a UUID`, { subject: id });
  const ca = loadCa(dir, 'manifest-ca', options.caPassphrase);
  mkdirSync(join(dir, 'products'), { recursive: true });
  const certPath = join(dir, 'products', `${id}.pem`);
  const keyPath = join(dir, 'products', `${id}.key`);
  refuseExisting(certPath, keyPath);
  const pair = await generateKeyPair(options.keyType ?? 'ecdsa-p256');
  const cert = await issueCertificate({
    subject: productSubject(id, options.name),
    publicKey: pair.publicKey,
    issuer: ca,
    ca: false,
    extendedKeyUsage: [CODE_SIGNING_OID],
    days: options.days ?? 825,
  });
  const files = await save(certPath, keyPath, cert, privateKeyPem(pair.privateKey, options.passphrase));
  // The chain a signer presents: the product certificate, then the CA.
  const chain = join(dir, 'products', `${id}.chain.pem`);
  await writeFileAtomic(chain, `${cert.toString('pem')}\n${ca.certificate.toString('pem')}\n`);
  return { ...files, product: id, chain };
}

function publicKeyOf(key: string | Buffer | KeyObject): KeyObject {
  try {
    const k = typeof key === 'object' && 'asymmetricKeyType' in key ? key : createPublicKey(key);
    return k.type === 'private' ? createPublicKey(k) : k;
  } catch (error) {
    throw new PkiError('PKI_BAD_KEY', `cannot read the public key: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/** A device identity key and certificate (`serialNumber=PID:<product> SN:<serial>`). */
export async function newDevice(
  dir: string,
  options: KeyOptions & {
    product: string;
    serial: string;
    caPassphrase?: string;
    /**
     * Certify this public key (PEM, or a KeyObject) instead of generating a key pair: a key
     * that never leaves its device, such as a TPM-resident identity key. No key file is written.
     */
    publicKey?: string | Buffer | KeyObject;
  },
): Promise<Omit<IssuedFiles, 'key'> & { key?: string }> {
  const product = options.product.toLowerCase();
  if (!isUuid(product)) throw new PkiError('PKI_INVALID_OPTION', `product ID ${product} is not a UUID`);
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(options.serial)) {
    throw new PkiError(
      'PKI_INVALID_OPTION',
      'serial numbers are 1-64 letters, digits, dots, dashes or underscores',
    );
  }
  const ca = loadCa(dir, 'device-ca', options.caPassphrase);
  mkdirSync(join(dir, 'devices'), { recursive: true });
  const certPath = join(dir, 'devices', `${options.serial}.pem`);
  const keyPath = join(dir, 'devices', `${options.serial}.key`);
  refuseExisting(certPath, keyPath);
  const given = options.publicKey === undefined ? undefined : publicKeyOf(options.publicKey);
  const pair = given ? undefined : await generateKeyPair(options.keyType ?? 'ecdsa-p256');
  const cert = await issueCertificate({
    subject: deviceSubject(product, options.serial),
    publicKey: given ?? pair!.publicKey,
    issuer: ca,
    ca: false,
    extendedKeyUsage: [CLIENT_AUTH_OID],
    days: options.days ?? 3650,
  });
  if (!pair) {
    await writeFileAtomic(certPath, cert.toString('pem'));
    return { certificate: certPath, subject: cert.subject, notAfter: cert.notAfter.toISOString() };
  }
  return save(certPath, keyPath, cert, privateKeyPem(pair.privateKey, options.passphrase));
}

/**
 * A kernel-signing key and certificate (code signing), issued by the kernel-signing CA, which is
 * created on first use. The CA certificate is what Secure Boot's db holds: UKIs signed by any of
 * its kernel-signing certificates boot, and PCR 7 (which measures the db entry) stays the same
 * when the signing certificate is renewed. RSA-2048 by default, the key type every firmware checks.
 */
export async function newKernelSigner(
  dir: string,
  options: KeyOptions & { name: string; caPassphrase?: string },
): Promise<IssuedFiles & { chain: string; ca: string }> {
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(options.name))
    throw new PkiError(
      'PKI_INVALID_OPTION',
      'kernel signer names are 1-64 letters, digits, dots, dashes or underscores',
    );
  mkdirSync(dir, { recursive: true });
  const keyType = options.keyType ?? 'rsa-2048';
  if (keyType === 'ed25519')
    throw new PkiError('PKI_INVALID_OPTION', 'UEFI firmware checks RSA (or ECDSA) signatures, not Ed25519');
  const caCert = join(dir, 'kernel-ca.pem');
  if (!existsSync(caCert)) {
    refuseExisting(join(dir, 'kernel-ca.key'));
    const pair = await generateKeyPair(keyType);
    const cert = await issueCertificate({
      subject: [['CN', 'Seal kernel signing CA']],
      publicKey: pair.publicKey,
      selfKey: pair.privateKey,
      ca: true,
      days: 3650 * 3,
    });
    await save(
      caCert,
      join(dir, 'kernel-ca.key'),
      cert,
      privateKeyPem(pair.privateKey, options.caPassphrase),
    );
  }
  const ca = loadCa(dir, 'kernel-ca', options.caPassphrase);
  mkdirSync(join(dir, 'kernel'), { recursive: true });
  const certPath = join(dir, 'kernel', `${options.name}.pem`);
  const keyPath = join(dir, 'kernel', `${options.name}.key`);
  refuseExisting(certPath, keyPath);
  const pair = await generateKeyPair(keyType);
  const cert = await issueCertificate({
    subject: [['CN', `Seal kernel signing ${options.name}`]],
    publicKey: pair.publicKey,
    issuer: ca,
    ca: false,
    extendedKeyUsage: [CODE_SIGNING_OID],
    days: options.days ?? 825,
  });
  const files = await save(certPath, keyPath, cert, privateKeyPem(pair.privateKey, options.passphrase));
  const chain = join(dir, 'kernel', `${options.name}.chain.pem`);
  await writeFileAtomic(chain, `${cert.toString('pem')}\n${ca.certificate.toString('pem')}\n`);
  return { ...files, chain, ca: caCert };
}
