import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { UsageError } from '../../errors.ts';
import {
  buildSystem,
  parseSystemSpec,
  signImage,
  signSystem,
  verifyImageSignature,
  verifySystem,
} from '../../manifest/index.ts';
import { KeySigner, loadPrivateKey, PkiError, parseCertificate, parseCertificates } from '../../pki/index.ts';
import type { Command } from '../command.ts';
import { registryOptions, TRANSPORT_OPTIONS } from './transport-options.ts';

const passphraseOption = {
  'passphrase-file': { type: 'string', value: 'FILE', description: "the key's passphrase, if it has one" },
} as const;

function readPrivateKey(path: unknown, passphraseFile: unknown): KeyObject {
  if (typeof path !== 'string') throw new UsageError('--key is required');
  const passphrase =
    typeof passphraseFile === 'string' ? readFileSync(passphraseFile, 'utf8').split('\n')[0] : undefined;
  return loadPrivateKey(readFileSync(path), passphrase, path);
}

/** A public key from a PEM public key, certificate or (unencrypted) private key. */
function readPublicKey(path: string): KeyObject {
  const pem = readFileSync(path, 'utf8');
  try {
    return pem.includes('CERTIFICATE')
      ? createPublicKey({
          key: Buffer.from(parseCertificate(pem, path).publicKey.rawData),
          format: 'der',
          type: 'spki',
        })
      : createPublicKey(pem);
  } catch (error) {
    if (error instanceof PkiError) throw error;
    throw new PkiError('PKI_BAD_KEY', `cannot read a public key from ${path}: ${(error as Error).message}`, {
      subject: path,
      cause: error,
    });
  }
}

export const manifestCommands: Command[] = [
  {
    path: ['manifest', 'build'],
    summary: 'Build a system manifest from YAML: every target pinned by digest, stored as an OCI artifact',
    args: 'FILE.yaml DEST',
    arity: [2, 2],
    details: 'Every target image must be sealed (seal image seal). DEST is any image reference.',
    options: TRANSPORT_OPTIONS,
    async run(ctx, [file, dest], options) {
      const spec = parseSystemSpec(readFileSync(file!, 'utf8'), file!);
      const built = await buildSystem(spec, dest!, registryOptions(options));
      ctx.result({ destination: dest, descriptor: built.descriptor, system: built.document });
      ctx.print(
        `Built system ${spec.product} version ${spec.version} as ${dest} (${built.descriptor.digest})`,
      );
      for (const t of built.document.targets)
        ctx.print(`  ${t.name} (${t.role}, ${t.sealing}): ${t.image.digest}`);
      return 0;
    },
  },
  {
    path: ['manifest', 'sign'],
    summary: 'Sign a system manifest (Notary Project JWS envelope with x5c, attached as a referrer)',
    args: 'REF',
    arity: [1, 1],
    options: {
      key: { type: 'string', value: 'KEY', description: 'the product signing key (PEM, required)' },
      cert: { type: 'string', value: 'CERT', description: 'its certificate (PEM, required)' },
      chain: { type: 'string', value: 'PEM', description: 'issuer certificates to include' },
      ...passphraseOption,
      ...TRANSPORT_OPTIONS,
    },
    async run(ctx, [ref], options) {
      if (typeof options.cert !== 'string') throw new UsageError('--key and --cert are required');
      const key = readPrivateKey(options.key, options['passphrase-file']);
      const certs = [
        parseCertificate(readFileSync(options.cert, 'utf8'), options.cert),
        ...(typeof options.chain === 'string'
          ? parseCertificates(readFileSync(options.chain, 'utf8'), options.chain)
          : []),
      ];
      const unique = certs.filter((c, i) => certs.findIndex((d) => d.equal(c)) === i);
      const result = await signSystem(ref!, new KeySigner(key, unique), registryOptions(options));
      ctx.result(result);
      ctx.print(`Signed ${ref} (${result.target.digest}): signature ${result.signature.digest}`);
      return 0;
    },
  },
  {
    path: ['manifest', 'verify'],
    summary: 'Verify a system manifest as a device does: signatures, chain, product, version, targets',
    args: 'REF',
    arity: [1, 1],
    options: {
      ca: { type: 'string', value: 'CA.pem', description: 'the manifest-signing CA certificate (required)' },
      product: { type: 'string', value: 'UUID', description: 'the product ID provisioned on the device' },
      state: {
        type: 'string',
        value: 'FILE',
        description: 'highest accepted version (anti-rollback); updated atomically on success',
      },
      deep: { type: 'boolean', description: 'also verify every layer of every target (seal image verify)' },
      ...TRANSPORT_OPTIONS,
    },
    async run(ctx, [ref], options) {
      if (typeof options.ca !== 'string') throw new UsageError('--ca is required');
      const report = await verifySystem(ref!, {
        ca: parseCertificate(readFileSync(options.ca, 'utf8'), options.ca),
        product: options.product as string | undefined,
        state: options.state as string | undefined,
        deep: options.deep === true,
        transport: registryOptions(options),
      });
      ctx.result(report);
      for (const c of report.checks) ctx.print(`ok  ${c.check.padEnd(10)} ${c.detail}`);
      for (const s of report.signatures.filter((x) => !x.ok))
        ctx.print(`bad signature ${s.digest}: ${s.detail}`);
      ctx.print(`${ref}: accepted (system ${report.document.product} version ${report.document.version})`);
      return 0;
    },
  },
  {
    path: ['sign'],
    summary: 'Sign an image as cosign does with a key: a Sigstore bundle attached as a referrer',
    args: 'REF',
    arity: [1, 1],
    details:
      'The bundle holds a DSSE envelope over an in-toto statement (predicate https://sigstore.dev/cosign/sign/v1) ' +
      'naming the manifest digest; no transparency log. Keys: ECDSA P-256 or Ed25519 (PEM, PKCS#8).',
    options: {
      key: { type: 'string', value: 'KEY', description: 'the signing key (PEM, required)' },
      ...passphraseOption,
      ...TRANSPORT_OPTIONS,
    },
    async run(ctx, [ref], options) {
      const key = readPrivateKey(options.key, options['passphrase-file']);
      const result = await signImage(ref!, new KeySigner(key, []), registryOptions(options));
      ctx.result(result);
      ctx.print(`Signed ${ref} (${result.target.digest}): bundle ${result.signature.digest}`);
      return 0;
    },
  },
  {
    path: ['verify-signature'],
    summary: 'Verify the cosign-compatible signatures attached to an image with a public key',
    args: 'REF',
    arity: [1, 1],
    options: {
      key: {
        type: 'string',
        value: 'PUB',
        description: 'the public key (PEM; a certificate or private key also works; required)',
      },
      ...TRANSPORT_OPTIONS,
    },
    async run(ctx, [ref], options) {
      if (typeof options.key !== 'string') throw new UsageError('--key is required');
      const report = await verifyImageSignature(ref!, readPublicKey(options.key), registryOptions(options));
      ctx.result(report);
      for (const s of report.signatures) ctx.print(`${s.ok ? 'ok ' : 'bad'} ${s.digest}: ${s.detail}`);
      ctx.print(`${ref} (${report.target.digest}): signature verified`);
      return 0;
    },
  },
];
