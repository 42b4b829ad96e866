/** Every command of the CLI; each domain contributes its list from its own file. */
import type { Command } from '../command.ts';
import { composefsCommands } from './composefs.ts';
import { erofsCommands } from './erofs.ts';
import { imageCommands } from './image.ts';
import { manifestCommands } from './manifest.ts';
import { pkiCommands } from './pki.ts';
import { registryCommands } from './registry.ts';
import { squashfsCommands } from './squashfs.ts';
import { storeCommands } from './store.ts';
import { verityCommands } from './verity.ts';

export const commands: Command[] = [
  ...imageCommands,
  ...storeCommands,
  ...verityCommands,
  ...squashfsCommands,
  ...erofsCommands,
  ...composefsCommands,
  ...registryCommands,
  ...pkiCommands,
  ...manifestCommands,
];
