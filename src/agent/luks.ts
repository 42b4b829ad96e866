/**
 * The LUKS2 partitions (config and data), through cryptsetup. The passphrase is the TPM's: it
 * goes to cryptsetup on stdin and exists nowhere else. A partition that is not LUKS yet (the
 * first boot after install) is formatted; its filesystem is made by the caller.
 *
 * The key derivation is PBKDF2 with few iterations: the passphrase is 32 random bytes from the
 * TPM, not something a person chose, so stretching it adds nothing but seconds of boot time
 * (argon2id's default would take minutes under emulation).
 */
import { runProgram } from './tools.ts';

export async function isLuks(device: string): Promise<boolean> {
  try {
    await runProgram('cryptsetup', ['isLuks', '--type', 'luks2', device]);
    return true;
  } catch {
    return false;
  }
}

export async function formatLuks(device: string, label: string, passphrase: Uint8Array): Promise<void> {
  await runProgram(
    'cryptsetup',
    [
      'luksFormat',
      '--batch-mode',
      '--type',
      'luks2',
      '--label',
      label,
      '--pbkdf',
      'pbkdf2',
      '--pbkdf-force-iterations',
      '1000',
      '--key-file',
      '-',
      device,
    ],
    passphrase,
  );
}

/** Opens `device` as /dev/mapper/NAME; a wrong passphrase is an AGENT_TOOL error. */
export async function openLuks(device: string, name: string, passphrase: Uint8Array): Promise<string> {
  await runProgram('cryptsetup', ['open', '--type', 'luks2', '--key-file', '-', device, name], passphrase);
  return `/dev/mapper/${name}`;
}

export async function closeLuks(name: string): Promise<void> {
  await runProgram('cryptsetup', ['close', name]);
}
