/**
 * The options that name a signer of kernel-checked signatures (fs-verity, dm-verity root hashes,
 * IPE policies): a private key and its certificate in PEM, optionally issuer certificates to
 * carry and a passphrase file. `prefix` gives the `--sign-key` spelling where a command signs as
 * a side effect (`seal image seal`).
 */
import { readFileSync } from 'node:fs';
import { UsageError } from '../../errors.ts';
import { loadPrivateKey, toNodeCertificate } from '../../pki/index.ts';
import type { KernelSigner } from '../../seal/index.ts';
import type { OptionSpec } from '../command.ts';

export function signerOptions(prefix = ''): Record<string, OptionSpec> {
  return {
    [`${prefix}key`]: { type: 'string', value: 'KEY', description: 'signing key (PEM; RSA or ECDSA)' },
    [`${prefix}cert`]: { type: 'string', value: 'CERT', description: 'its certificate (PEM)' },
    [`${prefix}chain`]: {
      type: 'string',
      value: 'PEM',
      description:
        'certificates to carry in each signature (default none: the kernel keyring holds the signer)',
    },
    [`${prefix}passphrase-file`]: {
      type: 'string',
      value: 'FILE',
      description: "the key's passphrase, if it has one",
    },
  };
}

/** Certificates from a PEM file (one or more). */
export function readCertificates(path: string): ReturnType<typeof toNodeCertificate>[] {
  const text = readFileSync(path, 'utf8');
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new UsageError(`${path} holds no PEM certificate`);
  return blocks.map((b) => toNodeCertificate(b));
}

/** The signer the options name, or undefined when none of them is given. */
export function readSigner(options: Record<string, unknown>, prefix = ''): KernelSigner | undefined {
  const keyPath = options[`${prefix}key`];
  const certPath = options[`${prefix}cert`];
  if (keyPath === undefined && certPath === undefined) return undefined;
  if (typeof keyPath !== 'string' || typeof certPath !== 'string')
    throw new UsageError(`--${prefix}key and --${prefix}cert go together`);
  const passphraseFile = options[`${prefix}passphrase-file`];
  const passphrase =
    typeof passphraseFile === 'string' ? readFileSync(passphraseFile, 'utf8').split('\n')[0] : undefined;
  const chain = options[`${prefix}chain`];
  return {
    key: loadPrivateKey(readFileSync(keyPath), passphrase, keyPath),
    certificate: readCertificates(certPath)[0]!,
    ...(typeof chain === 'string' ? { certificates: readCertificates(chain) } : {}),
  };
}
