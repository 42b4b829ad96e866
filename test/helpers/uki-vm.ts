/**
 * Booting UKIs the way a Seal device boots: qemu (TCG) with OVMF's Secure Boot firmware, a
 * varstore, one or more ESPs (each a FAT disk with EFI/BOOT/BOOTX64.EFI, tried in order) and a
 * fresh swtpm, through src/machine. The UKIs carry a small busybox initrd (built with src/cpio)
 * that prints the Secure Boot state, the PCRs of every bank and the TPM event log (base64) on
 * the console, runs the test's extra script, and powers off. A guest whose kernel crashes for
 * reasons of its own (TCG on a busy host, see test/helpers/vm.ts) is booted again.
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { treeToCpio } from '../../src/cpio/index.ts';
import { OVMF_CODE_SECURE_BOOT, runQemu, Swtpm } from '../../src/machine/index.ts';
import { treeFromDirectory } from '../../src/tree/index.ts';
import { addProgram, vmKernel } from './vm.ts';

const BEGIN = 'SEAL-EVENTLOG-BEGIN';
const END = 'SEAL-EVENTLOG-END';
const DONE = 'SEAL-UKI-DONE';
export const CRASH = /Kernel panic|Oops|general protection fault|BUG: |invalid opcode/;

/** How often a crashed guest was booted again, in this process. */
export const retries = { count: 0 };

/**
 * The status initrd: busybox, `files` under /data, and an init that reports and powers off.
 * `script` (sh) runs after the report, with /data as the working directory.
 */
export async function statusInitrd(
  path: string,
  options: { script?: string; files?: Record<string, string> } = {},
): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'seal-initrd-'));
  try {
    for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'data'])
      mkdirSync(join(root, d), { recursive: true });
    copyFileSync('/bin/busybox', join(root, 'bin/busybox'));
    // efivarfs is a module of the test kernel (signed by Debian, so lockdown lets it load).
    copyFileSync(join(vmKernel(), 'modules/efivarfs.ko'), join(root, 'efivarfs.ko'));
    // chattr, to lift the immutable flag efivarfs sets on Secure Boot variables (not in busybox-static).
    addProgram(root, '/usr/bin/chattr');
    symlinkSync('busybox', join(root, 'bin/sh'));
    for (const [to, from] of Object.entries(options.files ?? {})) {
      mkdirSync(dirname(join(root, 'data', to)), { recursive: true });
      copyFileSync(from, join(root, 'data', to));
    }
    writeFileSync(join(root, 'extra.sh'), options.script ?? '');
    writeFileSync(
      join(root, 'init'),
      `#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
insmod /efivarfs.ko
mount -t securityfs securityfs /sys/kernel/security; mount -t efivarfs efivarfs /sys/firmware/efi/efivars
echo "SEAL-SECUREBOOT $(od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c | awk '{print $NF}')"
for bank in sha1 sha256 sha384 sha512; do
  for pcr in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
    f=/sys/class/tpm/tpm0/pcr-$bank/$pcr
    [ -e $f ] && echo "SEAL-PCR $bank $pcr $(cat $f)"
  done
done
echo ${BEGIN}; base64 /sys/kernel/security/tpm0/binary_bios_measurements; echo ${END}
cd /data && sh /extra.sh
echo ${DONE}
poweroff -f
`,
      { mode: 0o755 },
    );
    writeFileSync(path, await treeToCpio(await treeFromDirectory(root, { xattrs: false })));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** A directory laid out as an ESP booting `uki` from the removable-media path. */
export function espWith(dir: string, uki: string): string {
  mkdirSync(join(dir, 'EFI/BOOT'), { recursive: true });
  copyFileSync(uki, join(dir, 'EFI/BOOT/BOOTX64.EFI'));
  return dir;
}

export interface UkiBoot {
  output: string;
  /** The kernel started and the initrd's report completed. */
  booted: boolean;
  /** The console's value of the SecureBoot variable (1 = on). */
  secureBoot: number | undefined;
  /** PCR values printed by the guest: bank → index → lowercase hex. */
  pcrs: Record<string, Record<number, string>>;
  eventLog: Buffer | undefined;
  /** Boot options the firmware refused, as BdsDxe names them. */
  refused: string[];
  /** What the test's extra script printed. */
  extra: string;
}

export interface UkiBootOptions {
  esps: string[];
  /** The varstore to boot with (copied: the firmware writes to its copy). */
  varstore: string;
  timeoutMs?: number;
  /**
   * A swtpm state directory to boot with, used in place and kept afterwards (e.g. with an
   * identity key the host made in it); by default every boot gets a fresh TPM.
   */
  tpmState?: string;
}

function parse(output: string): UkiBoot {
  const pcrs: UkiBoot['pcrs'] = {};
  for (const m of output.matchAll(/SEAL-PCR (\w+) (\d+) ([0-9A-Fa-f]+)$/gm))
    (pcrs[m[1]!] ??= {})[Number(m[2])] = m[3]!.toLowerCase();
  const begin = output.indexOf(`${BEGIN}\n`);
  const end = output.indexOf(END, begin);
  const eventLog =
    begin >= 0 && end > begin
      ? Buffer.from(output.slice(begin + BEGIN.length + 1, end).replace(/\s+/g, ''), 'base64')
      : undefined;
  const secure = /SEAL-SECUREBOOT (\d+)/.exec(output);
  const done = output.indexOf(`${DONE}\n`);
  return {
    output,
    booted: done >= 0,
    secureBoot: secure ? Number(secure[1]) : undefined,
    pcrs,
    eventLog,
    refused: [...output.matchAll(/BdsDxe: failed to load (Boot\d+ "[^"]*").*: Access Denied/g)].map(
      (m) => m[1]!,
    ),
    extra: end >= 0 && done > end ? output.slice(end + END.length + 1, done) : '',
  };
}

/** Boots once per attempt until the guest finishes or fails for a reason of its own. */
export async function bootUki(options: UkiBootOptions): Promise<UkiBoot> {
  for (let attempt = 1; ; attempt++) {
    const work = mkdtempSync(join(tmpdir(), 'seal-uki-boot-'));
    let tpm: Swtpm | undefined;
    try {
      const vars = join(work, 'vars.fd');
      copyFileSync(options.varstore, vars);
      tpm = await Swtpm.start({ stateDir: options.tpmState ?? join(work, 'tpm'), mode: 'qemu' });
      const result = await runQemu({
        firmware: { code: OVMF_CODE_SECURE_BOOT, vars },
        esp: options.esps,
        tpm,
        memory: 1024,
        timeoutMs: options.timeoutMs ?? 240_000,
        // The firmware found nothing it would start: it waits in its boot menu.
        stopOn: /No bootable option or device was found|Shell> /,
      });
      const boot = parse(result.output);
      if (boot.booted || attempt === 4) return boot;
      if (!CRASH.test(result.output) && !result.timedOut) return boot;
      retries.count++;
      console.error(`the VM crashed; booting it again (attempt ${attempt + 1})`);
    } finally {
      await tpm?.stop();
      rmSync(work, { recursive: true, force: true });
    }
  }
}
