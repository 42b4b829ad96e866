/** seal ipe policy. */
import { UsageError } from '../../errors.ts';
import {
  IPE_OPERATIONS,
  IPE_TRUST,
  type IpeOperation,
  type IpeTrust,
  ipePolicy,
  signIpePolicy,
} from '../../ipe/index.ts';
import { writeFileAtomic } from '../../util/atomic.ts';
import type { Command } from '../command.ts';
import { readSigner, signerOptions } from './kernel-signer.ts';

const list = (value: unknown): string[] =>
  ((value as string[] | undefined) ?? []).flatMap((v) => v.split(',')).filter((v) => v !== '');

export const ipeCommands: Command[] = [
  {
    path: ['ipe', 'policy'],
    summary:
      'Write an IPE policy: execute only what the kernel verified (initramfs, signed dm-verity, signed fs-verity)',
    args: 'OUT',
    arity: [1, 1],
    details:
      'OUT gets the policy text. With --key and --cert, OUT.p7s gets it signed (PKCS#7, content embedded):\n' +
      'what the kernel takes at /sys/kernel/security/ipe/new_policy, from a key in its builtin, secondary or\n' +
      'platform (UEFI db) keyring. Activate it with `echo 1 > /sys/kernel/security/ipe/policies/NAME/active`.',
    options: {
      name: { type: 'string', value: 'NAME', description: 'policy name (default seal)' },
      version: {
        type: 'string',
        value: 'X.Y.Z',
        description: 'policy version (default 0.0.1; updates must raise it)',
      },
      op: {
        type: 'string',
        multiple: true,
        value: 'OP',
        description: `operations restricted (default EXECUTE): ${IPE_OPERATIONS.join(', ')}`,
      },
      trust: {
        type: 'string',
        multiple: true,
        value: 'PROPERTY',
        description: `what is trusted (default all): ${IPE_TRUST.join(', ')}`,
      },
      'dmverity-roothash': {
        type: 'string',
        multiple: true,
        value: 'HEX',
        description: 'also trust this dm-verity root hash (repeatable)',
      },
      'fsverity-digest': {
        type: 'string',
        multiple: true,
        value: 'ALG:HEX',
        description: 'also trust files with this fs-verity digest (repeatable)',
      },
      ...signerOptions(),
    },
    async run(ctx, [out], options) {
      const operations = list(options.op).map((o) => o.toUpperCase()) as IpeOperation[];
      const trust = list(options.trust) as IpeTrust[];
      const text = ipePolicy({
        ...(typeof options.name === 'string' ? { name: options.name } : {}),
        ...(typeof options.version === 'string' ? { version: options.version } : {}),
        ...(operations.length ? { operations } : {}),
        ...(trust.length ? { trust } : {}),
        dmverityRootHashes: list(options['dmverity-roothash']),
        fsverityDigests: list(options['fsverity-digest']),
      });
      const signer = readSigner(options);
      if (options.chain !== undefined && !signer) throw new UsageError('--chain needs --key and --cert');
      await writeFileAtomic(out!, text);
      const signed = signer ? `${out}.p7s` : undefined;
      if (signed) await writeFileAtomic(signed, signIpePolicy(text, signer!));
      ctx.result({ policy: out, signed: signed ?? null, text });
      ctx.print(`Wrote the IPE policy ${out}${signed ? ` and its signed form ${signed}` : ''}:`);
      for (const line of text.trimEnd().split('\n')) ctx.print(`  ${line}`);
      return 0;
    },
  },
];
