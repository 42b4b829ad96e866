import { UsageError } from '../../errors.ts';
import { install } from '../../machine/install.ts';
import type { Command } from '../command.ts';
import { registryOptions, TRANSPORT_OPTIONS } from './transport-options.ts';

/** "4G", "512M", "1024k" or bytes. */
function sizeOption(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined;
  const m = typeof value === 'string' ? /^(\d+)([kKmMgGtT]?)$/.exec(value) : null;
  if (!m) throw new UsageError(`--${name} takes a size such as 4G, 512M or a number of bytes`);
  const unit =
    { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2]!.toLowerCase() as '' | 'k'] ?? 1;
  return Number(m[1]) * unit;
}

export const machineCommands: Command[] = [
  {
    path: ['install'],
    summary: "Install a signed system and its signed UKI onto a device's disk (or a disk image)",
    args: '',
    arity: [0, 0],
    details:
      'Partitions the disk (GPT: esp, seal-store, seal-config, seal-data), writes the ESP (the UKI at\n' +
      'EFI/BOOT/BOOTX64.EFI, or systemd-boot there and the UKI under EFI/Linux), and copies the system\n' +
      'with everything it pins and carries into the store as `current`, verified first with --ca.\n' +
      'seal-config and seal-data are left for the first boot to make LUKS2 with the TPM-held passphrase.',
    options: {
      disk: { type: 'string', value: 'DEV|FILE', description: 'the disk or disk image (required)' },
      manifest: { type: 'string', value: 'REF', description: 'the signed system manifest (required)' },
      uki: { type: 'string', value: 'FILE', description: 'the signed UKI (required)' },
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
      for (const required of ['disk', 'manifest', 'uki'])
        if (typeof options[required] !== 'string') throw new UsageError(`--${required} is required`);
      const result = await install({
        disk: options.disk as string,
        manifest: options.manifest as string,
        uki: options.uki as string,
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
