/**
 * `seal media create`: update media for devices booted with `seal.media` — a FAT image holding
 * the signed system and everything it pins as an OCI layout in seal-update/ (src/machine/media.ts).
 * `seal push`: the same system sent over the network to a device booted with `seal.push`
 * (src/machine/push.ts).
 */
import { UsageError } from '../../errors.ts';
import { writeMedia } from '../../machine/media.ts';
import type { Command } from '../command.ts';
import { registryOptions, TRANSPORT_OPTIONS } from './transport-options.ts';

/** "64M", "1G" or bytes. */
function sizeOption(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const m = typeof value === 'string' ? /^(\d+)([kKmMgG]?)$/.exec(value) : null;
  if (!m) throw new UsageError('--size takes a size such as 64M, 1G or a number of bytes');
  return Number(m[1]) * ({ '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30 }[m[2]!.toLowerCase()] ?? 1);
}

export const mediaCommands: Command[] = [
  {
    path: ['media', 'create'],
    summary: 'Write update media: a FAT image with a signed system in seal-update/ for seal.media',
    args: 'IMG',
    arity: [1, 1],
    details:
      'Copies --manifest with everything it pins and carries into an OCI layout, tagged `system`, in\n' +
      'the directory seal-update/ of a new FAT32 image (a whole-disk filesystem, no partition table;\n' +
      'made with mkfs.vfat and mtools, nothing mounted). Write it to a stick (or attach it to a VM:\n' +
      '`seal machine media`); a device booted with seal.media verifies and applies it as it would a\n' +
      'system from its registry. The image is as large as the layout needs (at least 40 MiB) unless\n' +
      '--size says; its bytes depend only on the system (and SOURCE_DATE_EPOCH).',
    options: {
      manifest: { type: 'string', value: 'REF', description: 'the signed system manifest (required)' },
      size: { type: 'string', value: 'SIZE', description: 'size of the image (default: what it needs)' },
      ...TRANSPORT_OPTIONS,
    },
    async run(ctx, [image], options) {
      if (typeof options.manifest !== 'string') throw new UsageError('--manifest is required');
      const size = sizeOption(options.size);
      const result = await writeMedia({
        image: image!,
        manifest: options.manifest,
        ...(size !== undefined ? { size } : {}),
        transport: registryOptions(options),
      });
      ctx.result(result);
      ctx.print(
        `Wrote ${result.image}: ${options.manifest} (${result.digest}) in seal-update/, ${result.files} files, ${result.layoutBytes} bytes, on ${result.size / (1 << 20)} MiB of FAT32`,
      );
      return 0;
    },
  },
  {
    path: ['push'],
    summary: 'Push a signed system to a device that accepts pushes (seal.push=PORT): only the blobs it lacks',
    args: 'HOST:PORT',
    arity: [1, 1],
    details:
      'Copies --manifest with everything it pins and carries into a scratch layout, asks the device\n' +
      'which of its blobs it holds, and sends the rest in one stream. The device checks the pushed\n' +
      'system as it checks one from its registry or a medium — signature, product and version floor\n' +
      'before anything is copied, every layer after — and applies it; its console lines of the update\n' +
      'are printed as they come. Exit 0 when the device applied or staged the system (it then reboots\n' +
      'to try it), or already runs it; 1 when it refused it.',
    options: {
      manifest: { type: 'string', value: 'REF', description: 'the signed system manifest (required)' },
      ...TRANSPORT_OPTIONS,
    },
    async run(ctx, [address], options) {
      if (typeof options.manifest !== 'string') throw new UsageError('--manifest is required');
      const { pushSystem } = await import('../../machine/push.ts');
      const result = await pushSystem({
        manifest: options.manifest,
        address: address!,
        transport: registryOptions(options),
        onLine: (line) => ctx.print(`device: ${line}`),
      });
      ctx.result(result);
      ctx.print(
        `${options.manifest} (${result.digest}): ${result.sent} of ${result.blobs} blobs sent (${result.bytes} bytes); ${result.outcome}${result.detail ? `: ${result.detail}` : ''}`,
      );
      return ['applied', 'staged', 'unchanged', 'disconnected'].includes(result.outcome) ? 0 : 1;
    },
  },
];
