/**
 * A qemu x86-64 machine as a child process: UEFI firmware (OVMF, Secure Boot capable with SMM)
 * with a writable varstore, a FAT ESP from a directory, a software TPM attached through swtpm's
 * control socket, or a kernel booted directly; the serial console is collected. Used by the tests
 * that boot Seal's UKIs and by the device tooling built on it. TCG only (the build hosts have no
 * KVM); no network unless asked.
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
  /** Disk images, in order (IDE/SATA unless `virtio`: a Seal device's disk is virtio-blk). */
  disks?: { path: string; readonly?: boolean; format?: 'raw' | 'qcow2'; virtio?: boolean }[];
  /** Direct kernel boot instead of firmware. */
  kernel?: { path: string; initrd?: string; cmdline?: string };
  /** A software TPM started in `qemu` mode. */
  tpm?: Swtpm;
  /** Guest memory in MiB (default 2048). */
  memory?: number;
  cpus?: number;
  /** Kill the machine after this long (default 300 s); `timedOut` says so. */
  timeoutMs?: number;
  /** Stop the machine as soon as the console shows this (e.g. a refusal the firmware prints). */
  stopOn?: RegExp;
  /** Further qemu arguments (network devices, monitors). */
  extraArgs?: string[];
  /** Called with console output as it arrives. */
  onOutput?: (text: string) => void;
}

export interface QemuResult {
  /** Everything the serial console and qemu printed, carriage returns removed. */
  output: string;
  /** qemu's exit code (null when killed). */
  exitCode: number | null;
  timedOut: boolean;
  /** The console matched `stopOn` and the machine was stopped. */
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

/** The qemu command line for `options` (exported for tests and for printing). */
export function qemuArguments(options: QemuOptions): string[] {
  const args = [
    ...['-accel', 'tcg', '-m', String(options.memory ?? 2048), '-smp', String(options.cpus ?? 1)],
    ...['-display', 'none', '-monitor', 'none', '-serial', 'stdio', '-no-reboot', '-nodefaults'],
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
  for (const disk of options.disks ?? [])
    args.push(
      '-drive',
      `format=${disk.format ?? 'raw'},file=${optionPath(disk.path)}${disk.readonly ? ',readonly=on' : ''}${disk.virtio ? ',if=virtio' : ''}`,
    );
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
      options.onOutput?.(text);
      if (!stopped && options.stopOn?.test(output)) {
        stopped = true;
        child.kill('SIGKILL');
      }
    };
    child.stdout!.on('data', take);
    child.stderr!.on('data', take);
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs ?? 300_000);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(new MachineError('MACHINE_QEMU', `cannot run qemu (install qemu-system-x86): ${error.message}`));
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ output, exitCode: code, timedOut, stopped });
    });
  });
}
