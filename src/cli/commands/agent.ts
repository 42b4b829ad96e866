import { buildInitrd } from '../../agent/index.ts';
import { formatStatus, readStatus } from '../../agent/status.ts';
import { UsageError } from '../../errors.ts';
import type { Command } from '../command.ts';
import { integerOption } from '../options.ts';

export const agentCommands: Command[] = [
  {
    path: ['initrd', 'build'],
    summary:
      'Build the initrd of a Seal device: Node.js, the agent, the manifest CA, the TPM policy, modules, tools',
    args: 'MANIFEST_CA DEST',
    arity: [2, 2],
    details:
      'MANIFEST_CA is the PEM certificate the agent verifies system manifests with. The result is a\n' +
      'reproducible zstd-compressed cpio: the pinned Node.js, the Seal agent and its production\n' +
      'dependencies, the kernel modules it loads (from --kernel: a kernel .deb or a directory holding\n' +
      'lib/modules/VERSION), cryptsetup, veritysetup, crun and mke2fs with their libraries.',
    options: {
      kernel: {
        type: 'string',
        value: 'DEB|DIR',
        description: 'the kernel package whose modules to include (required)',
      },
      policy: { type: 'string', value: 'FILE', description: 'the signed TPM policy (seal tpm policy sign)' },
      'boot-manager': {
        type: 'string',
        value: 'EFI',
        description: 'a signed systemd-boot, which an installer (seal.install) puts on the disks it makes',
      },
      'kernel-signer': {
        type: 'string',
        value: 'PEM',
        description:
          "the product's kernel-signing certificate (in db): loaded into .fs-verity; every image must carry its signatures (seal image sign-verity)",
      },
      'ipe-policy': {
        type: 'string',
        value: 'P7S',
        description:
          'a signed IPE policy (seal ipe policy --key --cert), activated before the switch into the host root',
      },
      extra: { type: 'string', value: 'DIR', description: 'files added to the initrd root' },
      module: {
        type: 'string',
        multiple: true,
        value: 'NAME',
        description: 'a further kernel module (repeatable)',
      },
      level: {
        type: 'string',
        value: 'N',
        description: 'zstd level, 1-19 (default 12); 0 for no compression',
      },
    },
    async run(ctx, [ca, dest], options) {
      if (typeof options.kernel !== 'string') throw new UsageError('--kernel is required');
      const level = integerOption(options.level, 'level');
      if (level !== undefined && (level < 0 || level > 19)) throw new UsageError('--level is 0 to 19');
      const result = await buildInitrd(dest!, {
        manifestCa: ca!,
        kernel: options.kernel,
        policy: options.policy as string | undefined,
        ...(typeof options['boot-manager'] === 'string' ? { bootManager: options['boot-manager'] } : {}),
        ...(typeof options['kernel-signer'] === 'string' ? { kernelSigner: options['kernel-signer'] } : {}),
        ...(typeof options['ipe-policy'] === 'string' ? { ipePolicy: options['ipe-policy'] } : {}),
        extra: options.extra as string | undefined,
        modules: options.module as string[] | undefined,
        level,
      });
      ctx.result(result);
      ctx.print(
        `${dest}: ${(result.size / (1 << 20)).toFixed(1)} MiB, sha256:${result.sha256}, kernel ${result.kernelVersion}, ${result.modules.length} modules`,
      );
      return 0;
    },
  },
  {
    path: ['status'],
    summary: 'What a device runs and what happened to it: its good system, a trial, this boot, the history',
    args: '[DIR]',
    arity: [0, 1],
    details:
      "DIR is the agent's run directory (default /run/seal, on the device) or a copy of it. The history\n" +
      'says why: updates applied or refused, trials confirmed or given up, fallbacks.',
    options: {
      events: { type: 'string', value: 'N', description: 'history events shown (default 10)' },
    },
    async run(ctx, [dir], options) {
      const status = readStatus(dir ?? '/run/seal');
      ctx.result(status);
      for (const line of formatStatus(status, integerOption(options.events, 'events') ?? 10)) ctx.print(line);
      return 0;
    },
  },
];
