/**
 * The boot entries of a device that boots through systemd-boot: the UKIs under EFI/Linux on the
 * ESP, each named after the system version that brought it (`seal-8.efi`). A UKI being tried
 * carries the Boot Loader Specification's counter (`seal-9+3.efi`): systemd-boot lowers it at each
 * boot (`seal-9+2-1.efi`) and passes over an entry with none left, so the previous entry boots by
 * itself; the agent removes the counter when the system it brought is confirmed good. Entries
 * sort by version, the newest first. systemd-boot says which entry it started in EFI variables.
 */
import {
  closeSync,
  createReadStream,
  createWriteStream,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
} from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { AgentError } from './errors.ts';
import { MS, system } from './system.ts';

export const ENTRIES_DIR = 'EFI/Linux';
/** Where the agent mounts the ESP. */
export const ESP_MOUNT = '/run/seal/esp';
const EFIVARS = '/sys/firmware/efi/efivars';
/** The vendor GUID of systemd-boot's variables (the Boot Loader Interface). */
const LOADER_GUID = '4a67b082-0a4c-41cf-b6c7-440b29bb8c4f';

/** The entry id of the UKI a system version brought. */
export const bootEntryName = (version: number): string => `seal-${version}`;

export interface BootEntry {
  /** The file under EFI/Linux. */
  file: string;
  /** The entry id without its counter (`seal-9`). */
  id: string;
  version: number;
  /** Boots left while it is tried (a counted entry); 0: systemd-boot passes it over. */
  triesLeft?: number;
  triesDone?: number;
}

/** An entry file name (or a LoaderEntrySelected id, with or without its counter); undefined if not Seal's. */
export function parseBootEntry(file: string): BootEntry | undefined {
  const m = /^seal-(\d{1,9})(?:\+(\d{1,4})(?:-(\d{1,4}))?)?\.efi$/i.exec(file);
  if (!m) return undefined;
  return {
    file,
    id: `seal-${Number(m[1])}`,
    version: Number(m[1]),
    ...(m[2] !== undefined ? { triesLeft: Number(m[2]), triesDone: Number(m[3] ?? 0) } : {}),
  };
}

/** A systemd-boot variable (UTF-16 text after the 4 attribute bytes); undefined when it is not set. */
export function loaderVariable(name: string, efivars = EFIVARS): string | undefined {
  let raw: Buffer;
  try {
    raw = readFileSync(join(efivars, `${name}-${LOADER_GUID}`));
  } catch {
    return undefined;
  }
  return raw.subarray(4).toString('utf16le').replace(/\0+$/, '');
}

/** What systemd-boot says of this boot: that it ran, and the entry it started. */
export interface LoaderReport {
  /** systemd-boot's name and version (LoaderInfo). */
  loader: string;
  /** The entry it started (LoaderEntrySelected), when it is one of Seal's. */
  booted?: BootEntry;
}

export function loaderReport(efivars = EFIVARS): LoaderReport | undefined {
  const loader = loaderVariable('LoaderInfo', efivars);
  if (!loader) return undefined;
  const selected = loaderVariable('LoaderEntrySelected', efivars);
  const booted = selected ? parseBootEntry(selected) : undefined;
  return { loader, ...(booted ? { booted } : {}) };
}

/**
 * The entry this boot is a counted try of, when a plain entry remains to fall back to: a boot
 * that fails then reboots, so that systemd-boot counts the failure and, once the tries are
 * spent, starts the plain (good) entry. Undefined for any other boot.
 */
export function countedTry(entries: BootEntries, loader: LoaderReport): BootEntry | undefined {
  const booted = loader.booted && entries.find(loader.booted.id);
  if (booted?.triesLeft === undefined) return undefined;
  return entries.list().some((e) => e.id !== booted.id && e.triesLeft === undefined) ? booted : undefined;
}

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The entries on an ESP mounted at `esp` (writable while they change). */
export class BootEntries {
  readonly dir: string;

  constructor(esp: string) {
    this.dir = join(esp, ENTRIES_DIR);
  }

  list(): BootEntry[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return [];
    }
    return names
      .map((n) => parseBootEntry(n))
      .filter((e): e is BootEntry => e !== undefined)
      .sort((a, b) => b.version - a.version);
  }

  find(id: string): BootEntry | undefined {
    return this.list().find((e) => e.id === id);
  }

  /**
   * Adds the UKI at `uki` as the entry of `version`, counted with `tries` boots (none: a plain
   * entry, as the management image installs one): written under a temporary name, flushed, then
   * renamed, so systemd-boot sees a whole UKI or none. `replace` lets a plain entry of the same
   * version go (the management image installing again after an interruption).
   */
  async stage(version: number, uki: string, tries?: number, replace = false): Promise<BootEntry> {
    const id = bootEntryName(version);
    // Only a counted entry of the same version (a trial given up before) may be replaced.
    if (
      this.list().some(
        (e) => e.version > version || (e.version === version && e.triesLeft === undefined && !replace),
      )
    )
      throw new AgentError(
        'AGENT_UPDATE',
        `a new UKI needs a version above every boot entry's (systemd-boot boots the highest): version ${version} is not`,
      );
    this.remove(id);
    const temporary = join(this.dir, `.${id}.partial`);
    try {
      await pipeline(createReadStream(uki), createWriteStream(temporary, { mode: 0o644 }));
      fsyncPath(temporary);
    } catch (error) {
      rmSync(temporary, { force: true });
      throw error;
    }
    const file = tries === undefined ? `${id}.efi` : `${id}+${tries}.efi`;
    renameSync(temporary, join(this.dir, file));
    fsyncPath(this.dir);
    return parseBootEntry(file)!;
  }

  /** Makes `id` a plain entry (no counter): it boots from now on. */
  bless(id: string): void {
    const entry = this.find(id);
    if (!entry || entry.triesLeft === undefined) return;
    renameSync(join(this.dir, entry.file), join(this.dir, `${id}.efi`));
    fsyncPath(this.dir);
  }

  /** Removes every file of entry `id`. */
  remove(id: string): void {
    for (const e of this.list()) if (e.id === id) rmSync(join(this.dir, e.file), { force: true });
    rmSync(join(this.dir, `.${id}.partial`), { force: true });
    fsyncPath(this.dir);
  }

  /** Keeps only the entry `id` (blessed): the others are older systems' or given-up trials'. */
  keepOnly(id: string): string[] {
    // Never leave the ESP without the entry that is to boot.
    if (!this.find(id)) return [];
    this.bless(id);
    const removed = this.list().filter((e) => e.id !== id);
    for (const e of removed) rmSync(join(this.dir, e.file), { force: true });
    if (removed.length > 0) fsyncPath(this.dir);
    return removed.map((e) => e.file);
  }
}

/** Mounts the ESP (vfat) read-only at ESP_MOUNT; its entries change only under a remount. */
export function mountEsp(device: string): BootEntries {
  mkdirSync(ESP_MOUNT, { recursive: true });
  system().mount(device, ESP_MOUNT, 'vfat', MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC, 'flush');
  return new BootEntries(ESP_MOUNT);
}
