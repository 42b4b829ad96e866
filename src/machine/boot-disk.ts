/**
 * A boot disk for a machine that boots a UKI not installed on its own disk (an installer UKI, or
 * a new boot image tried against an existing disk): GPT with one EFI system partition whose FAT
 * holds the UKI at the removable-media path EFI/BOOT/BOOTX64.EFI, the path the firmware tries.
 * FAT is made by dosfstools and filled by mtools straight into the partition (no loop device, no
 * mount), as `seal install` does. The partition table's GUIDs come from the UKI's digest, so the
 * same UKI gives the same table.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, ftruncateSync, openSync, statSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { layoutTable, PartitionType, SECTOR, writeTable } from '../gpt/index.ts';
import { MachineError } from './swtpm.ts';

const run = promisify(execFile);
const MiB = 1 << 20;

/** A GUID (RFC 4122 variant and version 4 bits set) from `digest`. */
function guidFrom(digest: Buffer): string {
  const b = Buffer.from(digest.subarray(0, 16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

async function tool(command: string, args: string[]): Promise<void> {
  try {
    await run(command, args, { maxBuffer: 16 * MiB, env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
  } catch (error) {
    const e = error as { stderr?: string; code?: unknown };
    throw new MachineError(
      'MACHINE_INVALID_OPTION',
      `the boot disk: ${command} failed: ${(e.stderr ?? String(error)).trim().split('\n').at(-1)}${e.code === 'ENOENT' ? ` (install ${command})` : ''}`,
      { cause: error },
    );
  }
}

/** Writes `disk` (a new file): GPT, one ESP, the UKI at EFI/BOOT/BOOTX64.EFI. Returns its size. */
export async function writeBootDisk(disk: string, uki: string): Promise<number> {
  const ukiSize = statSync(uki).size;
  const hash = createHash('sha256');
  await pipeline(createReadStream(uki), hash);
  const digest = hash.digest();
  // FAT32 wants at least 32 MiB; room for the UKI, the FAT and a little more.
  const espBytes = Math.max(40 * MiB, Math.ceil((ukiSize * 1.1 + 8 * MiB) / MiB) * MiB);
  const bytes = espBytes + 2 * MiB;
  const fd = openSync(disk, 'wx', 0o644);
  try {
    ftruncateSync(fd, bytes);
  } finally {
    closeSync(fd);
  }
  const table = layoutTable(
    bytes,
    [{ name: 'esp', type: PartitionType.esp, guid: guidFrom(createHash('sha256').update(digest).digest()) }],
    guidFrom(digest),
  );
  writeTable(disk, table);
  const esp = table.partitions[0]!;
  const sectors = esp.lastLba - esp.firstLba + 1;
  await tool('mkfs.vfat', [
    ...['-F', '32', '-n', 'ESP', '--invariant', `--offset=${esp.firstLba}`],
    disk,
    String((sectors * SECTOR) / 1024),
  ]);
  const image = `${disk}@@${esp.firstLba * SECTOR}`;
  await tool('mmd', ['-i', image, '::/EFI', '::/EFI/BOOT']);
  await tool('mcopy', ['-i', image, uki, '::/EFI/BOOT/BOOTX64.EFI']);
  return bytes;
}
