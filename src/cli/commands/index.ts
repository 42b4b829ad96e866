/** Every command of the CLI; each domain contributes its list from its own file. */
import type { Command } from '../command.ts';

export const commands: Command[] = [];
