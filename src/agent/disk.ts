/**
 * Finding the device's partitions: every whole disk the kernel lists in /sys/class/block is read
 * for its GPT, and the one holding Seal's store partition (by type GUID and label) is the
 * device's disk. Partition device names come from sysfs, so vda1 and nvme0n1p1 both work.
 */
import { closeSync, existsSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Partition, PartitionType, readTable, SECTOR } from '../gpt/index.ts';
import { readFullySync } from '../util/read.ts';
import { AgentError } from './errors.ts';

/** Seal's partitions, by role: [type GUID, GPT label]. */
export const SEAL_PARTITIONS = {
  esp: [PartitionType.esp, 'esp'],
  store: [PartitionType.sealStore, 'seal-store'],
  config: [PartitionType.sealConfig, 'seal-config'],
  data: [PartitionType.sealData, 'seal-data'],
} as const;

export type PartitionRole = keyof typeof SEAL_PARTITIONS;

export interface DevicePartition extends Partition {
  /** /dev path of the partition. */
  device: string;
}

export interface DeviceDisk {
  /** /dev path of the whole disk. */
  device: string;
  partitions: Record<PartitionRole, DevicePartition>;
}

const read = (path: string) => readFileSync(path, 'utf8').trim();

/** Whole disks (not partitions, not loop or device-mapper devices) with their /dev path and size. */
function disks(sys: string): { name: string; bytes: number }[] {
  const out: { name: string; bytes: number }[] = [];
  for (const name of readdirSync(join(sys, 'class/block')).sort()) {
    const dir = join(sys, 'class/block', name);
    if (existsSync(join(dir, 'partition')) || /^(loop|dm-|ram|zram|sr)/.test(name)) continue;
    const sectors = Number(read(join(dir, 'size')));
    if (sectors > 0) out.push({ name, bytes: sectors * SECTOR });
  }
  return out;
}

/** The device names of a disk's partitions by partition number (from sysfs). */
function partitionDevices(sys: string, disk: string): Map<number, string> {
  const devices = new Map<number, string>();
  const dir = join(sys, 'class/block', disk);
  for (const name of readdirSync(dir)) {
    const number = join(dir, name, 'partition');
    if (existsSync(number)) devices.set(Number(read(number)), name);
  }
  return devices;
}

/**
 * The disk holding Seal's partitions. Exactly one disk may hold a store partition: a second one
 * (another device's disk plugged in) would make the choice ambiguous, and is refused.
 */
export function findDeviceDisk(options: { sys?: string; dev?: string } = {}): DeviceDisk {
  const sys = options.sys ?? '/sys';
  const dev = options.dev ?? '/dev';
  const found: DeviceDisk[] = [];
  const seen: string[] = [];
  for (const { name, bytes } of disks(sys)) {
    let table: ReturnType<typeof readTable>;
    try {
      table = readTable(join(dev, name), bytes);
    } catch {
      seen.push(`${name}: no GPT`);
      continue;
    }
    const names = partitionDevices(sys, name);
    const partitions: Partial<Record<PartitionRole, DevicePartition>> = {};
    for (const [role, [type, label]] of Object.entries(SEAL_PARTITIONS) as [
      PartitionRole,
      readonly [string, string],
    ][]) {
      const matches = table.partitions.filter((p) => p.type === type && p.name === label);
      if (matches.length > 1)
        throw new AgentError('AGENT_DISK', `${name} has ${matches.length} ${label} partitions`, {
          subject: name,
        });
      const p = matches[0];
      if (!p) continue;
      const device = names.get(p.number);
      if (!device)
        throw new AgentError('AGENT_DISK', `the kernel lists no partition ${p.number} of ${name}`, {
          subject: name,
        });
      partitions[role] = { ...p, device: join(dev, device) };
    }
    if (!partitions.store) {
      seen.push(`${name}: no seal-store partition`);
      continue;
    }
    const missing = (Object.keys(SEAL_PARTITIONS) as PartitionRole[]).filter((r) => !partitions[r]);
    if (missing.length > 0) {
      throw new AgentError(
        'AGENT_DISK',
        `${name} holds a Seal store but no ${missing.join(', ')} partition`,
        { subject: name },
      );
    }
    found.push({ device: join(dev, name), partitions: partitions as Record<PartitionRole, DevicePartition> });
  }
  if (found.length === 0)
    throw new AgentError('AGENT_DISK', `no disk holds a Seal system (${seen.join('; ') || 'no disks'})`);
  if (found.length > 1) {
    throw new AgentError(
      'AGENT_DISK',
      `several disks hold a Seal system (${found.map((d) => d.device).join(', ')})`,
    );
  }
  return found[0]!;
}

/** Whether the first sector ends in the 0x55AA signature of an MBR or a FAT boot sector. */
function bootSignature(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const sector = Buffer.alloc(512);
    return readFullySync(fd, sector, 0) === 512 && sector[510] === 0x55 && sector[511] === 0xaa;
  } finally {
    closeSync(fd);
  }
}

/**
 * The disk an installer writes: `name` when the command line names one (whatever it holds), else
 * the one writable whole disk of at least 1 GiB without a partition table — never a disk that
 * already holds something (a GPT, an MBR or a FAT boot sector), unless named.
 */
export function installTarget(
  name: string | undefined,
  options: { sys?: string; dev?: string } = {},
): string {
  const sys = options.sys ?? '/sys';
  const dev = options.dev ?? '/dev';
  const all = disks(sys);
  if (name !== undefined) {
    if (!all.some((d) => d.name === name))
      throw new AgentError(
        'AGENT_DISK',
        `no disk ${name} (disks: ${all.map((d) => d.name).join(', ') || 'none'})`,
        {
          subject: name,
        },
      );
    return join(dev, name);
  }
  const blank = all.filter(({ name: n, bytes }) => {
    if (bytes < 1 << 30 || read(join(sys, 'class/block', n, 'ro')) !== '0') return false;
    try {
      readTable(join(dev, n), bytes);
      return false;
    } catch {
      // No GPT; an MBR or a FAT boot sector (an update stick) still holds something.
      return !bootSignature(join(dev, n));
    }
  });
  if (blank.length !== 1)
    throw new AgentError(
      'AGENT_DISK',
      blank.length === 0
        ? `no blank writable disk of 1 GiB or more to install on (disks: ${all.map((d) => d.name).join(', ') || 'none'}); name one with seal.install-disk`
        : `several blank disks (${blank.map((d) => d.name).join(', ')}): name one with seal.install-disk`,
    );
  return join(dev, blank[0]!.name);
}
