/**
 * What the kernel of a Seal device trusts besides the firmware's keys, set up from the initrd
 * before any image is opened: the product's kernel-signing certificate (its images' dm-verity
 * root-hash signatures and composefs images' fs-verity signatures are made with its key) goes
 * into the `.fs-verity` keyring, which is then closed; dm-verity and IPE trust it through the
 * UEFI db it is enrolled in (the kernel's `.platform` keyring). The IPE policy the initrd carries,
 * signed by the same key, is activated before the switch into the host root.
 */
import { existsSync, readdirSync, readFileSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Certificate, parseCertificates } from '../pki/index.ts';
import { AgentError } from './errors.ts';
import { system } from './system.ts';
import { SEAL_ROOT } from './tools.ts';

export const KERNEL_SIGNER = `${SEAL_ROOT}/etc/kernel-signer.pem`;
export const IPE_POLICY = `${SEAL_ROOT}/etc/ipe-policy.p7s`;
const IPE = '/sys/kernel/security/ipe';
const TMPFS_MAGIC = 0x01021994;

/** The product's kernel-signing certificate, when the initrd carries one (`seal initrd build --kernel-signer`). */
export function initrdKernelSigner(): Certificate | undefined {
  if (!existsSync(KERNEL_SIGNER)) return undefined;
  return parseCertificates(readFileSync(KERNEL_SIGNER, 'utf8'), 'the kernel signer of the initrd')[0];
}

/**
 * The serial number of the keyring named `name` in `procKeys` (/proc/keys: serial in hex, flags,
 * usage, timeout, permissions, uid, gid, type, `description:` and a summary), or undefined.
 */
export function keyringSerial(procKeys: string, name: string): number | undefined {
  for (const line of procKeys.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields[7] === 'keyring' && fields[8] === `${name}:` && /^[0-9a-f]{1,8}$/.test(fields[0]!))
      return Number.parseInt(fields[0]!, 16);
  }
  return undefined;
}

/**
 * Adds `cert` to the `.fs-verity` keyring and closes it: from then on the kernel enables fs-verity
 * with a signature, and loads a signed file's verity data, only for this signer.
 */
export function trustForFsverity(cert: Certificate): string {
  const keyring = keyringSerial(readFileSync('/proc/keys', 'utf8'), '.fs-verity');
  if (keyring === undefined)
    throw new AgentError(
      'AGENT_BOOT',
      'the kernel has no .fs-verity keyring (fs-verity signatures are not built in)',
    );
  const sys = system();
  sys.addKey(keyring, 'asymmetric', new Uint8Array(cert.rawData));
  sys.restrictKeyring(keyring);
  return cert.subject;
}

/**
 * Loads the initrd's signed IPE policy (the kernel checks its signature against the keys it
 * trusts) and activates it; returns its name, or undefined when the initrd carries none.
 */
export function activateIpePolicy(): string | undefined {
  if (!existsSync(IPE_POLICY)) return undefined;
  // crun copies itself into a memory file and runs that unless it runs from a read-only
  // filesystem other than tmpfs; IPE lets no memory file execute.
  if (statfsSync('/').type === TMPFS_MAGIC)
    throw new AgentError(
      'AGENT_BOOT',
      'an IPE policy needs the initramfs on ramfs, not tmpfs: add rootfstype=ramfs to the UKI command line',
    );
  const policies = join(IPE, 'policies');
  const before = new Set(existsSync(policies) ? readdirSync(policies) : []);
  try {
    writeFileSync(join(IPE, 'new_policy'), readFileSync(IPE_POLICY));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOKEY' || code === 'EKEYREJECTED'
        ? 'its signer is not a key the kernel trusts (the UEFI db)'
        : code === 'ENOENT'
          ? 'the kernel has no IPE'
          : (error as Error).message;
    throw new AgentError('AGENT_BOOT', `the kernel refused the IPE policy: ${why}`, { cause: error });
  }
  const added = readdirSync(policies).filter((name) => !before.has(name));
  if (added.length !== 1)
    throw new AgentError(
      'AGENT_BOOT',
      `the IPE policy was loaded, but ${added.length} new policies appeared`,
    );
  writeFileSync(join(policies, added[0]!, 'active'), '1');
  return added[0];
}
