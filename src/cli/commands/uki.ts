import { type KeyObject, X509Certificate as NodeCertificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Varstore } from '../../efi/index.ts';
import { UsageError } from '../../errors.ts';
import { type Bank, parseBank } from '../../measure/index.ts';
import { PkiError } from '../../pki/errors.ts';
import { loadPrivateKey } from '../../pki/index.ts';
import { parsePolicy } from '../../tpm/signed-policy.ts';
import { sealBootImage } from '../../uki/boot-image.ts';
import {
  buildUki,
  databaseTrust,
  inspectUki,
  secureBootState,
  signPe,
  type UkiInspection,
  verifyPe,
} from '../../uki/index.ts';
import type { Command, OptionSpec } from '../command.ts';

/** Every certificate in a PEM or DER file. */
export function readCertificates(path: string): NodeCertificate[] {
  const data = readFileSync(path);
  const text = data.toString('latin1');
  const blocks = text.includes('-----BEGIN CERTIFICATE-----')
    ? (text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [])
    : [data];
  try {
    return blocks.map((b) => new NodeCertificate(b));
  } catch (error) {
    throw new PkiError('PKI_BAD_CERTIFICATE', `${path} is not an X.509 certificate (PEM or DER)`, {
      subject: path,
      cause: error,
    });
  }
}

function passphrase(file: unknown): string | undefined {
  return typeof file === 'string' ? readFileSync(file, 'utf8').split('\n')[0] : undefined;
}

/** The signing key and certificates of --key, --cert, --chain. */
export function signerOptions(options: Record<string, unknown>): {
  key: KeyObject;
  certificates: NodeCertificate[];
} {
  if (typeof options.key !== 'string' || typeof options.cert !== 'string')
    throw new UsageError('--key and --cert are required to sign');
  const key = loadPrivateKey(readFileSync(options.key), passphrase(options['passphrase-file']), options.key);
  const certificates = [
    ...readCertificates(options.cert),
    ...(typeof options.chain === 'string' ? readCertificates(options.chain) : []),
  ];
  return { key, certificates };
}

export const signerSpecs: Record<string, OptionSpec> = {
  key: { type: 'string', value: 'KEY', description: 'the signing key (PEM, PKCS#8 or traditional)' },
  cert: { type: 'string', value: 'CERT', description: "the signing key's certificate (PEM or DER)" },
  chain: {
    type: 'string',
    value: 'PEM',
    description: 'intermediate certificates to include in the signature',
  },
  'passphrase-file': { type: 'string', value: 'FILE', description: "the key's passphrase, if it has one" },
};

function banksOption(value: unknown): Bank[] {
  return typeof value === 'string' ? value.split(',').map((b) => parseBank(b.trim())) : ['sha256'];
}

function textOrFile(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  return value.startsWith('@') ? readFileSync(value.slice(1), 'utf8') : value;
}

const hex = (n: number) => `0x${n.toString(16)}`;

function printInspection(print: (line: string) => void, r: UkiInspection): void {
  print(`${r.path}: ${r.size} bytes, Authenticode SHA-256 ${r.authenticode.sha256}`);
  if (r.stubVersion !== undefined) print(`stub: systemd-stub ${r.stubVersion}`);
  print(
    `checksum: ${hex(r.checksum.stored)}${r.checksum.stored === 0 ? ' (not set)' : r.checksum.stored === r.checksum.computed ? ' (correct)' : ` (WRONG: the file's is ${hex(r.checksum.computed)})`}`,
  );
  print('sections:');
  for (const s of r.sections)
    print(
      `  ${s.name.padEnd(9)} ${hex(s.virtualAddress).padStart(10)} ${String(s.virtualSize).padStart(10)} bytes  sha256 ${s.sha256}${s.measured ? '  (PCR 11)' : ''}`,
    );
  if (r.uname !== undefined) print(`uname: ${r.uname}`);
  if (r.cmdline !== undefined) print(`cmdline: ${r.cmdline.trim()}`);
  if (r.osRelease !== undefined) {
    const pretty = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(r.osRelease)?.[1];
    print(`os-release: ${pretty ?? `${r.osRelease.split('\n').length} lines`}`);
  }
  if (r.sbat !== undefined) for (const line of r.sbat.trim().split('\n')) print(`sbat: ${line}`);
  if (r.signatures.length === 0) print('signatures: none');
  for (const s of r.signatures) {
    if (!s.valid) print(`signature ${s.index}: INVALID (${s.error})`);
    else
      print(
        `signature ${s.index}: ${s.signer} (issuer ${s.issuer}), ${s.algorithm} ${s.digest}${s.matchesImage ? '' : ' — DOES NOT MATCH THE IMAGE'}`,
      );
  }
  for (const [bank, value] of Object.entries(r.pcr11 ?? {})) print(`PCR 11 (${bank}): ${value}`);
}

export const ukiCommands: Command[] = [
  {
    path: ['uki', 'build'],
    summary:
      'Build a Unified Kernel Image on systemd-stub (reproducible; optionally signed in the same pass)',
    args: 'OUT',
    arity: [1, 1],
    options: {
      linux: { type: 'string', value: 'KERNEL', description: 'the kernel image (required)' },
      initrd: {
        type: 'string',
        multiple: true,
        value: 'FILE',
        description: 'an initrd; several are concatenated',
      },
      cmdline: { type: 'string', value: 'TEXT|@FILE', description: 'the kernel command line' },
      'os-release': { type: 'string', value: 'FILE', description: 'the os-release file for .osrel' },
      uname: {
        type: 'string',
        value: 'VERSION',
        description: 'the kernel release (default: read from the kernel)',
      },
      sbat: {
        type: 'string',
        value: 'TEXT|@FILE',
        description: 'SBAT lines for the UKI (default: the generic uki,1 line)',
      },
      splash: { type: 'string', value: 'BMP', description: 'a boot splash image (.splash)' },
      dtb: { type: 'string', value: 'FILE', description: 'a device tree (.dtb)' },
      pcrpkey: {
        type: 'string',
        value: 'PEM',
        description: 'the public key signed PCR policies are checked with',
      },
      pcrsig: { type: 'string', value: 'JSON', description: 'signed PCR policies (.pcrsig)' },
      stub: {
        type: 'string',
        value: 'STUB',
        description: 'the UEFI stub (default /usr/lib/systemd/boot/efi/linuxx64.efi.stub)',
      },
      management: {
        type: 'boolean',
        description:
          'a Seal management image: seal.management joins the command line, and the agent only revokes and installs',
      },
      ...signerSpecs,
    },
    details:
      'With --key and --cert the UKI is signed as it is written (as `seal uki sign` would).\n' +
      'A management image (--management) is signed with a key of its own, whose db entry gives it its\n' +
      'own PCR 7: its initrd carries a management policy (seal tpm policy sign --management), which\n' +
      'opens the TPM owner secret in that boot only. Its agent raises the TPM policy version to the one\n' +
      'the new production UKI needs (revoking every older UKI) and installs that UKI and its system\n' +
      '(seal.install=REF), then powers off.',
    async run(ctx, [out], options) {
      if (typeof options.linux !== 'string') throw new UsageError('--linux is required');
      const sign =
        options.key !== undefined || options.cert !== undefined ? signerOptions(options) : undefined;
      const result = await buildUki(out!, {
        linux: options.linux,
        initrds: options.initrd as string[] | undefined,
        cmdline: options.management
          ? [textOrFile(options.cmdline)?.trim(), 'seal.management'].filter(Boolean).join(' ')
          : textOrFile(options.cmdline),
        osRelease: options['os-release'] as string | undefined,
        uname: options.uname as string | undefined,
        sbat: textOrFile(options.sbat),
        splash: options.splash as string | undefined,
        dtb: options.dtb as string | undefined,
        pcrpkey: options.pcrpkey as string | undefined,
        pcrsig: options.pcrsig as string | undefined,
        stub: options.stub as string | undefined,
        ...(sign ? { sign } : {}),
      });
      ctx.result(result);
      for (const w of result.warnings) process.stderr.write(`seal: warning: ${w}\n`);
      ctx.print(
        `${result.output}: ${result.size} bytes on ${result.stub}${result.uname ? `, kernel ${result.uname}` : ''}`,
      );
      for (const s of result.sections.filter((s) => !s.fromStub))
        ctx.print(
          `  ${s.name.padEnd(9)} ${hex(s.virtualAddress).padStart(10)} ${String(s.virtualSize).padStart(10)} bytes`,
        );
      if (result.signedDigest) ctx.print(`signed: Authenticode SHA-256 ${result.signedDigest}`);
      return 0;
    },
  },
  {
    path: ['uki', 'sign'],
    summary: 'Sign a PE image (UKI, boot manager, kernel) with Authenticode',
    args: 'IN OUT',
    arity: [2, 2],
    options: {
      ...signerSpecs,
      append: { type: 'boolean', description: "keep the image's signatures and add this one" },
      'signing-time': { type: 'boolean', description: 'add a signing-time attribute (not reproducible)' },
    },
    details: "Without --append the image's signatures are replaced. RSA (2048-4096) and ECDSA keys.",
    async run(ctx, [input, output], options) {
      const result = await signPe(input!, output!, {
        ...signerOptions(options),
        append: options.append === true,
        ...(options['signing-time'] ? { signingTime: new Date(Math.floor(Date.now() / 1000) * 1000) } : {}),
      });
      ctx.result({ output, ...result });
      ctx.print(
        `${output}: signed (${result.signatures} signature${result.signatures > 1 ? 's' : ''}), Authenticode ${result.algorithm} ${result.digest}`,
      );
      return 0;
    },
  },
  {
    path: ['uki', 'image'],
    summary: "Seal a signed UKI as a boot image: a system's boot target",
    args: 'UKI DEST',
    arity: [2, 2],
    options: {
      format: { type: 'string', value: 'squashfs|erofs', description: 'the sealed layer (default squashfs)' },
      policy: {
        type: 'string',
        value: 'FILE',
        description:
          "the signed TPM policy the UKI's initrd carries (a management image raises the TPM to its version)",
      },
    },
    details:
      'DEST is an image reference (oci:DIR:TAG). The image holds the UKI as uki.efi in one layer sealed for dm-verity; a system manifest names it as its target of role boot, and a device stages it on its ESP for systemd-boot to try (boot counting) when an update changes it. The same UKI always makes the same image.',
    async run(ctx, [uki, dest], options) {
      const format = (options.format as string | undefined) ?? 'squashfs';
      if (format !== 'squashfs' && format !== 'erofs') throw new UsageError('--format is squashfs or erofs');
      const inspection = inspectUki(uki!);
      const problem = !inspection.sections.some((sec) => sec.name === '.linux')
        ? 'has no .linux section: it is not a UKI'
        : inspection.osRelease === undefined
          ? 'has no .osrel section: systemd-boot lists only UKIs with one (seal uki build --os-release)'
          : !inspection.signatures.some((sig) => sig.valid && sig.matchesImage)
            ? 'is not signed: the firmware would refuse it (seal uki sign)'
            : undefined;
      if (problem) throw new UsageError(`${uki} ${problem}`);
      if (typeof options.policy === 'string') {
        const policy = parsePolicy(readFileSync(options.policy), options.policy);
        if (policy.role !== 'production')
          throw new UsageError(
            `${options.policy} is a ${policy.role} policy; a boot image carries a production one`,
          );
      }
      const descriptor = await sealBootImage(uki!, dest!, {
        format,
        ...(typeof options.policy === 'string' ? { policy: options.policy } : {}),
      });
      ctx.result({ uki, destination: dest, digest: descriptor.digest });
      ctx.print(`Sealed ${uki} as the boot image ${dest} (${descriptor.digest})`);
      return 0;
    },
  },
  {
    path: ['uki', 'verify'],
    summary: 'Verify the signatures of a PE image, against certificates or the db/dbx of a varstore',
    args: 'IMG',
    arity: [1, 1],
    options: {
      cert: {
        type: 'string',
        multiple: true,
        value: 'CERT',
        description: 'a certificate that may vouch for the image',
      },
      db: {
        type: 'string',
        value: 'VARS',
        description: 'a varstore whose db admits and dbx refuses, as firmware does',
      },
    },
    details:
      'Every byte of the image must be covered, every signature intact (structure, signer, image digest) and the checksum right; with --cert or --db a signature must be vouched for.',
    async run(ctx, [image], options) {
      const certs = ((options.cert as string[] | undefined) ?? []).flatMap(readCertificates);
      let trust = {};
      if (typeof options.db === 'string') {
        const state = secureBootState(Varstore.parse(readFileSync(options.db), options.db));
        const db = databaseTrust(state);
        trust = { ...db, anchors: [...db.anchors, ...certs] };
      } else if (certs.length > 0) {
        trust = { anchors: certs };
      }
      const result = verifyPe(image!, trust);
      ctx.result(result);
      for (const s of result.signatures)
        ctx.print(
          `signature ${s.index}: ${s.signer}, ${s.algorithm} ${s.digest}${s.trustedBy ? `, vouched for by ${s.trustedBy}` : ''}`,
        );
      if (result.allowedDigest) ctx.print(`image digest allowed by db (${result.allowedDigest})`);
      ctx.print(`${image}: OK`);
      return 0;
    },
  },
  {
    path: ['uki', 'inspect'],
    summary: 'Show the sections, texts, signatures and predicted PCR 11 of a UKI (or any PE image)',
    args: 'IMG',
    arity: [1, 1],
    options: {
      banks: {
        type: 'string',
        value: 'BANKS',
        description: 'PCR banks for PCR 11, e.g. sha256,sha384 (default sha256)',
      },
    },
    async run(ctx, [image], options) {
      const result = inspectUki(image!, { banks: banksOption(options.banks) });
      ctx.result(result);
      printInspection(ctx.print, result);
      return 0;
    },
  },
];
