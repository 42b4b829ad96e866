import type { Command } from '../command.ts';

export const composefsCommands: Command[] = [];
