/**
 * Updates from removable media (`seal.media`): a FAT stick (or any block device the kernel lists
 * in /sys/block other than the device's own disk) whose root holds `seal-update/`, an OCI image
 * layout with the signed system under the tag `system` — what `seal media create` writes.
 *
 * Only vfat is tried: of the filesystems the kernel could parse, FAT's is among the smallest, and
 * a stick anyone can insert should meet no more kernel parser than that. Before the kernel sees it,
 * the first sector must look like a FAT boot sector (a cheap sniff, not a check: the kernel's
 * parser decides). The medium is mounted read-only, nosuid, nodev, noexec under
 * /run/seal/media/NAME, NAME being the kernel's name for the block device (never anything read from
 * the medium), and everything on it is untrusted: it goes through the same `update()` as a
 * registry (signature, product, version floor, every layer through dm-verity), read by the store's
 * own layout reader (every path confined beneath the layout, no symlinks followed — FAT has none
 * anyway — every blob checked against its descriptor's size and digest as it is copied).
 */
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { readFullySync } from '../util/read.ts';
import type { Device } from './device.ts';
import { RUN } from './device.ts';
import { MNT_DETACH, MS, system } from './system.ts';
import type { UpdateChecker } from './update.ts';

/** Where a medium is mounted: MEDIA_MOUNT/NAME. */
export const MEDIA_MOUNT = `${RUN}/media`;
/** The directory at the medium's root that holds the layout, and the tag of the system in it. */
export const MEDIA_DIR = 'seal-update';
export const MEDIA_TAG = 'system';
/** How often media are looked for when no seal.follow-interval says (ms). */
export const MEDIA_INTERVAL_MS = 10_000;

/** Block devices that are never removable media. */
const NOT_MEDIA = /^(loop|ram|dm-|zram)/;
const DEVICE_NAME = /^[a-z][a-z0-9]{0,31}$/;

export interface MediumCandidate {
  /** The kernel's name of the block device (sdb, sdb1, vdb): also the mount point's name. */
  name: string;
  /** Its /dev path. */
  device: string;
}

const read = (path: string) => readFileSync(path, 'utf8').trim();

/**
 * The block devices that may hold update media: every disk in `sys`/block but the device's own
 * (`own`, a kernel name such as vda) and loop, ram, device-mapper and zram devices; of a disk with
 * partitions, its partitions, else the whole disk. Devices of size 0 (an empty card reader) are
 * left out. Names that are not plain kernel names are ignored.
 */
export function findMediaCandidates(
  own: string | undefined,
  options: { sys?: string; dev?: string } = {},
): MediumCandidate[] {
  const sys = options.sys ?? '/sys';
  const dev = options.dev ?? '/dev';
  const out: MediumCandidate[] = [];
  let disks: string[];
  try {
    disks = readdirSync(join(sys, 'block')).sort();
  } catch {
    return [];
  }
  const sized = (dir: string) => {
    try {
      return Number(read(join(dir, 'size'))) > 0;
    } catch {
      return false;
    }
  };
  for (const disk of disks) {
    if (disk === own || NOT_MEDIA.test(disk) || !DEVICE_NAME.test(disk)) continue;
    const dir = join(sys, 'block', disk);
    let entries: string[];
    try {
      entries = readdirSync(dir).sort();
    } catch {
      continue;
    }
    const partitions = entries.filter(
      (name) => DEVICE_NAME.test(name) && existsSync(join(dir, name, 'partition')),
    );
    if (partitions.length === 0) {
      if (sized(dir)) out.push({ name: disk, device: join(dev, disk) });
      continue;
    }
    for (const p of partitions) if (sized(join(dir, p))) out.push({ name: p, device: join(dev, p) });
  }
  return out;
}

/**
 * Whether the first sector looks like a FAT boot sector: the 0x55AA signature, a jump, 512-4096
 * byte sectors, and `FAT` where FAT12/16 (offset 54) or FAT32 (offset 82) name their type.
 */
export function looksLikeFat(sector: Buffer): boolean {
  if (sector.length < 512 || sector[510] !== 0x55 || sector[511] !== 0xaa) return false;
  if (sector[0] !== 0xeb && sector[0] !== 0xe9) return false;
  const bytesPerSector = sector.readUInt16LE(11);
  if (![512, 1024, 2048, 4096].includes(bytesPerSector)) return false;
  return sector.toString('latin1', 54, 57) === 'FAT' || sector.toString('latin1', 82, 87) === 'FAT32';
}

function firstSector(device: string): Buffer {
  const fd = openSync(device, 'r');
  try {
    const buffer = Buffer.alloc(512);
    const n = readFullySync(fd, buffer, 0);
    return buffer.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/**
 * Looks at every candidate medium once, applying what one carries through `checker` (the one
 * check that also serves a followed registry tag: one at a time, a digest equal to the running
 * one or refused before is skipped). What a medium was found to be is said on the console once
 * for as long as it stays in: not FAT, no seal-update, or not readable.
 */
export class MediaWatcher {
  readonly #device: Device;
  readonly #checker: UpdateChecker;
  readonly #own: string | undefined;
  readonly #sys: { sys?: string; dev?: string };
  /** The last thing said of each medium, by name: said again only when it changes. */
  readonly #said = new Map<string, string>();
  /** The system last tried from each medium, by name. */
  readonly #tried = new Map<string, string>();

  constructor(
    device: Device,
    checker: UpdateChecker,
    own: string | undefined,
    sys: { sys?: string; dev?: string } = {},
  ) {
    this.#device = device;
    this.#checker = checker;
    this.#own = own;
    this.#sys = sys;
  }

  #say(name: string, text: string): void {
    if (this.#said.get(name) === text) return;
    this.#said.set(name, text);
    this.#device.log.say(text);
  }

  /** One look at the media (skipped while another check runs). Never throws. */
  async scan(): Promise<void> {
    await this.#checker.exclusive(async () => {
      const candidates = findMediaCandidates(this.#own, this.#sys);
      const present = new Set(candidates.map((c) => c.name));
      for (const seen of [this.#said, this.#tried])
        for (const name of [...seen.keys()]) if (!present.has(name)) seen.delete(name);
      for (const c of candidates) await this.#look(c);
    });
  }

  async #look(c: MediumCandidate): Promise<void> {
    let sector: Buffer;
    try {
      sector = firstSector(c.device);
    } catch (error) {
      this.#say(c.name, `media: ${c.name} skipped: cannot be read (${(error as Error).message})`);
      return;
    }
    if (!looksLikeFat(sector)) {
      this.#say(c.name, `media: ${c.name} skipped: not a FAT filesystem`);
      return;
    }
    const at = join(MEDIA_MOUNT, c.name);
    const sys = system();
    try {
      mkdirSync(at, { recursive: true });
      sys.mount(c.device, at, 'vfat', MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC, 'uid=0,gid=0,umask=0222');
    } catch (error) {
      this.#say(c.name, `media: ${c.name} skipped: not mountable as FAT (${(error as Error).message})`);
      try {
        rmdirSync(at);
      } catch {}
      return;
    }
    try {
      if (!existsSync(join(at, MEDIA_DIR))) {
        this.#say(c.name, `media: ${c.name} skipped: no ${MEDIA_DIR}/ at its root`);
        return;
      }
      const source = `oci:${at}/${MEDIA_DIR}:${MEDIA_TAG}`;
      const outcome = await this.#checker.check(source, {
        onFailure: (message) =>
          this.#say(c.name, `media: ${c.name} skipped: its ${MEDIA_DIR}/ cannot be read (${message})`),
        // A system tried from this medium is not tried again while it stays in (a corrupt blob
        // would fail the same way every time).
        seen: (digest) => {
          if (this.#tried.get(c.name) === digest) return true;
          this.#tried.set(c.name, digest);
          return false;
        },
      });
      if (outcome !== 'failed') this.#said.set(c.name, `checked ${outcome}`);
    } finally {
      try {
        sys.umount(at, 0);
      } catch {
        try {
          sys.umount(at, MNT_DETACH);
        } catch {}
      }
      try {
        rmdirSync(at);
      } catch {}
    }
  }
}

/** Looks for media every `intervalMs` (and once at once). */
export function watchMedia(
  device: Device,
  checker: UpdateChecker,
  own: string | undefined,
  intervalMs: number,
): NodeJS.Timeout {
  const watcher = new MediaWatcher(device, checker, own);
  void watcher.scan();
  return setInterval(() => void watcher.scan(), intervalMs);
}
