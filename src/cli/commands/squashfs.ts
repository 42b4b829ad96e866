import type { Command } from '../command.ts';

export const squashfsCommands: Command[] = [];
