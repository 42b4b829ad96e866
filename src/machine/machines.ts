/**
 * `seal machine`: Seal devices as qemu VMs that persist between runs — Project Machine's
 * `machine` for Seal systems, and the harness of the end-to-end tests.
 *
 * A machine is a directory, `$SEAL_MACHINES/NAME` (else `$XDG_DATA_HOME/seal/machines/NAME`,
 * else `~/.local/share/seal/machines/NAME`), mode 0700:
 *
 *   machine.json    what it is made of (below); written once, atomically
 *   disk.img        its virtio disk: made by `seal install`, a copy of a given image, or blank
 *   esp.img         a boot disk with the UKI, when the UKI is not installed on disk.img
 *   vars.fd         its UEFI varstore (a copy of one enrolled by `seal secureboot enroll`)
 *   (media)         a raw disk image given by path (`--media`, `seal machine media`): attached
 *                   read-only as a further virtio disk, as update media are plugged into a device
 *   tpm/            its swtpm's state (provisioned at creation when asked: the factory step)
 *   console.log     the serial console of the current or last run (console.log.1: the one before)
 *   qemu.pid, swtpm.pid, qmp.sock, swtpm.ctrl, swtpm.log   while it runs
 *
 * A disk, varstore or TPM state may instead be used in place (`inPlace`): the machine then writes
 * to it and `remove` leaves it; the device tests boot their disks this way.
 *
 * Running: swtpm first (control socket for qemu, `--terminate` so that it ends with qemu's
 * connection), then qemu with OVMF's Secure Boot code, the varstore, the disk(s), the TPM, the
 * console to the log, a QMP socket and a pid file; in the foreground (console also on stdout,
 * the call returns when qemu ends) or daemonized (qemu forks once set up; swtpm runs in its own
 * session). State is read from the pid files and checked against /proc (the process must be
 * qemu or swtpm started for this machine, not a zombie), so a stale file never makes a machine
 * look running. Stopping asks the guest to power off (ACPI, through QMP), then quits qemu after
 * the timeout, then kills it.
 *
 * Network: none unless asked; then only qemu's user network with `restrict=on` — the guest
 * reaches nothing but a registry (at 10.0.2.100:PORT in the guest) and an attestation verifier
 * (at 10.0.2.101:PORT) on 127.0.0.1, each through a guestfwd, and host ports bound to 127.0.0.1
 * reach guest ports (hostfwd).
 *
 * The factory step provisions the new TPM with a device key given as a file, or with a
 * TPM-resident identity key (`identity`): made in the machine's TPM, certified by the PKI's
 * device CA (the certificate written to the PKI as `seal pki device new --public-key` does),
 * then provisioned — what a device needs to attest (`seal.attest`).
 */
import { execFile } from 'node:child_process';
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import {
  accessSync,
  closeSync,
  constants,
  copyFileSync,
  existsSync,
  fsyncSync,
  ftruncateSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { Varstore } from '../efi/index.ts';
import { newDevice } from '../pki/index.ts';
import type { OpenOptions } from '../store/index.ts';
import { createIdentity, provision, Tpm } from '../tpm/index.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { readFullySync } from '../util/read.ts';
import { writeFullySync } from '../util/write.ts';
import { writeBootDisk } from './boot-disk.ts';
import { install } from './install.ts';
import { OVMF_CODE_SECURE_BOOT, type QemuOptions, type QemuResult, qemuArguments, runQemu } from './qemu.ts';
import { Qmp } from './qmp.ts';
import { MachineError, Swtpm } from './swtpm.ts';

const run = promisify(execFile);
const MiB = 1 << 20;

/** Machine names: a letter or digit, then letters, digits, `.`, `_`, `-`; at most 63. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
/** Where the guest sees the registry forwarded with `registry`. */
export const REGISTRY_GUEST_ADDRESS = '10.0.2.100';
/** Where the guest sees the attestation verifier forwarded with `attest`. */
export const ATTEST_GUEST_ADDRESS = '10.0.2.101';
/** Unix socket paths are limited to 108 bytes with their NUL. */
const MAX_SOCKET_PATH = 107;

export const FILES = {
  config: 'machine.json',
  disk: 'disk.img',
  esp: 'esp.img',
  vars: 'vars.fd',
  tpm: 'tpm',
  console: 'console.log',
  previousConsole: 'console.log.1',
  qemuPid: 'qemu.pid',
  swtpmPid: 'swtpm.pid',
  swtpmLog: 'swtpm.log',
  qmp: 'qmp.sock',
  swtpmControl: 'swtpm.ctrl',
} as const;

/** A file of the machine: its own (a name in its directory) or used in place (an absolute path). */
export interface MachineFile {
  path: string;
  owned: boolean;
}

/** machine.json. */
export interface MachineConfig {
  format: 1;
  name: string;
  /** The UKI given at creation (absolute), shown by `list`; null when the disk brought its own. */
  uki: string | null;
  /** The UKI boots from the machine's own boot disk (esp.img) rather than from the disk. */
  bootDisk: boolean;
  disk: MachineFile;
  vars: MachineFile;
  tpm: MachineFile | null;
  /** MiB. */
  memory: number;
  cpus: number;
  /** TCG (emulation, the default) or KVM (where the host offers it, with SMM). */
  accel: 'tcg' | 'kvm';
  /** A registry on 127.0.0.1:hostPort, seen by the guest at REGISTRY_GUEST_ADDRESS:hostPort. */
  registry: { hostPort: number } | null;
  /** An attestation verifier on 127.0.0.1:hostPort, seen by the guest at ATTEST_GUEST_ADDRESS:hostPort. */
  attest: { hostPort: number } | null;
  /** Host 127.0.0.1:hostPort → guest port. */
  forwards: { hostPort: number; guestPort: number }[];
  /** A raw disk image (absolute path) attached read-only as a further virtio disk: update media. */
  media: string | null;
}

export interface CreateOptions {
  name: string;
  /** The machines directory (default: `machinesRoot()`). */
  root?: string;
  /** The signed UKI: installed with `manifest`, else booted from a boot disk of its own. */
  uki?: string;
  /** A varstore enrolled with the product's Secure Boot keys (copied unless `inPlace`). */
  vars: { path: string; inPlace?: boolean };
  /**
   * `seal install` of this signed system onto the machine's new disk, verified with `ca`; with
   * `bootManager` (signed systemd-boot), its UKI is a boot entry (the system's own, or `uki`).
   */
  install?: { manifest: string; ca?: string; transport?: OpenOptions; bootManager?: string };
  /** An existing disk image (copied, sparse, unless `inPlace`). */
  disk?: { path: string; inPlace?: boolean };
  /** Bytes of a new disk (default 4 GiB, sparse). */
  diskSize?: number;
  /** MiB (default 2048). */
  memory?: number;
  /** Default 1. */
  cpus?: number;
  /** Default TCG: /dev/kvm may exist where KVM cannot run OVMF's Secure Boot (no SMM). */
  accel?: 'tcg' | 'kvm';
  /** A software TPM of its own (default), an existing swtpm state directory used in place, or none. */
  tpm?: 'swtpm' | 'none' | { stateDir: string; inPlace: true };
  /**
   * The factory step on the machine's new TPM (`seal tpm provision`): with the device's key and
   * certificate files, or (`identity`) with a TPM-resident identity key made there and certified
   * by the device CA of the PKI directory `pki` (`seal pki init`), as device `serial` of `product`.
   */
  provision?:
    | { policyKey: string; deviceCert: string; deviceKey: string }
    | { policyKey: string; identity: { pki: string; product: string; serial: string } };
  /** Port of a registry on 127.0.0.1 the guest may reach. */
  registry?: number;
  /** Port of an attestation verifier (`seal attest serve`) on 127.0.0.1 the guest may reach. */
  attest?: number;
  forwards?: { hostPort: number; guestPort: number }[];
  /** A raw disk image attached read-only as a further virtio disk (used in place, never written). */
  media?: string;
}

export interface MachineStatus {
  name: string;
  state: 'running' | 'stopped' | 'broken';
  dir: string;
  qemuPid?: number;
  swtpmPid?: number;
  disk?: string;
  uki?: string | null;
  memory?: number;
  cpus?: number;
  tpm?: boolean;
  network?: { registry: string | null; attest: string | null; forwards: string[] };
  /** The removable medium attached (a raw image, read-only), or null. */
  media?: string | null;
  /** Why the machine's configuration cannot be read (state `broken`). */
  problem?: string;
}

export interface StartOptions {
  /** Return once qemu runs (daemonized) instead of waiting for it to end. */
  detach?: boolean;
  /** Foreground: stop the machine after this long (default: no limit). */
  timeoutMs?: number;
  /** Foreground: stop the machine once the console shows this. */
  stopOn?: RegExp;
  /** Foreground: console output as it arrives (raw text, carriage returns removed). */
  onOutput?: (text: string) => void;
  /** Foreground: stops the machine when aborted (SIGTERM to qemu). */
  signal?: AbortSignal;
  /** Foreground: the console output returned is at most this many characters, the latest (default all). */
  outputLimit?: number;
  /** A guest reboot ends qemu instead of resetting the machine. */
  noReboot?: boolean;
}

export interface StopResult {
  /** It was running. */
  wasRunning: boolean;
  /** How qemu ended: the guest powered off, qemu quit when told, or it was killed. */
  how?: 'powered off' | 'quit' | 'killed';
}

/** The directory machines live in. */
export function machinesRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SEAL_MACHINES) return resolve(env.SEAL_MACHINES);
  const data =
    env.XDG_DATA_HOME && isAbsolute(env.XDG_DATA_HOME) ? env.XDG_DATA_HOME : join(homedir(), '.local/share');
  return join(data, 'seal', 'machines');
}

/** Refuses a name that is not a plain word (no path separators, no dot names, no options). */
export function checkName(name: string): string {
  if (!NAME.test(name))
    throw new MachineError(
      'MACHINE_NAME',
      `${JSON.stringify(name)} is not a machine name (a letter or digit, then letters, digits, ".", "_" or "-"; at most 63)`,
      { subject: name },
    );
  return name;
}

// ---------------------------------------------------------------------------------------------
// Processes

/** The argument vector of a live (not zombie) process, or undefined. */
function processArgs(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === 'Z' || state === 'X') return undefined;
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
  } catch {
    return undefined;
  }
}

/** The process named by `pidFile` when it is alive and is `program` started with that pid file. */
function ownedProcess(pidFile: string, program: RegExp, marker: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(pidFile, 'utf8').trim();
  } catch {
    return undefined;
  }
  if (!/^\d{1,10}$/.test(text)) return undefined;
  const pid = Number(text);
  const args = processArgs(pid);
  if (!args?.length || !program.test(args[0]!.split('/').at(-1)!)) return undefined;
  return args.includes(marker) ? pid : undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until `alive()` is false, at most `ms`; says whether it ended. */
async function waitGone(alive: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (alive()) {
    if (Date.now() >= deadline) return false;
    await sleep(100);
  }
  return true;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone already
  }
}

/** The absolute path of `program` on PATH, or undefined. */
function onPath(program: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!isAbsolute(dir)) continue;
    const candidate = join(dir, program);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Files

/** Copies a regular file, leaving holes where the source reads as zeros (disk images are sparse). */
function copySparse(source: string, target: string): void {
  const st = statSync(source);
  if (!st.isFile())
    throw new MachineError('MACHINE_INVALID_OPTION', `${source} is not a disk image file (use it in place)`, {
      subject: source,
    });
  const input = openSync(source, 'r');
  try {
    const output = openSync(target, 'wx', 0o600);
    try {
      const chunk = Buffer.alloc(MiB);
      const zeros = Buffer.alloc(MiB);
      for (let at = 0; at < st.size; at += MiB) {
        const n = readFullySync(input, chunk, at);
        if (n === 0) break;
        const data = chunk.subarray(0, n);
        if (!data.equals(zeros.subarray(0, n))) writeFullySync(output, data, at);
      }
      ftruncateSync(output, st.size);
      fsyncSync(output);
    } finally {
      closeSync(output);
    }
  } finally {
    closeSync(input);
  }
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new MachineError('MACHINE_INVALID_OPTION', `${what} ${path}: ${(error as Error).message}`, {
      subject: path,
      cause: error,
    });
  }
}

/** The factory step on a TPM state directory: `seal tpm provision` on an swtpm of it. */
async function provisionTpm(stateDir: string, p: NonNullable<CreateOptions['provision']>): Promise<void> {
  const fail = (path: string, what: string, error: unknown) =>
    new MachineError('MACHINE_INVALID_OPTION', `${path} is not ${what}: ${(error as Error).message}`, {
      subject: path,
      cause: error,
    });
  const policyPem = readPem(p.policyKey, 'the product policy-signing key');
  let policyKey: ReturnType<typeof createPublicKey>;
  try {
    policyKey = policyPem.includes('CERTIFICATE')
      ? new X509Certificate(policyPem).publicKey
      : createPublicKey(policyPem);
  } catch (error) {
    throw fail(p.policyKey, 'a public key or certificate', error);
  }
  const certificate = (path: string): Buffer => {
    try {
      return Buffer.from(new X509Certificate(readPem(path, 'the device certificate')).raw);
    } catch (error) {
      if (error instanceof MachineError) throw error;
      throw fail(path, 'an X.509 certificate', error);
    }
  };
  let deviceCert: Buffer | undefined;
  let deviceKey: Buffer | undefined;
  if ('deviceKey' in p) {
    deviceCert = certificate(p.deviceCert);
    try {
      deviceKey = createPrivateKey(readPem(p.deviceKey, 'the device key')).export({
        type: 'pkcs8',
        format: 'der',
      }) as Buffer;
    } catch (error) {
      if (error instanceof MachineError) throw error;
      throw fail(p.deviceKey, 'an unencrypted private key', error);
    }
  } else if (!existsSync(join(p.identity.pki, 'device-ca.pem')))
    throw new MachineError(
      'MACHINE_INVALID_OPTION',
      `${p.identity.pki} is not a PKI directory with a device CA (seal pki init)`,
      { subject: p.identity.pki },
    );
  const swtpm = await Swtpm.start({ stateDir, mode: 'tcp' });
  try {
    const tpm = await Tpm.open(swtpm.address);
    try {
      if (!deviceCert && !('deviceKey' in p)) {
        // The identity key is made in this TPM (before provisioning sets the owner authorization),
        // and only its public half is certified.
        const id = await createIdentity(tpm);
        const issued = await newDevice(p.identity.pki, {
          product: p.identity.product,
          serial: p.identity.serial,
          publicKey: id.pem,
        });
        deviceCert = certificate(issued.certificate);
      }
      const result = await provision(tpm, {
        policyKey,
        deviceCert: deviceCert!,
        ...(deviceKey ? { deviceKey } : { deviceKeyInTpm: true }),
      });
      result.luksPassphrase?.fill(0);
    } finally {
      await tpm.close();
    }
  } finally {
    deviceKey?.fill(0);
    await swtpm.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// The configuration file

function configError(dir: string, message: string): MachineError {
  const path = join(dir, FILES.config);
  return new MachineError('MACHINE_CONFIG', `${path}: ${message}`, { subject: path });
}

function checkFile(dir: string, value: unknown, field: string): MachineFile {
  const f = value as MachineFile;
  if (!f || typeof f !== 'object' || typeof f.path !== 'string' || typeof f.owned !== 'boolean')
    throw configError(dir, `${field} is not {path, owned}`);
  if (f.owned ? !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(f.path) : !isAbsolute(f.path))
    throw configError(
      dir,
      `${field}.path ${JSON.stringify(f.path)} is not ${f.owned ? 'a file name' : 'absolute'}`,
    );
  return { path: f.path, owned: f.owned };
}

function checkPort(dir: string, value: unknown, field: string): number {
  if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > 65535)
    throw configError(dir, `${field} is not a TCP port`);
  return value as number;
}

/** Parses machine.json of the machine in `dir`, refusing anything but what `create` writes. */
export function parseConfig(text: string, dir: string, name: string): MachineConfig {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(text);
  } catch (error) {
    throw configError(dir, `not JSON: ${(error as Error).message}`);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw configError(dir, 'not a JSON object');
  if (doc.format !== 1) throw configError(dir, `format ${JSON.stringify(doc.format)} is not 1`);
  if (doc.name !== name) throw configError(dir, `it names the machine ${JSON.stringify(doc.name)}`);
  if (doc.uki !== null && (typeof doc.uki !== 'string' || !isAbsolute(doc.uki)))
    throw configError(dir, 'uki is not an absolute path or null');
  if (typeof doc.bootDisk !== 'boolean') throw configError(dir, 'bootDisk is not a boolean');
  if (!Number.isInteger(doc.memory) || (doc.memory as number) < 64 || (doc.memory as number) > 1 << 20)
    throw configError(dir, 'memory is not a number of MiB (64 to 1048576)');
  if (!Number.isInteger(doc.cpus) || (doc.cpus as number) < 1 || (doc.cpus as number) > 64)
    throw configError(dir, 'cpus is not 1 to 64');
  if (doc.accel !== 'tcg' && doc.accel !== 'kvm') throw configError(dir, 'accel is not tcg or kvm');
  const registry = doc.registry as { hostPort?: unknown } | null;
  if (registry !== null && (typeof registry !== 'object' || Array.isArray(registry)))
    throw configError(dir, 'registry is not {hostPort} or null');
  // Absent in a machine made before verifiers could be forwarded: none.
  const attest = (doc.attest ?? null) as { hostPort?: unknown } | null;
  if (attest !== null && (typeof attest !== 'object' || Array.isArray(attest)))
    throw configError(dir, 'attest is not {hostPort} or null');
  if (!Array.isArray(doc.forwards) || doc.forwards.length > 64)
    throw configError(dir, 'forwards is not a list');
  // Absent in the files of machines made before media existed.
  if (
    doc.media !== undefined &&
    doc.media !== null &&
    (typeof doc.media !== 'string' || !isAbsolute(doc.media))
  )
    throw configError(dir, 'media is not an absolute path or null');
  return {
    format: 1,
    name,
    uki: doc.uki as string | null,
    bootDisk: doc.bootDisk,
    disk: checkFile(dir, doc.disk, 'disk'),
    vars: checkFile(dir, doc.vars, 'vars'),
    tpm: doc.tpm === null ? null : checkFile(dir, doc.tpm, 'tpm'),
    memory: doc.memory as number,
    cpus: doc.cpus as number,
    accel: doc.accel,
    registry: registry === null ? null : { hostPort: checkPort(dir, registry.hostPort, 'registry.hostPort') },
    attest: attest === null ? null : { hostPort: checkPort(dir, attest.hostPort, 'attest.hostPort') },
    forwards: (doc.forwards as { hostPort?: unknown; guestPort?: unknown }[]).map((f, i) => {
      if (!f || typeof f !== 'object') throw configError(dir, `forwards[${i}] is not {hostPort, guestPort}`);
      return {
        hostPort: checkPort(dir, f.hostPort, `forwards[${i}].hostPort`),
        guestPort: checkPort(dir, f.guestPort, `forwards[${i}].guestPort`),
      };
    }),
    media: (doc.media as string | undefined) ?? null,
  };
}

function checkForwards(
  forwards: { hostPort: number; guestPort: number }[],
  registry?: number,
  attest?: number,
): void {
  const hostPorts = new Set<number>();
  for (const f of forwards)
    for (const [port, what] of [
      [f.hostPort, 'host port'],
      [f.guestPort, 'guest port'],
    ] as const) {
      if (!Number.isInteger(port) || port < 1 || port > 65535)
        throw new MachineError('MACHINE_INVALID_OPTION', `${what} ${port} is not a TCP port (1-65535)`);
      if (what === 'host port') {
        if (hostPorts.has(port))
          throw new MachineError('MACHINE_INVALID_OPTION', `host port ${port} is forwarded twice`);
        hostPorts.add(port);
      }
    }
  if (registry !== undefined && (!Number.isInteger(registry) || registry < 1 || registry > 65535))
    throw new MachineError('MACHINE_INVALID_OPTION', `registry port ${registry} is not a TCP port (1-65535)`);
  if (attest !== undefined && (!Number.isInteger(attest) || attest < 1 || attest > 65535))
    throw new MachineError('MACHINE_INVALID_OPTION', `verifier port ${attest} is not a TCP port (1-65535)`);
}

/** Refuses media that are not a regular file (a raw disk image). */
function checkMedia(path: string): void {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
  } catch {
    throw new MachineError('MACHINE_INVALID_OPTION', `no media image at ${path}`, { subject: path });
  }
  if (!st.isFile() || st.size === 0)
    throw new MachineError('MACHINE_INVALID_OPTION', `${path} is not a raw disk image file`, {
      subject: path,
    });
}

/** Refuses a varstore that is not OVMF's or in which Secure Boot would not be enforced. */
function checkVarstore(path: string): void {
  let store: Varstore;
  try {
    store = Varstore.parse(readFileSync(path), path);
  } catch (error) {
    throw new MachineError('MACHINE_INVALID_OPTION', `${path}: ${(error as Error).message}`, {
      subject: path,
      cause: error,
    });
  }
  const names = new Set(store.variables().map((v) => v.name));
  for (const name of ['PK', 'KEK', 'db'])
    if (!names.has(name))
      throw new MachineError(
        'MACHINE_INVALID_OPTION',
        `${path} has no ${name}: Secure Boot would not be enforced (enroll the keys with seal secureboot enroll)`,
        { subject: path },
      );
}

// ---------------------------------------------------------------------------------------------

export class Machine {
  readonly name: string;
  readonly dir: string;
  readonly config: MachineConfig;

  private constructor(dir: string, config: MachineConfig) {
    this.dir = dir;
    this.name = config.name;
    this.config = config;
  }

  /** The machine `name` in `root`. */
  static open(name: string, root = machinesRoot()): Machine {
    const dir = join(root, checkName(name));
    let text: string;
    try {
      if (!lstatSync(dir).isDirectory()) throw new Error('not a directory');
      text = readFileSync(join(dir, FILES.config), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' && !existsSync(dir))
        throw new MachineError('MACHINE_NOT_FOUND', `no machine ${name} in ${root}`, { subject: name });
      throw configError(dir, (error as Error).message);
    }
    return new Machine(dir, parseConfig(text, dir, name));
  }

  /** Every machine in `root`, by name. */
  static list(root = machinesRoot()): MachineStatus[] {
    let names: string[];
    try {
      names = readdirSync(root)
        .filter((n) => NAME.test(n))
        .sort();
    } catch {
      return [];
    }
    const out: MachineStatus[] = [];
    for (const name of names) {
      const dir = join(root, name);
      try {
        if (!lstatSync(dir).isDirectory()) continue;
      } catch {
        continue; // removed meanwhile
      }
      try {
        out.push(Machine.open(name, root).status());
      } catch (error) {
        out.push({ ...processState(dir), name, dir, state: 'broken', problem: (error as Error).message });
      }
    }
    return out;
  }

  /**
   * Makes a machine. Everything is prepared in a hidden directory next to the final one and
   * renamed into place last: a failed creation leaves nothing behind.
   */
  static async create(options: CreateOptions): Promise<Machine> {
    const name = checkName(options.name);
    const root = resolve(options.root ?? machinesRoot());
    const final = join(root, name);
    const memory = options.memory ?? 2048;
    const cpus = options.cpus ?? 1;
    if (!Number.isInteger(memory) || memory < 64 || memory > 1 << 20)
      throw new MachineError('MACHINE_INVALID_OPTION', `memory ${memory} MiB is not 64 MiB to 1 TiB`);
    if (!Number.isInteger(cpus) || cpus < 1 || cpus > 64)
      throw new MachineError('MACHINE_INVALID_OPTION', `${cpus} CPUs: give 1 to 64`);
    if (options.install && options.disk)
      throw new MachineError(
        'MACHINE_INVALID_OPTION',
        'a machine gets an installed disk or an existing one, not both',
      );
    if (
      options.diskSize !== undefined &&
      !(Number.isSafeInteger(options.diskSize) && options.diskSize >= MiB)
    )
      throw new MachineError(
        'MACHINE_INVALID_OPTION',
        `a disk of ${options.diskSize} bytes: give 1 MiB or more`,
      );
    if (options.disk && options.diskSize !== undefined)
      throw new MachineError('MACHINE_INVALID_OPTION', 'an existing disk keeps its size');
    if (!options.disk && !options.uki && !options.install)
      throw new MachineError(
        'MACHINE_INVALID_OPTION',
        'a machine needs a UKI to boot, or a disk that has one',
      );
    if (options.provision && (options.tpm ?? 'swtpm') !== 'swtpm')
      throw new MachineError('MACHINE_INVALID_OPTION', 'provisioning is done on a TPM of the machine’s own');
    if (options.provision && 'identity' in options.provision) {
      // Refused now rather than after the disk is installed.
      const cert = join(
        options.provision.identity.pki,
        'devices',
        `${options.provision.identity.serial}.pem`,
      );
      if (existsSync(cert))
        throw new MachineError(
          'MACHINE_INVALID_OPTION',
          `${cert} exists: device ${options.provision.identity.serial} has a certificate already`,
          { subject: cert },
        );
    }
    const forwards = options.forwards ?? [];
    checkForwards(forwards, options.registry, options.attest);
    for (const [path, what] of [
      [options.uki, 'UKI'],
      [options.vars.path, 'varstore'],
      [options.disk?.path, 'disk'],
    ] as const)
      if (path !== undefined && !existsSync(path))
        throw new MachineError('MACHINE_INVALID_OPTION', `no ${what} at ${path}`, { subject: path });
    checkVarstore(options.vars.path);
    if (options.media !== undefined) checkMedia(options.media);
    for (const socket of [FILES.qmp, FILES.swtpmControl])
      if (join(final, socket).length > MAX_SOCKET_PATH)
        throw new MachineError(
          'MACHINE_INVALID_OPTION',
          `${join(final, socket)} is too long for a Unix socket: use a shorter name or SEAL_MACHINES`,
          { subject: final },
        );

    mkdirSync(root, { recursive: true, mode: 0o700 });
    if (existsSync(final))
      throw new MachineError('MACHINE_EXISTS', `machine ${name} exists (${final})`, { subject: name });
    const staging = mkdtempSync(join(root, `.${name}.creating-`));
    try {
      const at = (file: string) => join(staging, file);
      const vars: MachineFile = options.vars.inPlace
        ? { path: resolve(options.vars.path), owned: false }
        : { path: FILES.vars, owned: true };
      if (vars.owned) copyFileSync(options.vars.path, at(FILES.vars), constants.COPYFILE_EXCL);

      let disk: MachineFile;
      if (options.disk?.inPlace) {
        disk = { path: resolve(options.disk.path), owned: false };
      } else {
        disk = { path: FILES.disk, owned: true };
        if (options.disk) copySparse(options.disk.path, at(FILES.disk));
        else if (options.install)
          await install({
            disk: at(FILES.disk),
            manifest: options.install.manifest,
            ...(options.uki ? { uki: options.uki } : {}),
            ...(options.install.bootManager ? { bootManager: options.install.bootManager } : {}),
            ca: options.install.ca,
            size: options.diskSize,
            transport: options.install.transport,
          });
        else {
          const fd = openSync(at(FILES.disk), 'wx', 0o600);
          try {
            ftruncateSync(fd, options.diskSize ?? 4096 * MiB);
          } finally {
            closeSync(fd);
          }
        }
      }
      const bootDisk = options.uki !== undefined && !options.install;
      if (bootDisk) await writeBootDisk(at(FILES.esp), options.uki!);

      let tpm: MachineFile | null = null;
      const choice = options.tpm ?? 'swtpm';
      if (choice === 'swtpm') {
        tpm = { path: FILES.tpm, owned: true };
        mkdirSync(at(FILES.tpm), { mode: 0o700 });
        if (options.provision) await provisionTpm(at(FILES.tpm), options.provision);
      } else if (choice !== 'none') {
        if (!statSync(choice.stateDir).isDirectory())
          throw new MachineError('MACHINE_INVALID_OPTION', `${choice.stateDir} is not a directory`, {
            subject: choice.stateDir,
          });
        tpm = { path: resolve(choice.stateDir), owned: false };
      }

      const config: MachineConfig = {
        format: 1,
        name,
        uki: options.uki ? resolve(options.uki) : null,
        bootDisk,
        disk,
        vars,
        tpm,
        memory,
        cpus,
        accel: options.accel ?? 'tcg',
        registry: options.registry ? { hostPort: options.registry } : null,
        attest: options.attest ? { hostPort: options.attest } : null,
        forwards,
        media: options.media !== undefined ? resolve(options.media) : null,
      };
      // What qemu will be given is checked now (paths it would split, a relay it needs).
      qemuArguments(new Machine(final, config).qemuOptions());
      await writeFileAtomic(at(FILES.config), `${JSON.stringify(config, null, 2)}\n`, 0o600);
      try {
        renameSync(staging, final);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOTEMPTY' || code === 'EEXIST')
          throw new MachineError('MACHINE_EXISTS', `machine ${name} exists (${final})`, { subject: name });
        throw error;
      }
      return new Machine(final, config);
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
  }

  /** A file of the machine by its name in FILES, or a MachineFile resolved. */
  path(file: string | MachineFile): string {
    if (typeof file === 'string') return join(this.dir, file);
    return file.owned ? join(this.dir, file.path) : file.path;
  }

  /** Running or stopped, with the processes' ids, and what it is made of. */
  status(): MachineStatus {
    const c = this.config;
    return {
      name: this.name,
      ...processState(this.dir),
      dir: this.dir,
      disk: this.path(c.disk),
      uki: c.uki,
      memory: c.memory,
      cpus: c.cpus,
      tpm: c.tpm !== null,
      network: {
        registry: c.registry
          ? `${REGISTRY_GUEST_ADDRESS}:${c.registry.hostPort} -> 127.0.0.1:${c.registry.hostPort}`
          : null,
        attest: c.attest
          ? `${ATTEST_GUEST_ADDRESS}:${c.attest.hostPort} -> 127.0.0.1:${c.attest.hostPort}`
          : null,
        forwards: c.forwards.map((f) => `127.0.0.1:${f.hostPort} -> guest:${f.guestPort}`),
      },
      media: c.media,
    };
  }

  /**
   * Attaches a raw disk image as the machine's removable medium (read-only, used in place), or
   * ejects it (null). Only while the machine is stopped: qemu takes its disks when it starts.
   */
  async setMedia(path: string | null): Promise<void> {
    const state = processState(this.dir);
    if (state.state === 'running')
      throw new MachineError(
        'MACHINE_RUNNING',
        `machine ${this.name} is running: stop it to change its media`,
        { subject: this.name },
      );
    if (path !== null) checkMedia(path);
    const config: MachineConfig = { ...this.config, media: path === null ? null : resolve(path) };
    qemuArguments(new Machine(this.dir, config).qemuOptions());
    await writeFileAtomic(this.path(FILES.config), `${JSON.stringify(config, null, 2)}\n`, 0o600);
    this.config.media = config.media;
  }

  /** How qemu is run for this machine (exported for tests and `--dry-run`-like printing). */
  qemuOptions(options: { detach?: boolean; noReboot?: boolean } = {}): QemuOptions {
    const c = this.config;
    const disks: NonNullable<QemuOptions['disks']> = [];
    if (c.bootDisk) disks.push({ path: this.path(FILES.esp), virtio: true, bootIndex: 1, readonly: true });
    disks.push({ path: this.path(c.disk), virtio: true, ...(c.bootDisk ? { bootIndex: 2 } : {}) });
    // Last: the firmware and the guest find the machine's own disks first.
    if (c.media) disks.push({ path: c.media, virtio: true, readonly: true, format: 'raw' });
    let network: QemuOptions['network'];
    const relayed = [
      ...(c.registry
        ? [{ address: REGISTRY_GUEST_ADDRESS, port: c.registry.hostPort, what: 'registry' }]
        : []),
      ...(c.attest ? [{ address: ATTEST_GUEST_ADDRESS, port: c.attest.hostPort, what: 'verifier' }] : []),
    ];
    if (relayed.length || c.forwards.length) {
      network = { hostForwards: c.forwards };
      if (relayed.length) {
        const socat = onPath('socat');
        if (!socat)
          throw new MachineError(
            'MACHINE_INVALID_OPTION',
            `the ${relayed[0]!.what} forward relays each guest connection with socat: install it (Debian: socat)`,
          );
        network.guestForwards = relayed.map((r) => ({
          guestAddress: r.address,
          guestPort: r.port,
          hostPort: r.port,
          relay: [socat, 'STDIO', `TCP:127.0.0.1:${r.port}`],
        }));
      }
    }
    return {
      accel: c.accel,
      firmware: { code: OVMF_CODE_SECURE_BOOT, vars: this.path(c.vars) },
      disks,
      memory: c.memory,
      cpus: c.cpus,
      console: { log: this.path(FILES.console), ...(options.detach ? { file: true } : {}) },
      qmp: this.path(FILES.qmp),
      pidFile: this.path(FILES.qemuPid),
      daemonize: options.detach ?? false,
      reboot: !options.noReboot,
      ...(network ? { network } : {}),
    };
  }

  /**
   * Starts the machine: in the foreground, resolving when qemu ends (with what the console
   * showed); detached, resolving once qemu runs on its own (with its process id).
   */
  async start(options: StartOptions & { detach: true }): Promise<{ pid: number }>;
  async start(options?: StartOptions): Promise<QemuResult>;
  async start(options: StartOptions = {}): Promise<QemuResult | { pid: number }> {
    const state = processState(this.dir);
    if (state.state === 'running')
      throw new MachineError('MACHINE_RUNNING', `machine ${this.name} is running (qemu ${state.qemuPid})`, {
        subject: this.name,
      });
    if (state.swtpmPid) await stopProcess(state.swtpmPid, 2_000);
    for (const stale of [FILES.qmp, FILES.swtpmControl, FILES.qemuPid, FILES.swtpmPid])
      rmSync(this.path(stale), { force: true });
    const qemu = this.qemuOptions(options);
    qemuArguments(qemu); // refuses bad options before anything starts
    if (existsSync(this.path(FILES.console)))
      renameSync(this.path(FILES.console), this.path(FILES.previousConsole));

    const tpm = this.config.tpm
      ? await Swtpm.start({
          stateDir: this.path(this.config.tpm),
          mode: 'qemu',
          controlSocket: this.path(FILES.swtpmControl),
          pidFile: this.path(FILES.swtpmPid),
          logFile: this.path(FILES.swtpmLog),
          terminate: true,
          detached: options.detach ?? false,
        })
      : undefined;
    if (tpm) qemu.tpm = tpm;

    if (options.detach) {
      try {
        await run('qemu-system-x86_64', qemuArguments(qemu), { maxBuffer: 4 * MiB });
      } catch (error) {
        await tpm?.stop();
        for (const stale of [FILES.qmp, FILES.swtpmControl]) rmSync(this.path(stale), { force: true });
        const e = error as { stderr?: string; code?: unknown };
        throw new MachineError(
          'MACHINE_QEMU',
          `machine ${this.name}: qemu did not start: ${(e.stderr ?? '').trim().split('\n').at(-1) || (e.code === 'ENOENT' ? 'install qemu-system-x86' : String(error))}`,
          { subject: this.name, cause: error },
        );
      }
      const pid = processState(this.dir).qemuPid;
      if (!pid) {
        await tpm?.stop();
        throw new MachineError('MACHINE_QEMU', `machine ${this.name}: qemu started but is gone`, {
          subject: this.name,
        });
      }
      return { pid };
    }

    try {
      return await runQemu({
        ...qemu,
        timeoutMs: options.timeoutMs ?? Number.POSITIVE_INFINITY,
        ...(options.stopOn ? { stopOn: options.stopOn } : {}),
        ...(options.onOutput ? { onOutput: options.onOutput } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.outputLimit ? { outputLimit: options.outputLimit } : {}),
      });
    } finally {
      await tpm?.stop();
      for (const stale of [FILES.qmp, FILES.swtpmControl]) rmSync(this.path(stale), { force: true });
    }
  }

  /**
   * Stops the machine: the guest is asked to power off (ACPI power button, through QMP) and given
   * `timeoutMs` (0: not asked); then qemu is told to quit, then killed. Its swtpm ends with it.
   */
  async stop(options: { timeoutMs?: number } = {}): Promise<StopResult> {
    const state = processState(this.dir);
    const result: StopResult = { wasRunning: state.state === 'running' };
    const qemuPid = state.qemuPid;
    if (qemuPid) {
      const alive = () => processState(this.dir).qemuPid === qemuPid;
      const timeoutMs = options.timeoutMs ?? 30_000;
      let qmp: Qmp | undefined;
      try {
        qmp = await Qmp.connect(this.path(FILES.qmp));
      } catch {
        qmp = undefined;
      }
      try {
        if (timeoutMs > 0 && qmp) {
          await qmp.execute('system_powerdown').catch(() => {});
          if (await waitGone(alive, timeoutMs)) result.how = 'powered off';
        }
        if (!result.how) {
          if (qmp) await qmp.execute('quit').catch(() => {});
          else signal(qemuPid, 'SIGTERM');
          if (await waitGone(alive, 10_000)) result.how = 'quit';
        }
      } finally {
        qmp?.close();
      }
      if (!result.how) {
        signal(qemuPid, 'SIGKILL');
        await waitGone(alive, 10_000);
        result.how = 'killed';
      }
    }
    // swtpm ends when qemu's connection closes (--terminate); one left over is stopped.
    const swtpm = processState(this.dir).swtpmPid;
    if (swtpm) await stopProcess(swtpm, 5_000);
    for (const stale of [FILES.qmp, FILES.swtpmControl, FILES.qemuPid, FILES.swtpmPid])
      rmSync(this.path(stale), { force: true });
    return result;
  }

  /** Deletes the machine's directory (what it used in place stays); a running one only with `force`. */
  async remove(options: { force?: boolean } = {}): Promise<void> {
    await removeMachineDir(this.dir, this.name, options.force ?? false);
  }
}

/** The processes of the machine in `dir`, from its pid files checked against /proc. */
function processState(dir: string): Pick<MachineStatus, 'state' | 'qemuPid' | 'swtpmPid'> {
  const pidFile = join(dir, FILES.qemuPid);
  const swtpmPidFile = join(dir, FILES.swtpmPid);
  const qemuPid = ownedProcess(pidFile, /^qemu-system-/, pidFile);
  const swtpmPid = ownedProcess(swtpmPidFile, /^swtpm$/, `file=${swtpmPidFile}`);
  return {
    state: qemuPid ? 'running' : 'stopped',
    ...(qemuPid ? { qemuPid } : {}),
    ...(swtpmPid ? { swtpmPid } : {}),
  };
}

async function stopProcess(pid: number, graceMs: number): Promise<void> {
  const alive = () => processArgs(pid) !== undefined;
  if (await waitGone(alive, Math.min(graceMs, 1_000))) return;
  signal(pid, 'SIGTERM');
  if (await waitGone(alive, graceMs)) return;
  signal(pid, 'SIGKILL');
  await waitGone(alive, 5_000);
}

async function removeMachineDir(dir: string, name: string, force: boolean): Promise<void> {
  const state = processState(dir);
  if (state.state === 'running' || state.swtpmPid) {
    if (!force)
      throw new MachineError(
        'MACHINE_RUNNING',
        `machine ${name} is running: stop it first, or remove it with force`,
        {
          subject: name,
        },
      );
    if (state.qemuPid) {
      signal(state.qemuPid, 'SIGTERM');
      if (!(await waitGone(() => processArgs(state.qemuPid!) !== undefined, 10_000)))
        signal(state.qemuPid, 'SIGKILL');
    }
    if (state.swtpmPid) await stopProcess(state.swtpmPid, 5_000);
  }
  rmSync(dir, { recursive: true, force: true });
}

/** Removes the machine `name` in `root`, also one whose configuration cannot be read. */
export async function removeMachine(
  name: string,
  options: { root?: string; force?: boolean } = {},
): Promise<void> {
  const root = options.root ?? machinesRoot();
  const dir = join(root, checkName(name));
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(dir);
  } catch {
    throw new MachineError('MACHINE_NOT_FOUND', `no machine ${name} in ${root}`, { subject: name });
  }
  if (!st.isDirectory())
    throw new MachineError('MACHINE_NOT_FOUND', `${dir} is not a machine's directory`, { subject: name });
  await removeMachineDir(dir, name, options.force ?? false);
}
