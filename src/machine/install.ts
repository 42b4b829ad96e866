/**
 * `seal install`: a Seal device's disk, from a signed system and a signed UKI.
 *
 *   GPT  esp (FAT32: the UKI at the removable-media path EFI/BOOT/BOOTX64.EFI, or systemd-boot
 *        there and the UKI under EFI/Linux)
 *        seal-store (ext4: the OCI layout store holding the system, tagged `current`)
 *        seal-config, seal-data (left blank: the first boot makes them LUKS2 with the passphrase
 *        that exists only in the device's TPM)
 *
 * The system is copied with everything it pins and everything attached (signatures) as `seal
 * sync` copies it, and verified as the device will verify it before anything is written to the
 * disk. FAT and ext4 are made by dosfstools/mtools and e2fsprogs, written straight into the
 * partitions (no loop devices, no mounts): the tools every distribution trusts for them.
 */
import { execFile } from 'node:child_process';
import {
  closeSync,
  existsSync,
  ftruncateSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { bootEntryName } from '../agent/boot-entries.ts';
import {
  layoutTable,
  type PartitionTable,
  PartitionType,
  readTable,
  SECTOR,
  writeTable,
} from '../gpt/index.ts';
import type { SystemManifest } from '../manifest/spec.ts';
import { readSystemDocument, verifySystem } from '../manifest/verify.ts';
import { parseCertificates } from '../pki/index.ts';
import { syncImage } from '../registry/sync.ts';
import { LayoutStore, type OpenOptions, openDestination, openSource } from '../store/index.ts';
import { extractBootUki } from '../uki/boot-image.ts';
import { writeFullySync } from '../util/write.ts';
import { MachineError } from './swtpm.ts';

const run = promisify(execFile);

const MiB = 1 << 20;

export interface InstallOptions {
  /** A disk image file (created or replaced) or a block device. */
  disk: string;
  /** The signed system manifest: any image reference. */
  manifest: string;
  /** The signed UKI; not given when the system carries its own (a target of role boot). */
  uki?: string;
  /** The manifest CA: the system is verified with it (deep) before it is installed. */
  ca?: string;
  /** Size of a disk image file (default 4 GiB, sparse). */
  size?: number;
  /** Size of the store partition (default: room for the system three times, at least 512 MiB). */
  storeSize?: number;
  /** systemd-boot (signed as the UKI is) at the removable path, the UKI under EFI/Linux. */
  bootManager?: string;
  /** Registry options for the manifest's reference. */
  transport?: OpenOptions;
}

export interface InstallResult {
  disk: string;
  table: PartitionTable;
  manifest: string;
  version: number;
  storeBytes: number;
}

async function tool(command: string, args: string[], what: string): Promise<void> {
  try {
    // mtools would refuse a FAT inside a partition of a larger file without this.
    await run(command, args, { maxBuffer: 16 * MiB, env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
  } catch (error) {
    const e = error as { stderr?: string; code?: unknown };
    throw new MachineError(
      'MACHINE_INSTALL',
      `${what}: ${command} failed: ${(e.stderr ?? String(error)).trim().split('\n').at(-1)}${typeof e.code === 'number' ? ` (exit status ${e.code})` : e.code === 'ENOENT' ? ` (install ${command})` : ''}`,
      { subject: what, cause: error },
    );
  }
}

/** Bytes used by the files under `dir`. */
function usage(dir: string): number {
  let total = 0;
  const visit = (path: string) => {
    const st = statSync(path);
    if (st.isDirectory()) for (const n of readdirSync(path)) visit(join(path, n));
    else total += st.size;
  };
  visit(dir);
  return total;
}

/** Size of a block device (sysfs) or a file. */
function diskSize(disk: string): number {
  const st = statSync(disk);
  if (!st.isBlockDevice()) return st.size;
  const name = basename(disk);
  return Number(readFileSync(`/sys/class/block/${name}/size`, 'utf8')) * SECTOR;
}

/** Zeroes the start of a partition (a LUKS header left from an earlier install would otherwise be tried first). */
function wipe(disk: string, firstLba: number, bytes: number): void {
  const fd = openSync(disk, 'r+');
  try {
    writeFullySync(fd, Buffer.alloc(bytes), firstLba * SECTOR);
  } finally {
    closeSync(fd);
  }
}

export async function install(options: InstallOptions): Promise<InstallResult> {
  if (options.uki !== undefined && !existsSync(options.uki))
    throw new MachineError('MACHINE_INSTALL', `no UKI at ${options.uki}`, { subject: options.uki });
  const work = mkdtempSync(join(process.env.SEAL_TMPDIR ?? tmpdir(), 'seal-install-'));
  try {
    // 1. The store, staged: the system and everything it pins and carries, verified.
    const staging = join(work, 'store');
    const src = await openSource(options.manifest, options.transport);
    try {
      const dst = await openDestination(`oci:${staging}:current`);
      try {
        await syncImage(src, dst, { tag: 'current' });
        await dst.commit();
      } finally {
        await dst.close();
      }
    } finally {
      await src.close();
    }
    const staged = await openSource(`oci:${staging}:current`);
    const read = await readSystemDocument(staged, options.manifest).finally(() => staged.close());
    let version = read.document.version;
    let digest = read.descriptor.digest;
    if (options.ca) {
      const ca = parseCertificates(readFileSync(options.ca, 'utf8'), options.ca)[0];
      if (!ca)
        throw new MachineError('MACHINE_INSTALL', `${options.ca} holds no certificate`, {
          subject: options.ca,
        });
      const report = await verifySystem(`oci:${staging}:current`, { ca, deep: true });
      version = report.document.version;
      digest = report.manifest.digest;
    }
    // The UKI: the system's own (its boot target), or the one given.
    const bootTarget = read.machine
      ? undefined
      : (read.document as SystemManifest).targets.find((t) => t.role === 'boot');
    let uki = options.uki;
    if (bootTarget && uki)
      throw new MachineError(
        'MACHINE_INSTALL',
        `${options.manifest} carries its UKI (target ${bootTarget.name}); --uki would boot another`,
        { subject: options.manifest },
      );
    if (bootTarget) {
      uki = join(work, 'uki.efi');
      await extractBootUki(await LayoutStore.open(staging), bootTarget.image, uki);
    }
    if (!uki)
      throw new MachineError('MACHINE_INSTALL', `${options.manifest} has no boot target: give the UKI`, {
        subject: options.manifest,
      });
    const storeBytes = usage(staging);

    // 2. The disk and its partition table.
    if (!existsSync(options.disk) || statSync(options.disk).isFile()) {
      const fd = openSync(options.disk, 'w');
      try {
        ftruncateSync(fd, options.size ?? 4 * 1024 * MiB);
      } finally {
        closeSync(fd);
      }
    }
    const bytes = diskSize(options.disk);
    const storeSize = options.storeSize ?? Math.max(512 * MiB, Math.ceil((storeBytes * 3) / MiB) * MiB);
    const table = layoutTable(bytes, [
      { name: 'esp', type: PartitionType.esp, size: 512 * MiB },
      { name: 'seal-store', type: PartitionType.sealStore, size: storeSize },
      { name: 'seal-config', type: PartitionType.sealConfig, size: 64 * MiB },
      { name: 'seal-data', type: PartitionType.sealData },
    ]);
    writeTable(options.disk, table);
    const [esp, store, config, data] = table.partitions as [
      (typeof table.partitions)[0],
      ...typeof table.partitions,
    ];

    // 3. The ESP.
    const espSectors = esp.lastLba - esp.firstLba + 1;
    await tool(
      'mkfs.vfat',
      [
        '-F',
        '32',
        '-n',
        'ESP',
        '--invariant',
        `--offset=${esp.firstLba}`,
        options.disk,
        String((espSectors * SECTOR) / 1024),
      ],
      'the ESP',
    );
    // mtools addresses a FAT inside a disk image as FILE@@OFFSET.
    const image = `${options.disk}@@${esp.firstLba * SECTOR}`;
    const m = (command: string, args: string[]) => tool(command, ['-i', image, ...args], 'the ESP');
    await m('mmd', ['::/EFI', '::/EFI/BOOT']);
    if (options.bootManager) {
      await m('mmd', ['::/EFI/Linux']);
      await m('mcopy', [options.bootManager, '::/EFI/BOOT/BOOTX64.EFI']);
      await m('mcopy', [uki, `::/EFI/Linux/${bootEntryName(version)}.efi`]);
    } else {
      await m('mcopy', [uki, '::/EFI/BOOT/BOOTX64.EFI']);
    }

    // 4. The store partition, with the staged layout as its contents.
    const storeBytesOnDisk = (store.lastLba - store.firstLba + 1) * SECTOR;
    await tool(
      'mke2fs',
      [
        '-q',
        '-F',
        '-t',
        'ext4',
        '-L',
        'seal-store',
        // fs-verity for composefs images: the agent enables it on their files and the kernel checks them.
        '-O',
        'verity',
        '-E',
        `offset=${store.firstLba * SECTOR},root_owner=0:0`,
        '-d',
        staging,
        options.disk,
        `${storeBytesOnDisk / 1024}k`,
      ],
      'the store partition',
    );

    // 5. Config and data: blank, for the first boot to make LUKS2 with the TPM's passphrase.
    wipe(options.disk, config.firstLba, 16 * MiB);
    wipe(options.disk, data.firstLba, 16 * MiB);
    return {
      disk: options.disk,
      table: readTable(options.disk, bytes),
      manifest: digest,
      version,
      storeBytes,
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
