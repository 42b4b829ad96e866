/** Finding a device's disk: by the GPT types and labels of Seal's partitions, its device names from sysfs. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { findDeviceDisk, installTarget } from '../../src/agent/disk.ts';
import { AgentError } from '../../src/agent/index.ts';
import { layoutTable, type PartitionSpec, PartitionType, writeTable } from '../../src/gpt/index.ts';

const work = mkdtempSync(join(tmpdir(), 'seal-disk-'));
after(() => rmSync(work, { recursive: true, force: true }));
const MiB = 1 << 20;

const SEAL: PartitionSpec[] = [
  { name: 'esp', type: PartitionType.esp, size: 4 * MiB },
  { name: 'seal-store', type: PartitionType.sealStore, size: 4 * MiB },
  { name: 'seal-config', type: PartitionType.sealConfig, size: 2 * MiB },
  { name: 'seal-data', type: PartitionType.sealData },
];

/** A machine: disks as image files under dev/, sysfs entries for them and their partitions (named by `style`). */
function machine(
  name: string,
  disks: Record<string, PartitionSpec[] | undefined>,
  style: 'vd' | 'nvme' = 'vd',
): { sys: string; dev: string } {
  const root = join(work, name);
  const sys = join(root, 'sys');
  const dev = join(root, 'dev');
  mkdirSync(join(sys, 'class/block'), { recursive: true });
  mkdirSync(dev, { recursive: true });
  for (const [disk, specs] of Object.entries(disks)) {
    const bytes = 16 * MiB;
    const path = join(dev, disk);
    writeFileSync(path, Buffer.alloc(bytes));
    mkdirSync(join(sys, 'class/block', disk));
    writeFileSync(join(sys, 'class/block', disk, 'size'), `${bytes / 512}\n`);
    if (!specs) continue;
    writeTable(path, layoutTable(bytes, specs));
    specs.forEach((_, i) => {
      const part = style === 'nvme' ? `${disk}p${i + 1}` : `${disk}${i + 1}`;
      mkdirSync(join(sys, 'class/block', disk, part));
      writeFileSync(join(sys, 'class/block', disk, part, 'partition'), `${i + 1}\n`);
    });
  }
  // A loop device and a device-mapper device are never the device's disk.
  for (const other of ['loop0', 'dm-0']) {
    mkdirSync(join(sys, 'class/block', other));
    writeFileSync(join(sys, 'class/block', other, 'size'), '8\n');
  }
  return { sys, dev };
}

test('the disk with Seal partitions is found among others, its partitions named as the kernel names them', () => {
  const m = machine('one', { sda: undefined, vda: SEAL });
  const disk = findDeviceDisk(m);
  assert.equal(disk.device, join(m.dev, 'vda'));
  assert.equal(disk.partitions.store.device, join(m.dev, 'vda2'));
  assert.equal(disk.partitions.data.device, join(m.dev, 'vda4'));
  const n = machine('nvme', { nvme0n1: SEAL }, 'nvme');
  assert.equal(findDeviceDisk(n).partitions.config.device, join(n.dev, 'nvme0n1p3'));
});

test('no Seal disk, two of them, or a store without its other partitions are refused', () => {
  const cases: [string, Record<string, PartitionSpec[] | undefined>, RegExp][] = [
    [
      'none',
      { vda: undefined, vdb: [{ name: 'x', type: PartitionType.linuxData }] },
      /no disk holds a Seal system/,
    ],
    ['two', { vda: SEAL, vdb: SEAL }, /several disks hold a Seal system/],
    ['partial', { vda: SEAL.slice(0, 2) }, /no config, data partition/],
    [
      'wrong type',
      { vda: SEAL.map((s) => (s.name === 'seal-store' ? { ...s, type: PartitionType.linuxData } : s)) },
      /no seal-store partition/,
    ],
  ];
  for (const [name, disks, message] of cases) {
    assert.throws(
      () => findDeviceDisk(machine(name, disks)),
      (e) => e instanceof AgentError && e.code === 'AGENT_DISK' && message.test(e.message),
      name,
    );
  }
});

test('the installer target: the one blank writable disk of 1 GiB or more, or the disk the command line names', () => {
  const root = join(work, 'installer');
  const sys = join(root, 'sys');
  const dev = join(root, 'dev');
  mkdirSync(dev, { recursive: true });
  const disk = (name: string, bytes: number, ro: 0 | 1, specs?: PartitionSpec[]) => {
    const path = join(dev, name);
    writeFileSync(path, '');
    truncateSync(path, bytes);
    mkdirSync(join(sys, 'class/block', name), { recursive: true });
    writeFileSync(join(sys, 'class/block', name, 'size'), `${bytes / 512}\n`);
    writeFileSync(join(sys, 'class/block', name, 'ro'), `${ro}\n`);
    if (specs) writeTable(path, layoutTable(bytes, specs));
  };
  disk('vda', 64 * MiB, 1); // the installer's own medium, read-only
  disk('vdb', 2048 * MiB, 0); // blank
  disk('vdc', 2048 * MiB, 0, SEAL); // a device's disk: never chosen unless named
  disk('vdd', 512 * MiB, 0); // too small
  assert.equal(installTarget(undefined, { sys, dev }), join(dev, 'vdb'));
  assert.equal(installTarget('vdc', { sys, dev }), join(dev, 'vdc'));
  const refused = (name: string | undefined, reason: RegExp) =>
    assert.throws(
      () => installTarget(name, { sys, dev }),
      (e) => e instanceof AgentError && e.code === 'AGENT_DISK' && reason.test(e.message),
    );
  refused('vdz', /no disk vdz \(disks: vda, vdb, vdc, vdd\)/);
  disk('vde', 4096 * MiB, 0);
  refused(undefined, /several blank disks \(vdb, vde\): name one with seal\.install-disk/);
  rmSync(join(sys, 'class/block/vdb'), { recursive: true });
  rmSync(join(sys, 'class/block/vde'), { recursive: true });
  refused(undefined, /no blank writable disk of 1 GiB or more/);
});

test('the installer never takes a stick for a blank disk: a FAT filesystem or an MBR on the whole disk holds something', () => {
  const root = join(work, 'sticks');
  const sys = join(root, 'sys');
  const dev = join(root, 'dev');
  mkdirSync(dev, { recursive: true });
  const disk = (name: string, fill?: (path: string) => void) => {
    const path = join(dev, name);
    writeFileSync(path, '');
    truncateSync(path, 2048 * MiB);
    mkdirSync(join(sys, 'class/block', name), { recursive: true });
    writeFileSync(join(sys, 'class/block', name, 'size'), `${(2048 * MiB) / 512}\n`);
    writeFileSync(join(sys, 'class/block', name, 'ro'), '0\n');
    fill?.(path);
  };
  disk('sda', (path) => execFileSync('mkfs.vfat', ['-F', '32', '--invariant', path], { stdio: 'ignore' }));
  disk('sdb', (path) => {
    const mbr = Buffer.alloc(512);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    const fd = openSync(path, 'r+');
    writeSync(fd, mbr, 0, 512, 0);
    closeSync(fd);
  });
  assert.throws(
    () => installTarget(undefined, { sys, dev }),
    (e) => e instanceof AgentError && /no blank writable disk/.test(e.message),
  );
  disk('vda');
  assert.equal(installTarget(undefined, { sys, dev }), join(dev, 'vda'));
  // Named, a stick is taken as the command line says.
  assert.equal(installTarget('sda', { sys, dev }), join(dev, 'sda'));
  // And a FAT medium beside the device's disk is never taken for it.
  const m = machine('with-stick', { vda: SEAL, vdb: undefined });
  execFileSync('mkfs.vfat', ['--invariant', join(m.dev, 'vdb')], { stdio: 'ignore' });
  assert.equal(findDeviceDisk(m).device, join(m.dev, 'vda'));
});
