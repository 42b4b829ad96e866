import type { Command } from '../command.ts';

export const storeCommands: Command[] = [];
