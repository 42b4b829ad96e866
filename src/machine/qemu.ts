/**
 * A qemu x86-64 machine as a child process: UEFI firmware (OVMF, Secure Boot capable with SMM)
 * with a writable varstore, a FAT ESP from a directory, a software TPM attached through swtpm's
 * control socket, or a kernel booted directly; the serial console is collected (and, when asked,
 * logged to a file by qemu itself). Used by the tests that boot Seal's UKIs and by `seal machine`
 * (machines.ts), which also asks for a QMP socket, a pid file and a daemonized qemu. TCG unless
 * KVM is asked for; no network unless asked, and then only qemu's user network with
 * `restrict=on`, forwards to and from 127.0.0.1 only.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { MachineError, type Swtpm } from './swtpm.ts';

export const OVMF_CODE_SECURE_BOOT = '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd';
export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';

export interface QemuOptions {
  /** UEFI boot: the firmware code and a writable varstore file (the machine writes to it). */
  firmware?: { code: string; vars: string };
  /**
   * Directories served as FAT disks (qemu's vvfat): ESPs, e.g. with EFI/BOOT/BOOTX64.EFI. Several
   * are tried by the firmware in the order given (each a SATA disk with that boot index, serial
   * QM0000<n+1>).
   */
  esp?: string | string[];
  /**
   * Disk images, in order (IDE/SATA unless `virtio`: a Seal device's disk is virtio-blk). A
   * read-only virtio disk (a boot disk, removable media) is a `virtio-blk-pci` device of its own.
   */
  disks?: {
    path: string;
    readonly?: boolean;
    format?: 'raw' | 'qcow2';
    virtio?: boolean;
    /** The firmware's boot order for this (virtio) disk: 1 is tried first. */
    bootIndex?: number;
  }[];
  /** Direct kernel boot instead of firmware. */
  kernel?: { path: string; initrd?: string; cmdline?: string };
  /** A software TPM started in `qemu` mode. */
  tpm?: Swtpm;
  /** Guest memory in MiB (default 2048). */
  memory?: number;
  cpus?: number;
  /** Kill the machine after this long (default 300 s; Infinity: never); `timedOut` says so. */
  timeoutMs?: number;
  /** Keep only the latest this many characters of output (default all). */
  outputLimit?: number;
  /** Stop the machine as soon as the console shows this (e.g. a refusal the firmware prints). */
  stopOn?: RegExp;
  /** `tcg` (the default), `kvm`, or `auto`: KVM, falling back to TCG where KVM cannot start. */
  accel?: 'tcg' | 'kvm' | 'auto';
  /**
   * The serial console: on qemu's standard output (the default; collected by `runQemu`), copied
   * to `log` by qemu when given; or only written to the file `log` (`file: true`, required with
   * `daemonize`).
   */
  console?: { log?: string; file?: boolean };
  /** A QMP control socket (Unix) at this path, for `system_powerdown` and `quit`. */
  qmp?: string;
  /** qemu writes its process id here (and removes the file when it exits). */
  pidFile?: string;
  /** qemu detaches once the machine is set up (its parent exits 0), with no standard streams. */
  daemonize?: boolean;
  /** A guest reboot resets the machine instead of ending qemu (default: qemu exits). */
  reboot?: boolean;
  /** qemu's user network, with `restrict=on`: the guest reaches nothing but the forwards. */
  network?: UserNetwork;
  /** Further qemu arguments (network devices, monitors). */
  extraArgs?: string[];
  /** Called with console output as it arrives. */
  onOutput?: (text: string) => void;
  /** Stops the machine (SIGTERM: qemu closes its disks and exits) when aborted. */
  signal?: AbortSignal;
}

/** Forwards between the guest and 127.0.0.1 on the host, through qemu's user network. */
export interface UserNetwork {
  /**
   * Guest connections to `guestAddress:guestPort` are relayed to 127.0.0.1:`hostPort`, each by its
   * own `relay` process (qemu spawns `relay` with the connection as its standard input and
   * output). `relay` is an argv: absolute program path, then arguments without spaces or quotes.
   */
  guestForwards?: { guestAddress: string; guestPort: number; hostPort: number; relay: string[] }[];
  /** Connections to 127.0.0.1:`hostPort` on the host reach the guest's `guestPort`. */
  hostForwards?: { hostPort: number; guestPort: number }[];
}

export interface QemuResult {
  /** Everything the serial console and qemu printed, carriage returns removed. */
  output: string;
  /** qemu's exit code (null when killed). */
  exitCode: number | null;
  timedOut: boolean;
  /** The console matched `stopOn`, or `signal` was aborted, and the machine was stopped. */
  stopped: boolean;
}

/** A path that goes into a qemu `key=value,…` option, where a comma would start another key. */
function optionPath(path: string): string {
  if (path.includes(','))
    throw new MachineError('MACHINE_INVALID_OPTION', `${path}: qemu cannot take a path with a comma`, {
      subject: path,
    });
  return path;
}

function port(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1 || value > 65535)
    throw new MachineError('MACHINE_INVALID_OPTION', `${what} ${value} is not a TCP port (1-65535)`);
  return value;
}

/** `-netdev user,restrict=on,…` and its virtio NIC (without an option ROM: no network boot). */
function networkArguments(network: UserNetwork): string[] {
  const netdev = ['user', 'id=net0', 'restrict=on'];
  for (const f of network.hostForwards ?? [])
    netdev.push(`hostfwd=tcp:127.0.0.1:${port(f.hostPort, 'host port')}-:${port(f.guestPort, 'guest port')}`);
  for (const f of network.guestForwards ?? []) {
    if (!/^10\.0\.2\.(\d{1,3})$/.test(f.guestAddress) || Number(f.guestAddress.split('.')[3]) > 254)
      throw new MachineError(
        'MACHINE_INVALID_OPTION',
        `${f.guestAddress} is not an address of the guest network 10.0.2.0/24`,
      );
    if (!f.relay.length || !f.relay[0]!.startsWith('/') || f.relay.some((a) => !/^[\w./:=@+-]+$/.test(a)))
      throw new MachineError(
        'MACHINE_INVALID_OPTION',
        `the relay command ${JSON.stringify(f.relay)} must be an absolute program and plain words`,
      );
    port(f.hostPort, 'host port');
    netdev.push(`guestfwd=tcp:${f.guestAddress}:${port(f.guestPort, 'guest port')}-cmd:${f.relay.join(' ')}`);
  }
  return ['-netdev', netdev.join(','), '-device', 'virtio-net-pci,netdev=net0,romfile='];
}

/** The qemu command line for `options` (exported for tests and for printing). */
export function qemuArguments(options: QemuOptions): string[] {
  const accel = { tcg: ['-accel', 'tcg'], kvm: ['-accel', 'kvm'], auto: ['-accel', 'kvm', '-accel', 'tcg'] }[
    options.accel ?? 'tcg'
  ];
  if (!accel) throw new MachineError('MACHINE_INVALID_OPTION', `unknown accelerator ${options.accel}`);
  if (options.daemonize && !options.console?.file)
    throw new MachineError('MACHINE_INVALID_OPTION', 'a daemonized qemu logs its console to a file');
  const log = options.console?.log;
  if (options.console?.file && !log)
    throw new MachineError('MACHINE_INVALID_OPTION', 'a console written to a file needs the file');
  const serial = options.console?.file
    ? ['-chardev', `file,id=console0,path=${optionPath(log!)}`, '-serial', 'chardev:console0']
    : log
      ? ['-chardev', `stdio,id=console0,logfile=${optionPath(log)}`, '-serial', 'chardev:console0']
      : ['-serial', 'stdio'];
  const args = [
    ...accel,
    ...['-m', String(options.memory ?? 2048), '-smp', String(options.cpus ?? 1)],
    ...['-display', 'none', '-monitor', 'none', ...serial, ...(options.reboot ? [] : ['-no-reboot'])],
    '-nodefaults',
  ];
  if (options.firmware) {
    // Secure Boot needs SMM so that only the firmware can write the authenticated variables.
    args.push(
      ...['-machine', 'q35,smm=on', '-global', 'driver=cfi.pflash01,property=secure,value=on'],
      ...['-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${optionPath(options.firmware.code)}`],
      ...['-drive', `if=pflash,format=raw,unit=1,file=${optionPath(options.firmware.vars)}`],
    );
  } else {
    args.push('-machine', 'q35');
  }
  const esps = options.esp === undefined ? [] : [options.esp].flat();
  if (esps.length > 6)
    throw new MachineError('MACHINE_INVALID_OPTION', 'at most 6 ESP directories (one SATA port each)');
  for (const [i, dir] of esps.entries()) {
    args.push(
      ...['-drive', `if=none,id=esp${i},format=raw,file=fat:rw:${optionPath(dir)}`],
      ...['-device', `ide-hd,drive=esp${i},bus=ide.${i},bootindex=${i + 1}`],
    );
  }
  // qemu creates `-device` disks before `if=virtio` ones: once one virtio disk needs a device of
  // its own, every virtio disk gets one, so that PCI slots (vda, vdb… in the guest) follow the order given.
  const ownDevices = (options.disks ?? []).some((d) => d.virtio && (d.bootIndex !== undefined || d.readonly));
  for (const [i, disk] of (options.disks ?? []).entries()) {
    const drive = `format=${disk.format ?? 'raw'},file=${optionPath(disk.path)}${disk.readonly ? ',readonly=on' : ''}`;
    if (disk.bootIndex !== undefined || (disk.virtio && ownDevices)) {
      if (
        disk.bootIndex !== undefined &&
        (!disk.virtio || !Number.isInteger(disk.bootIndex) || disk.bootIndex < 1)
      )
        throw new MachineError(
          'MACHINE_INVALID_OPTION',
          'a boot index is a positive integer, on a virtio disk',
        );
      args.push(
        ...['-drive', `if=none,id=disk${i},${drive}`],
        ...[
          '-device',
          `virtio-blk-pci,drive=disk${i}${disk.bootIndex !== undefined ? `,bootindex=${disk.bootIndex}` : ''}`,
        ],
      );
    } else {
      args.push('-drive', `${drive}${disk.virtio ? ',if=virtio' : ''}`);
    }
  }
  if (options.kernel) {
    args.push('-kernel', options.kernel.path);
    if (options.kernel.initrd) args.push('-initrd', options.kernel.initrd);
    if (options.kernel.cmdline) args.push('-append', options.kernel.cmdline);
  }
  if (options.tpm) {
    if (!options.tpm.controlSocket)
      throw new MachineError('MACHINE_INVALID_OPTION', 'the TPM must be an swtpm started in qemu mode');
    args.push(
      ...['-chardev', `socket,id=chrtpm,path=${optionPath(options.tpm.controlSocket)}`],
      ...['-tpmdev', 'emulator,id=tpm0,chardev=chrtpm', '-device', 'tpm-tis,tpmdev=tpm0'],
    );
  }
  if (options.network) args.push(...networkArguments(options.network));
  if (options.qmp) args.push('-qmp', `unix:${optionPath(options.qmp)},server=on,wait=off`);
  if (options.pidFile) args.push('-pidfile', options.pidFile);
  if (options.daemonize) args.push('-daemonize');
  args.push(...(options.extraArgs ?? []));
  for (const a of args)
    if (a.includes('\n') || a.includes('\0'))
      throw new MachineError('MACHINE_INVALID_OPTION', 'qemu arguments cannot hold newlines');
  return args;
}

/** Runs a machine until it powers off, times out or shows `stopOn`. */
export function runQemu(options: QemuOptions): Promise<QemuResult> {
  const args = qemuArguments(options);
  return new Promise((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (error) {
      reject(new MachineError('MACHINE_QEMU', `cannot run qemu: ${(error as Error).message}`));
      return;
    }
    let output = '';
    let timedOut = false;
    let stopped = false;
    const take = (d: Buffer) => {
      const text = d.toString('latin1').replace(/\r/g, '');
      output += text;
      if (options.outputLimit !== undefined && output.length > 2 * options.outputLimit)
        output = output.slice(-options.outputLimit);
      options.onOutput?.(text);
      if (!stopped && options.stopOn?.test(output)) {
        stopped = true;
        child.kill('SIGKILL');
      }
    };
    child.stdout!.on('data', take);
    child.stderr!.on('data', take);
    const timeoutMs = options.timeoutMs ?? 300_000;
    const timer = Number.isFinite(timeoutMs)
      ? setTimeout(() => {
          timedOut = true;
          child.kill('SIGKILL');
        }, timeoutMs)
      : undefined;
    const abort = () => {
      stopped = true;
      child.kill('SIGTERM');
    };
    if (options.signal?.aborted) abort();
    else options.signal?.addEventListener('abort', abort, { once: true });
    child.once('error', (error) => {
      options.signal?.removeEventListener('abort', abort);
      clearTimeout(timer);
      reject(new MachineError('MACHINE_QEMU', `cannot run qemu (install qemu-system-x86): ${error.message}`));
    });
    child.once('close', (code) => {
      options.signal?.removeEventListener('abort', abort);
      clearTimeout(timer);
      if (options.outputLimit !== undefined) output = output.slice(-options.outputLimit);
      resolve({ output, exitCode: code, timedOut, stopped });
    });
  });
}
