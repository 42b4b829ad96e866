/**
 * Kernel modules for the initrd, taken from a kernel package: each named module with the modules
 * it depends on (its `.modinfo` `depends=`), in load order, decompressed (Debian ships them as
 * .ko.xz; the initrd itself is compressed). Modules built into the kernel are skipped.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadCodecs } from '../util/codecs.ts';
import { AgentError } from './errors.ts';

/** The modules a Seal device needs: disks, dm-verity and dm-crypt, the image filesystems, the ESP, the network. */
export const AGENT_MODULES = [
  'virtio_blk',
  'virtio_net',
  'dm_mod',
  'dm_verity',
  'dm_crypt',
  'xts',
  'loop',
  'overlay',
  'erofs',
  'squashfs',
  'vfat',
  'nls_cp437',
  'nls_ascii',
  'efivarfs',
  // The ACPI power button, read as an input device: an orderly shutdown.
  'button',
  'evdev',
];

export interface KernelModule {
  /** Name as the kernel knows it (`dm_verity`). */
  name: string;
  /** Path of the uncompressed file relative to the modules directory (`kernel/drivers/md/dm-verity.ko`). */
  path: string;
  data: Buffer;
}

const normalize = (name: string) => name.replace(/-/g, '_');

/** The `key=value` strings of an ELF64 module's `.modinfo` section. */
function modinfo(elf: Buffer, subject: string): Map<string, string[]> {
  const bad = () => new AgentError('AGENT_KERNEL', `${subject} is not an ELF64 kernel module`, { subject });
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) throw bad();
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const shstrndx = elf.readUInt16LE(0x3e);
  if (shentsize < 64 || shoff + shnum * shentsize > elf.length || shstrndx >= shnum) throw bad();
  const section = (i: number) => {
    const at = shoff + i * shentsize;
    const offset = Number(elf.readBigUInt64LE(at + 0x18));
    const size = Number(elf.readBigUInt64LE(at + 0x20));
    if (offset + size > elf.length) throw bad();
    return { name: elf.readUInt32LE(at), data: elf.subarray(offset, offset + size) };
  };
  const names = section(shstrndx).data;
  const result = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    const end = names.indexOf(0, s.name);
    if (names.toString('latin1', s.name, end < 0 ? undefined : end) !== '.modinfo') continue;
    for (const entry of s.data.toString('latin1').split('\0')) {
      const eq = entry.indexOf('=');
      if (eq > 0)
        result.set(entry.slice(0, eq), [...(result.get(entry.slice(0, eq)) ?? []), entry.slice(eq + 1)]);
    }
  }
  return result;
}

/** Every module file under `dir` (recursively), by normalized name. */
function moduleFiles(dir: string): Map<string, string> {
  const found = new Map<string, string>();
  const visit = (rel: string) => {
    for (const entry of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const path = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) visit(path);
      else if (/\.ko(\.xz)?$/.test(entry.name))
        found.set(normalize(entry.name.replace(/\.ko(\.xz)?$/, '')), path);
    }
  };
  visit('kernel');
  return found;
}

/** Names of the modules built into the kernel (modules.builtin), which need no file. */
function builtins(dir: string): Set<string> {
  try {
    return new Set(
      readFileSync(join(dir, 'modules.builtin'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((line) => normalize(line.replace(/^.*\//, '').replace(/\.ko$/, ''))),
    );
  } catch {
    return new Set();
  }
}

/**
 * `names` and their dependencies from the modules directory `dir` (`lib/modules/VERSION`),
 * dependencies first. A module neither built in nor present is an error.
 */
export function resolveModules(dir: string, names: string[]): KernelModule[] {
  const files = moduleFiles(dir);
  const builtin = builtins(dir);
  const codecs = loadCodecs();
  const ordered: KernelModule[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (raw: string, wantedBy?: string) => {
    const name = normalize(raw);
    if (state.get(name) === 'done' || builtin.has(name)) return;
    if (state.get(name) === 'visiting') {
      throw new AgentError('AGENT_KERNEL', `kernel modules depend on each other in a loop at ${name}`, {
        subject: name,
      });
    }
    const path = files.get(name);
    if (!path) {
      throw new AgentError(
        'AGENT_KERNEL',
        `kernel module ${name}${wantedBy ? ` (needed by ${wantedBy})` : ''} is neither built in nor in ${dir}`,
        { subject: name },
      );
    }
    state.set(name, 'visiting');
    let data: Buffer = readFileSync(join(dir, path));
    if (path.endsWith('.xz')) {
      if (codecs instanceof Error)
        throw new AgentError('AGENT_KERNEL', `cannot decompress ${path}: ${codecs.message}`);
      data = codecs.xzDecompress(data, 256 << 20);
    }
    for (const dependency of (modinfo(data, path).get('depends')?.[0] ?? '').split(',').filter(Boolean))
      visit(dependency, name);
    ordered.push({ name, path: path.replace(/\.xz$/, ''), data });
    state.set(name, 'done');
  };
  for (const name of names) visit(name);
  return ordered;
}
