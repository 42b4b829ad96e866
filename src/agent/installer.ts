/**
 * An installer boot (`seal.install=REF` without `seal.management`): the device's disk made on the
 * device itself, as `seal install` makes it on a build host — the signed system at REF fetched,
 * verified with the initrd's CA (deeply) and copied into a new store, its UKI (the system's boot
 * target) on the ESP, behind systemd-boot when the initrd carries a signed one — then power off.
 * The first boot from that disk makes the LUKS2 partitions with the passphrase only the TPM holds.
 */
import { existsSync } from 'node:fs';
import { install } from '../machine/install.ts';
import type { AgentParameters } from './cmdline.ts';
import { installTarget } from './disk.ts';
import type { BootLog } from './log.ts';
import { SEAL_ROOT } from './tools.ts';

/** The signed systemd-boot an installer initrd may carry (`seal initrd build --boot-manager`). */
export const INITRD_BOOT_MANAGER = `${SEAL_ROOT}/etc/boot-manager.efi`;

export async function installOnDevice(params: AgentParameters, log: BootLog): Promise<void> {
  const disk = await log.step(
    'choose the disk to install on',
    () => installTarget(params.installDisk),
    (d) => d,
  );
  // The tools `seal install` runs (mkfs.vfat, mtools, mke2fs) are the initrd's own.
  process.env.PATH = `${SEAL_ROOT}/bin`;
  process.env.LD_LIBRARY_PATH = `${SEAL_ROOT}/lib`;
  process.env.SEAL_TMPDIR = '/run';
  const bootManager = existsSync(INITRD_BOOT_MANAGER) ? INITRD_BOOT_MANAGER : undefined;
  const result = await log.step(
    `install ${params.install} on ${disk}`,
    () =>
      install({
        disk,
        manifest: params.install!,
        ca: `${SEAL_ROOT}/etc/manifest-ca.pem`,
        ...(bootManager ? { bootManager } : {}),
        transport: { plainHttp: params.registryInsecure },
      }),
    (r) =>
      `version ${r.version} (${r.manifest}), ${r.storeBytes} bytes in the store${bootManager ? ', behind systemd-boot' : ''}`,
  );
  log.say(
    `installer: version ${result.version} is on ${disk}; powering off (remove the installer and boot the disk)`,
  );
}
