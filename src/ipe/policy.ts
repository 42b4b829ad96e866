/**
 * IPE (Integrity Policy Enforcement, Linux 6.12) policies: which files the kernel lets a system
 * execute (or load as modules, firmware, kexec images...), by where they come from. The text
 * follows the kernel's parser (security/ipe/policy_parser.c): a header line
 * `policy_name=NAME policy_version=MAJOR.MINOR.REVISION`, then rules
 * `[DEFAULT] [op=OPERATION] [PROPERTY=VALUE...] action=ALLOW|DENY`, first match wins.
 *
 * Seal's policy allows everything by default except the operations named, which are denied
 * unless the file comes from the initramfs the kernel booted with (`boot_verified`), from a
 * dm-verity device whose root hash signature the kernel checked (`dmverity_signature`), from a
 * file whose fs-verity built-in signature the kernel checked (`fsverity_signature`), or matches a
 * pinned dm-verity root hash or fs-verity digest.
 *
 * The kernel takes a policy only signed (PKCS#7 with the policy embedded) by a key it trusts
 * (builtin, secondary or, with IPE_POLICY_SIG_PLATFORM_KEYRING, the UEFI db): `signIpePolicy`.
 */

import type { KeyObject } from 'node:crypto';
import { SealError } from '../errors.ts';
import { type CertificateSource, signPkcs7 } from '../pki/index.ts';

export class IpeError extends SealError<'IPE_INVALID_OPTION'> {}

export const IPE_OPERATIONS = [
  'EXECUTE',
  'FIRMWARE',
  'KMODULE',
  'KEXEC_IMAGE',
  'KEXEC_INITRAMFS',
  'POLICY',
  'X509_CERT',
] as const;
export type IpeOperation = (typeof IPE_OPERATIONS)[number];

export const IPE_TRUST = ['boot_verified', 'dmverity_signature', 'fsverity_signature'] as const;
export type IpeTrust = (typeof IPE_TRUST)[number];

export interface IpePolicyOptions {
  /** Letters, digits, `.`, `_` and `-` (default `seal`). */
  name?: string;
  /** MAJOR.MINOR.REVISION, each 0..65535; the kernel only replaces a policy with a higher one. */
  version?: string;
  /** The operations restricted (default EXECUTE: execve and executable mappings). */
  operations?: IpeOperation[];
  /** What makes a file trusted (default: all three). */
  trust?: IpeTrust[];
  /** dm-verity root hashes also trusted, whatever their signature (`sha256:HEX` or HEX). */
  dmverityRootHashes?: string[];
  /** fs-verity digests also trusted (`sha256:HEX`, `sha512:HEX`). */
  fsverityDigests?: string[];
}

function bad(message: string, subject?: string): IpeError {
  return new IpeError('IPE_INVALID_OPTION', message, subject === undefined ? {} : { subject });
}

function digestProperty(kind: string, value: string, defaultAlgorithm?: string): string {
  const m = /^(?:(sha256|sha384|sha512):)?([0-9a-fA-F]+)$/.exec(value);
  const algorithm = m?.[1] ?? defaultAlgorithm;
  const sizes: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };
  if (!m || !algorithm || m[2]!.length !== sizes[algorithm])
    throw bad(`${JSON.stringify(value)} is not a ${kind} (ALGORITHM:HEX)`, value);
  return `${algorithm}:${m[2]!.toLowerCase()}`;
}

/** The policy text, one rule per line, ending with a newline. */
export function ipePolicy(options: IpePolicyOptions = {}): string {
  const name = options.name ?? 'seal';
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(name))
    throw bad(`policy name ${JSON.stringify(name)}: letters, digits, ".", "_" and "-" only`, name);
  const version = options.version ?? '0.0.1';
  const parts = version.split('.');
  if (parts.length !== 3 || parts.some((p) => !/^\d{1,5}$/.test(p) || Number(p) > 65535))
    throw bad(
      `policy version ${JSON.stringify(version)} is not MAJOR.MINOR.REVISION (each 0..65535)`,
      version,
    );
  const operations: string[] = [...new Set(options.operations ?? ['EXECUTE'])];
  for (const op of operations)
    if (!(IPE_OPERATIONS as readonly string[]).includes(op))
      throw bad(`unknown IPE operation ${JSON.stringify(op)}`, op);
  const trust: string[] = [...new Set(options.trust ?? IPE_TRUST)];
  for (const t of trust)
    if (!(IPE_TRUST as readonly string[]).includes(t))
      throw bad(`unknown IPE trust property ${JSON.stringify(t)}`, t);
  const pinned = [
    ...(options.dmverityRootHashes ?? []).map(
      (h) => `dmverity_roothash=${digestProperty('dm-verity root hash', h, 'sha256')}`,
    ),
    ...(options.fsverityDigests ?? []).map((d) => `fsverity_digest=${digestProperty('fs-verity digest', d)}`),
  ];
  if (operations.length === 0) throw bad('an IPE policy restricts at least one operation');
  const lines = [`policy_name=${name} policy_version=${parts.map(Number).join('.')}`, 'DEFAULT action=ALLOW'];
  for (const op of operations) {
    lines.push(`DEFAULT op=${op} action=DENY`);
    for (const t of trust) lines.push(`op=${op} ${t}=TRUE action=ALLOW`);
    for (const p of pinned) lines.push(`op=${op} ${p} action=ALLOW`);
  }
  return `${lines.join('\n')}\n`;
}

/** The signed policy the kernel takes (`/sys/kernel/security/ipe/new_policy`): PKCS#7, content embedded. */
export function signIpePolicy(
  policy: string | Uint8Array,
  signer: { key?: KeyObject; certificate: CertificateSource; certificates?: CertificateSource[] },
): Buffer {
  const text = typeof policy === 'string' ? Buffer.from(policy, 'utf8') : Buffer.from(policy);
  return signPkcs7(text, { ...signer, attached: true });
}
