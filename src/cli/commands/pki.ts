import type { Command } from '../command.ts';

export const pkiCommands: Command[] = [];
