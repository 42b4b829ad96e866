/**
 * The options that name a signer of kernel-checked signatures, apart from the code that reads
 * them (kernel-signer.ts), so that a command can list them without loading the PKI modules:
 * `seal verity verify` and `seal fsverity digest` must stay small on a device.
 */
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
