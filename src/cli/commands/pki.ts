import { readFileSync } from 'node:fs';
import { UsageError } from '../../errors.ts';
import { initPki, newDevice, newKernelSigner, newProduct, parseKeyType } from '../../pki/index.ts';
import type { Command } from '../command.ts';
import { integerOption } from '../options.ts';

const keyOptions = {
  'key-type': {
    type: 'string',
    value: 'ecdsa-p256|ecdsa-p384|rsa-2048|rsa-3072|rsa-4096|ed25519',
    description: 'key algorithm (default ecdsa-p256)',
  },
  'passphrase-file': {
    type: 'string',
    value: 'FILE',
    description: 'encrypt the new key with the passphrase in FILE',
  },
  days: { type: 'string', value: 'N', description: 'validity in days' },
} as const;

const caPassphrase = {
  'ca-passphrase-file': {
    type: 'string',
    value: 'FILE',
    description: "the CA key's passphrase, if it has one",
  },
} as const;

/** A passphrase from a file (first line), so it never appears in the process list. */
function passphrase(file: unknown): string | undefined {
  return typeof file === 'string' ? readFileSync(file, 'utf8').split('\n')[0] : undefined;
}

function keyArgs(options: Record<string, unknown>) {
  return {
    keyType: parseKeyType(options['key-type'] as string | undefined),
    passphrase: passphrase(options['passphrase-file']),
    days: integerOption(options.days, 'days'),
  };
}

export const pkiCommands: Command[] = [
  {
    path: ['pki', 'init'],
    summary: 'Create the manifest-signing CA and the device-identity CA',
    args: 'DIR',
    arity: [1, 1],
    options: { ...keyOptions },
    async run(ctx, [dir], options) {
      const issued = await initPki(dir!, keyArgs(options));
      ctx.result(issued);
      for (const i of issued) ctx.print(`${i.certificate}: ${i.subject} (until ${i.notAfter})`);
      return 0;
    },
  },
  {
    path: ['pki', 'product', 'new'],
    summary: 'Issue a product signing key and certificate (code signing, product ID in the subject)',
    args: 'DIR',
    arity: [1, 1],
    options: {
      name: { type: 'string', value: 'NAME', description: 'product name (required)' },
      id: { type: 'string', value: 'UUID', description: 'product ID (default: a new random UUID)' },
      ...keyOptions,
      ...caPassphrase,
    },
    async run(ctx, [dir], options) {
      if (typeof options.name !== 'string') throw new UsageError('--name is required');
      const issued = await newProduct(dir!, {
        ...keyArgs(options),
        name: options.name,
        id: options.id as string | undefined,
        caPassphrase: passphrase(options['ca-passphrase-file']),
      });
      ctx.result(issued);
      ctx.print(
        `Product ${issued.product}: ${issued.certificate} (chain ${issued.chain}), key ${issued.key}`,
      );
      return 0;
    },
  },
  {
    path: ['pki', 'device', 'new'],
    summary: 'Issue a device identity key and certificate (serialNumber PID:<product> SN:<serial>)',
    args: 'DIR',
    arity: [1, 1],
    options: {
      product: { type: 'string', value: 'UUID', description: 'product ID (required)' },
      serial: { type: 'string', value: 'SN', description: 'device serial number (required)' },
      'public-key': {
        type: 'string',
        value: 'PEM',
        description:
          'certify this public key (e.g. from seal tpm identity create) instead of making a key pair',
      },
      ...keyOptions,
      ...caPassphrase,
    },
    async run(ctx, [dir], options) {
      if (typeof options.product !== 'string' || typeof options.serial !== 'string') {
        throw new UsageError('--product and --serial are required');
      }
      const issued = await newDevice(dir!, {
        ...keyArgs(options),
        product: options.product,
        serial: options.serial,
        caPassphrase: passphrase(options['ca-passphrase-file']),
        ...(typeof options['public-key'] === 'string'
          ? { publicKey: readFileSync(options['public-key']) }
          : {}),
      });
      ctx.result(issued);
      ctx.print(`Device ${options.serial}: ${issued.certificate}${issued.key ? `, key ${issued.key}` : ''}`);
      return 0;
    },
  },
  {
    path: ['pki', 'kernel', 'new'],
    summary:
      'Issue a kernel-signing key and certificate (code signing), under the kernel-signing CA for Secure Boot db',
    args: 'DIR',
    arity: [1, 1],
    options: {
      name: { type: 'string', value: 'NAME', description: 'the signer name (default "uki")' },
      ...keyOptions,
      'key-type': {
        ...keyOptions['key-type'],
        description: 'key algorithm (default rsa-2048, what every firmware checks)',
      },
      ...caPassphrase,
    },
    details:
      'Creates DIR/kernel-ca.{pem,key} on first use (enroll kernel-ca.pem in db with seal secureboot enroll --db), then DIR/kernel/NAME.{pem,key,chain.pem}; sign UKIs with seal uki sign --key NAME.key --cert NAME.pem --chain DIR/kernel-ca.pem.',
    async run(ctx, [dir], options) {
      const issued = await newKernelSigner(dir!, {
        ...keyArgs({ ...options, 'key-type': options['key-type'] ?? 'rsa-2048' }),
        name: (options.name as string | undefined) ?? 'uki',
        caPassphrase: passphrase(options['ca-passphrase-file']),
      });
      ctx.result(issued);
      ctx.print(
        `Kernel signer: ${issued.certificate} (chain ${issued.chain}), key ${issued.key}; db certificate ${issued.ca}`,
      );
      return 0;
    },
  },
];
