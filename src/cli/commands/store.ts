import { defaultStorePath, LayoutStore } from '../../store/index.ts';
import type { Command, OptionSpec } from '../command.ts';

const storeOption: Record<string, OptionSpec> = {
  store: {
    type: 'string',
    value: 'DIR',
    description: 'the store (default: $SEAL_STORE, else ~/.local/share/seal/store)',
  },
};

export const storeCommands: Command[] = [
  {
    path: ['store', 'gc'],
    summary: 'Remove blobs that no image in the store references',
    args: '',
    arity: [0, 0],
    options: storeOption,
    async run(ctx, _args, options) {
      const store = await LayoutStore.open((options.store as string | undefined) ?? defaultStorePath());
      const { removed, freed } = await store.gc();
      ctx.result({ removed, freed });
      ctx.print(`Removed ${removed.length} unreferenced blobs (${freed} bytes)`);
      return 0;
    },
  },
  {
    path: ['store', 'fsck'],
    summary: 'Re-verify every blob of the store and check that referenced blobs exist',
    args: '',
    arity: [0, 0],
    options: storeOption,
    async run(ctx, _args, options) {
      const store = await LayoutStore.open((options.store as string | undefined) ?? defaultStorePath());
      const progress = ctx.progress('checking blobs');
      const report = await store.fsck(() => progress.tick(1));
      progress.done();
      ctx.result(report);
      ctx.print(
        `Checked ${report.blobs} blobs: ${report.corrupt.length} corrupt, ${report.missing.length} missing`,
      );
      for (const d of report.corrupt) ctx.print(`corrupt: ${d}`);
      for (const d of report.missing) ctx.print(`missing: ${d}`);
      return report.corrupt.length + report.missing.length === 0 ? 0 : 1;
    },
  },
];
