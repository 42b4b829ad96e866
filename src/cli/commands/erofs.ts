import type { Command } from '../command.ts';

export const erofsCommands: Command[] = [];
