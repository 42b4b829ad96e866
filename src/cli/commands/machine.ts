/**
 * `seal install` (a device's disk) and `seal machine …` (Seal devices as qemu VMs: create, start,
 * console, stop, list, rm). The machines themselves are src/machine/machines.ts.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../../errors.ts';
import { ConsoleText, followFile } from '../../machine/console.ts';
import { install } from '../../machine/install.ts';
import {
  type CreateOptions,
  FILES,
  Machine,
  type MachineStatus,
  machinesRoot,
  removeMachine,
} from '../../machine/machines.ts';
import { MachineError } from '../../machine/swtpm.ts';
import type { Command } from '../command.ts';
import { parseDuration, registryOptions, TRANSPORT_OPTIONS } from './transport-options.ts';

/** "4G", "512M", "1024k" or bytes. */
function sizeOption(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined;
  const m = typeof value === 'string' ? /^(\d+)([kKmMgGtT]?)$/.exec(value) : null;
  if (!m) throw new UsageError(`--${name} takes a size such as 4G, 512M or a number of bytes`);
  const unit =
    { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2]!.toLowerCase() as '' | 'k'] ?? 1;
  return Number(m[1]) * unit;
}

const installCommands: Command[] = [
  {
    path: ['install'],
    summary: "Install a signed system and its signed UKI onto a device's disk (or a disk image)",
    args: '',
    arity: [0, 0],
    details:
      'Partitions the disk (GPT: esp, seal-store, seal-config, seal-data), writes the ESP (the UKI at\n' +
      'EFI/BOOT/BOOTX64.EFI, or systemd-boot there and the UKI under EFI/Linux as seal-VERSION.efi — a\n' +
      'device updates its UKI only then, with boot counting), and copies the system\n' +
      'with everything it pins and carries into the store as `current`, verified first with --ca.\n' +
      'seal-config and seal-data are left for the first boot to make LUKS2 with the TPM-held passphrase.',
    options: {
      disk: { type: 'string', value: 'DEV|FILE', description: 'the disk or disk image (required)' },
      manifest: { type: 'string', value: 'REF', description: 'the signed system manifest (required)' },
      uki: {
        type: 'string',
        value: 'FILE',
        description: 'the signed UKI (required unless the system carries its own: a target of role boot)',
      },
      ca: { type: 'string', value: 'PEM', description: 'verify the system with this manifest CA first' },
      size: { type: 'string', value: 'SIZE', description: 'size of a new disk image (default 4G)' },
      'store-size': { type: 'string', value: 'SIZE', description: 'size of the store partition' },
      'boot-manager': {
        type: 'string',
        value: 'EFI',
        description: 'a signed systemd-boot to boot the UKI with',
      },
      ...TRANSPORT_OPTIONS,
    },
    async run(ctx, _args, options) {
      for (const required of ['disk', 'manifest'])
        if (typeof options[required] !== 'string') throw new UsageError(`--${required} is required`);
      const result = await install({
        disk: options.disk as string,
        manifest: options.manifest as string,
        ...(typeof options.uki === 'string' ? { uki: options.uki } : {}),
        ca: options.ca as string | undefined,
        size: sizeOption(options.size, 'size'),
        storeSize: sizeOption(options['store-size'], 'store-size'),
        bootManager: options['boot-manager'] as string | undefined,
        transport: registryOptions(options),
      });
      ctx.result(result);
      ctx.print(
        `Installed ${options.manifest}${result.version ? ` (version ${result.version})` : ''} on ${result.disk}:`,
      );
      for (const p of result.table.partitions)
        ctx.print(
          `  ${p.number} ${p.name.padEnd(12)} ${((p.lastLba - p.firstLba + 1) / 2048).toFixed(0)} MiB`,
        );
      return 0;
    },
  },
];

/** `--memory`: MiB, or a size such as 2G or 512M. */
function memoryOption(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const m = typeof value === 'string' ? /^(\d+)([mMgG]?)$/.exec(value) : null;
  if (!m) throw new UsageError('--memory takes MiB or a size such as 2G or 512M');
  return Number(m[1]) * (m[2]?.toLowerCase() === 'g' ? 1024 : 1);
}

function portNumber(text: string, flag: string): number {
  const n = /^\d{1,5}$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= 1 && n <= 65535)) throw new UsageError(`${flag}: ${JSON.stringify(text)} is not a TCP port`);
  return n;
}

/**
 * `--registry 127.0.0.1:PORT` / `--attest 127.0.0.1:PORT` (or localhost:PORT, or PORT): the guest
 * reaches nothing else.
 */
function loopbackPort(value: unknown, flag: string, what: string): number | undefined {
  if (typeof value !== 'string') return undefined;
  const m = /^(?:(127\.0\.0\.1|localhost):)?([^:]+)$/.exec(value);
  if (!m)
    throw new UsageError(
      `${flag} ${JSON.stringify(value)}: the guest may only reach ${what} on 127.0.0.1 (127.0.0.1:PORT)`,
    );
  return portNumber(m[2]!, flag);
}

/** `--forward HOSTPORT:GUESTPORT`, each as often as needed. */
function forwardOptions(value: unknown): { hostPort: number; guestPort: number }[] {
  return [value ?? []].flat().map((v) => {
    const m = /^([^:]+):([^:]+)$/.exec(String(v));
    if (!m) throw new UsageError(`--forward takes HOSTPORT:GUESTPORT, not ${JSON.stringify(v)}`);
    return { hostPort: portNumber(m[1]!, '--forward'), guestPort: portNumber(m[2]!, '--forward') };
  });
}

function openMachine(name: string): Machine {
  return Machine.open(name, machinesRoot());
}

/** Prints console bytes made safe for a terminal, or as they are with --raw. */
function consoleWriter(raw: boolean): { write(chunk: Buffer): void; end(): void } {
  if (raw) return { write: (chunk) => process.stdout.write(chunk), end: () => {} };
  const text = new ConsoleText();
  return {
    write: (chunk) => process.stdout.write(text.push(chunk)),
    end: () => process.stdout.write(text.end()),
  };
}

/** What the guest reaches and what reaches it, in one word: `registry=ADDR,verifier=ADDR,forward=H:G…`, or `-`. */
function networkWord(n: MachineStatus['network']): string {
  const parts = [
    ...(n?.registry ? [`registry=${n.registry.split(' ')[0]}`] : []),
    ...(n?.attest ? [`verifier=${n.attest.split(' ')[0]}`] : []),
    ...(n?.forwards ?? []).map((f) => {
      const m = /^127\.0\.0\.1:(\d+) -> guest:(\d+)$/.exec(f);
      return `forward=${m ? `${m[1]}:${m[2]}` : f}`;
    }),
  ];
  return parts.length ? parts.join(',') : '-';
}

function statusLine(s: MachineStatus): string {
  return [s.name, s.state, s.disk ?? '-', s.uki ?? '-', networkWord(s.network), s.media ?? '-'].join('\t');
}

const rawOption = {
  raw: { type: 'boolean', description: "the guest's bytes as they are (escape sequences included)" },
} as const;

function vmCommands(): Command[] {
  return [
    {
      path: ['machine', 'create'],
      summary: 'Make a Seal device as a VM: its disk, varstore, TPM and configuration',
      args: 'NAME',
      arity: [1, 1],
      details:
        'The machine lives in $SEAL_MACHINES/NAME (else ~/.local/share/seal/machines/NAME). Its disk is\n' +
        'made by `seal install` of --manifest with --uki or the UKI the system carries (verified with --ca\n' +
        'first; --boot-manager puts systemd-boot before it), or copied from\n' +
        '--disk (sparse; --disk-in-place uses the file itself, and rm leaves it), or blank (--disk-size);\n' +
        'a UKI not installed on the disk boots from a small disk of its own, tried first. The varstore\n' +
        '(enrolled by `seal secureboot enroll`: PK, KEK and db are required) is copied. With --tpm swtpm\n' +
        '(the default) the machine has a software TPM of its own, provisioned as the factory does with\n' +
        '--provision-policy-key, --device-cert and --device-key, or, for a TPM-resident identity key\n' +
        '(what attestation needs), --provision-policy-key, --identity-in-tpm, --pki, --product and\n' +
        "--serial: the key is made in the TPM and certified by the PKI's device CA (written to\n" +
        'PKI/devices/SERIAL.pem). No network unless asked: --registry lets the guest reach a registry\n' +
        'on 127.0.0.1:PORT at 10.0.2.100:PORT, --attest a verifier (seal attest serve) on\n' +
        '127.0.0.1:PORT at 10.0.2.101:PORT, --forward makes 127.0.0.1:HOSTPORT on the host reach the\n' +
        'guest (qemu user networking, restrict=on).\n' +
        '--media attaches a raw disk image read-only as a further virtio disk, as a stick is plugged\n' +
        'into a device (`seal media create` makes update media; `seal machine media` changes it).',
      options: {
        uki: { type: 'string', value: 'FILE', description: 'the signed UKI (required unless --disk)' },
        vars: { type: 'string', value: 'FILE', description: 'the enrolled OVMF varstore (required)' },
        manifest: { type: 'string', value: 'REF', description: 'install this signed system onto the disk' },
        ca: { type: 'string', value: 'PEM', description: 'verify the system with this manifest CA first' },
        'boot-manager': {
          type: 'string',
          value: 'EFI',
          description:
            'install with this signed systemd-boot: the UKI is a boot entry, updated with boot counting',
        },
        disk: { type: 'string', value: 'FILE', description: 'use a copy of this disk image' },
        'disk-in-place': { type: 'boolean', description: 'use --disk itself (the machine writes to it)' },
        'disk-size': { type: 'string', value: 'SIZE', description: 'size of a new disk (default 4G)' },
        memory: { type: 'string', value: 'MiB|SIZE', description: 'guest memory (default 2048 MiB)' },
        cpus: { type: 'string', value: 'N', description: 'virtual CPUs (default 1)' },
        accel: {
          type: 'string',
          choices: ['tcg', 'kvm'],
          description: 'emulation (default), or KVM where it runs OVMF with SMM',
        },
        tpm: { type: 'string', choices: ['swtpm', 'none'], description: 'a software TPM (default swtpm)' },
        'provision-policy-key': {
          type: 'string',
          value: 'PEM',
          description: "factory step on the machine's TPM: the product policy-signing public key",
        },
        'device-cert': { type: 'string', value: 'PEM', description: 'factory step: the device certificate' },
        'device-key': { type: 'string', value: 'PEM', description: 'factory step: the device private key' },
        'identity-in-tpm': {
          type: 'boolean',
          description: "factory step: make the identity key in the machine's TPM and certify it (--pki)",
        },
        pki: {
          type: 'string',
          value: 'DIR',
          description: 'with --identity-in-tpm: the PKI whose device CA certifies it',
        },
        product: { type: 'string', value: 'UUID', description: 'with --identity-in-tpm: the product ID' },
        serial: { type: 'string', value: 'SN', description: 'with --identity-in-tpm: the serial number' },
        registry: {
          type: 'string',
          value: '127.0.0.1:PORT',
          description: 'a registry the guest reaches at 10.0.2.100:PORT',
        },
        attest: {
          type: 'string',
          value: '127.0.0.1:PORT',
          description: 'an attestation verifier the guest reaches at 10.0.2.101:PORT',
        },
        media: {
          type: 'string',
          value: 'FILE',
          description: 'attach this raw disk image read-only as removable media',
        },
        forward: {
          type: 'string',
          multiple: true,
          value: 'HOSTPORT:GUESTPORT',
          description: "127.0.0.1:HOSTPORT on the host reaches the guest's GUESTPORT",
        },
        ...TRANSPORT_OPTIONS,
      },
      async run(ctx, [name], options) {
        if (typeof options.vars !== 'string') throw new UsageError('--vars is required');
        if (options.ca !== undefined && options.manifest === undefined)
          throw new UsageError('--ca verifies the system of --manifest');
        if (options['disk-in-place'] && typeof options.disk !== 'string')
          throw new UsageError('--disk-in-place goes with --disk');
        const inTpm = options['identity-in-tpm'] === true;
        const factory = (
          inTpm
            ? ['provision-policy-key', 'pki', 'product', 'serial']
            : ['provision-policy-key', 'device-cert', 'device-key']
        ).filter((o) => options[o] !== undefined);
        if (inTpm && factory.length !== 4)
          throw new UsageError(
            'the factory step with --identity-in-tpm takes --provision-policy-key, --pki, --product and --serial',
          );
        if (inTpm && (options['device-cert'] !== undefined || options['device-key'] !== undefined))
          throw new UsageError('--identity-in-tpm makes the identity: no --device-cert or --device-key');
        if (!inTpm && factory.length !== 0 && factory.length !== 3)
          throw new UsageError(
            'the factory step takes --provision-policy-key, --device-cert and --device-key',
          );
        if (
          !inTpm &&
          (options.pki !== undefined || options.product !== undefined || options.serial !== undefined)
        )
          throw new UsageError('--pki, --product and --serial go with --identity-in-tpm');
        const cpus = options.cpus === undefined ? undefined : Number(options.cpus);
        if (cpus !== undefined && !(Number.isInteger(cpus) && cpus > 0))
          throw new UsageError('--cpus takes a number');
        const create: CreateOptions = {
          name: name!,
          root: machinesRoot(),
          vars: { path: options.vars },
          ...(typeof options.uki === 'string' ? { uki: options.uki } : {}),
          ...(typeof options.manifest === 'string'
            ? {
                install: {
                  manifest: options.manifest,
                  ...(typeof options.ca === 'string' ? { ca: options.ca } : {}),
                  ...(typeof options['boot-manager'] === 'string'
                    ? { bootManager: options['boot-manager'] }
                    : {}),
                  transport: registryOptions(options),
                },
              }
            : {}),
          ...(typeof options.disk === 'string'
            ? { disk: { path: options.disk, inPlace: options['disk-in-place'] === true } }
            : {}),
          ...(options['disk-size'] !== undefined
            ? { diskSize: sizeOption(options['disk-size'], 'disk-size') }
            : {}),
          ...(options.memory !== undefined ? { memory: memoryOption(options.memory) } : {}),
          ...(cpus !== undefined ? { cpus } : {}),
          ...(options.accel ? { accel: options.accel as 'tcg' | 'kvm' } : {}),
          tpm: (options.tpm as 'swtpm' | 'none' | undefined) ?? 'swtpm',
          ...(inTpm
            ? {
                provision: {
                  policyKey: options['provision-policy-key'] as string,
                  identity: {
                    pki: options.pki as string,
                    product: options.product as string,
                    serial: options.serial as string,
                  },
                },
              }
            : factory.length
              ? {
                  provision: {
                    policyKey: options['provision-policy-key'] as string,
                    deviceCert: options['device-cert'] as string,
                    deviceKey: options['device-key'] as string,
                  },
                }
              : {}),
          ...(options.registry !== undefined
            ? { registry: loopbackPort(options.registry, '--registry', 'a registry') }
            : {}),
          ...(options.attest !== undefined
            ? { attest: loopbackPort(options.attest, '--attest', 'a verifier') }
            : {}),
          forwards: forwardOptions(options.forward),
          ...(typeof options.media === 'string' ? { media: options.media } : {}),
        };
        const machine = await Machine.create(create);
        const status = machine.status();
        ctx.result(status);
        ctx.print(`Created machine ${machine.name} in ${machine.dir}`);
        ctx.print(`  disk ${status.disk}${create.install ? ` (installed: ${create.install.manifest})` : ''}`);
        if (status.uki)
          ctx.print(`  UKI  ${status.uki}${machine.config.bootDisk ? ' (on a boot disk of its own)' : ''}`);
        ctx.print(`  TPM  ${status.tpm ? `swtpm${create.provision ? ', provisioned' : ''}` : 'none'}`);
        if (create.provision && 'identity' in create.provision) {
          const { pki, serial } = create.provision.identity;
          ctx.print(`  identity key in the TPM, certified: ${join(pki, 'devices', `${serial}.pem`)}`);
        }
        if (status.network?.registry) ctx.print(`  registry ${status.network.registry}`);
        if (status.network?.attest) ctx.print(`  verifier ${status.network.attest}`);
        for (const f of status.network?.forwards ?? []) ctx.print(`  forward ${f}`);
        if (status.media) ctx.print(`  media ${status.media} (read-only)`);
        return 0;
      },
    },
    {
      path: ['machine', 'start'],
      summary: 'Boot a machine: in the foreground (console on stdout, Ctrl-C stops it) or detached',
      args: 'NAME',
      arity: [1, 1],
      details:
        "Starts the machine's swtpm and qemu (OVMF with Secure Boot, its varstore, virtio disk and TPM).\n" +
        "The console is logged to the machine's console.log (`seal machine console`). In the foreground\n" +
        'it is also printed (made safe for a terminal unless --raw) until the machine powers off, is\n' +
        'stopped, --timeout passes or Ctrl-C; --detach returns once qemu runs.',
      options: {
        detach: { type: 'boolean', short: 'd', description: 'return once the machine runs' },
        timeout: {
          type: 'string',
          value: 'DURATION',
          description: 'foreground: stop the machine after this long',
        },
        'no-reboot': { type: 'boolean', description: 'a guest reboot ends the machine' },
        ...rawOption,
      },
      async run(ctx, [name], options) {
        const machine = openMachine(name!);
        if (options.detach) {
          if (options.timeout !== undefined)
            throw new UsageError('--timeout is for a machine in the foreground');
          const { pid } = await machine.start({ detach: true, noReboot: options['no-reboot'] === true });
          ctx.result({ name: machine.name, state: 'running', qemuPid: pid });
          ctx.print(
            `Started ${machine.name} (qemu ${pid}); its console: seal machine console ${machine.name} --follow`,
          );
          return 0;
        }
        const timeoutMs =
          typeof options.timeout === 'string' ? parseDuration(options.timeout, '--timeout') : undefined;
        const stop = new AbortController();
        const onSignal = () => stop.abort();
        const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
        for (const s of signals) process.on(s, onSignal);
        const out = consoleWriter(options.raw === true);
        try {
          const result = await machine.start({
            ...(timeoutMs !== undefined ? { timeoutMs } : {}),
            signal: stop.signal,
            outputLimit: 1 << 16,
            noReboot: options['no-reboot'] === true,
            ...(ctx.json ? {} : { onOutput: (text: string) => out.write(Buffer.from(text, 'latin1')) }),
          });
          if (!ctx.json) out.end();
          ctx.result({
            name: machine.name,
            exitCode: result.exitCode,
            timedOut: result.timedOut,
            stopped: result.stopped,
          });
          if (result.timedOut) {
            ctx.print('');
            throw new MachineError(
              'MACHINE_TIMEOUT',
              `machine ${machine.name} was stopped after ${options.timeout}`,
              { subject: machine.name },
            );
          }
          ctx.print(
            `\nseal: machine ${machine.name} ${result.stopped ? 'stopped' : 'ended'}${result.exitCode ? ` (qemu exit status ${result.exitCode})` : ''}`,
          );
          return result.exitCode && !result.stopped ? 1 : 0;
        } finally {
          for (const s of signals) process.off(s, onSignal);
        }
      },
    },
    {
      path: ['machine', 'console'],
      summary: "Print a machine's console log; --follow prints it as it grows until the machine stops",
      args: 'NAME',
      arity: [1, 1],
      options: {
        follow: { type: 'boolean', short: 'f', description: 'keep printing until the machine stops' },
        ...rawOption,
      },
      async run(ctx, [name], options) {
        const machine = openMachine(name!);
        if (ctx.json) throw new UsageError('the console is text: no --json');
        const out = consoleWriter(options.raw === true);
        const log = machine.path(FILES.console);
        if (!options.follow) {
          let data: Buffer;
          try {
            data = readFileSync(log);
          } catch {
            return 0;
          }
          out.write(data);
          out.end();
          return 0;
        }
        await followFile(log, {
          onData: (chunk) => out.write(chunk),
          alive: () => machine.status().state === 'running',
        });
        out.end();
        return 0;
      },
    },
    {
      path: ['machine', 'stop'],
      summary: 'Stop a machine: ACPI power-off, then quit after --timeout, then kill',
      args: 'NAME',
      arity: [1, 1],
      options: {
        timeout: {
          type: 'string',
          value: 'DURATION',
          description: 'how long the guest has to power off (default 30s; 0: quit at once)',
        },
      },
      async run(ctx, [name], options) {
        const machine = openMachine(name!);
        const timeoutMs =
          options.timeout === undefined
            ? undefined
            : /^0+(\.0*)?(ms|s|m|h)?$/.test(String(options.timeout))
              ? 0
              : parseDuration(String(options.timeout), '--timeout');
        const result = await machine.stop(timeoutMs === undefined ? {} : { timeoutMs });
        ctx.result({ name: machine.name, ...result });
        ctx.print(
          result.wasRunning ? `Stopped ${machine.name} (${result.how})` : `${machine.name} is not running`,
        );
        return 0;
      },
    },
    {
      path: ['machine', 'list'],
      summary: 'The machines: name, state, disk, UKI, network (what the guest reaches, what reaches it)',
      args: '',
      arity: [0, 0],
      async run(ctx) {
        const machines = Machine.list(machinesRoot());
        ctx.result(machines);
        if (machines.length) ctx.print(['NAME', 'STATE', 'DISK', 'UKI', 'NETWORK', 'MEDIA'].join('\t'));
        for (const m of machines) ctx.print(statusLine(m));
        return 0;
      },
    },
    {
      path: ['machine', 'media'],
      summary: 'Attach a raw disk image to a stopped machine as removable media (read-only), or --eject it',
      args: 'NAME [FILE]',
      arity: [1, 2],
      details:
        'The image is used in place and never written: qemu attaches it read-only as a further\n' +
        "virtio disk, after the machine's own. A device booted with seal.media looks on it for\n" +
        'update media (`seal media create`). The machine must be stopped.',
      options: { eject: { type: 'boolean', description: 'remove the medium' } },
      async run(ctx, [name, file], options) {
        if ((file === undefined) === (options.eject !== true))
          throw new UsageError('give the image FILE, or --eject');
        const machine = openMachine(name!);
        await machine.setMedia(file ?? null);
        ctx.result({ name: machine.name, media: machine.config.media });
        ctx.print(
          machine.config.media
            ? `${machine.name}: media ${machine.config.media} (read-only)`
            : `${machine.name}: no media`,
        );
        return 0;
      },
    },
    {
      path: ['machine', 'rm'],
      summary: 'Delete a machine (a running one only with --force); disks used in place stay',
      args: 'NAME',
      arity: [1, 1],
      options: { force: { type: 'boolean', short: 'f', description: 'stop it first if it runs' } },
      async run(ctx, [name], options) {
        await removeMachine(name!, { root: machinesRoot(), force: options.force === true });
        ctx.result({ name, removed: true });
        ctx.print(`Removed ${name}`);
        return 0;
      },
    },
  ];
}

export const machineCommands: Command[] = [...installCommands, ...vmCommands()];
