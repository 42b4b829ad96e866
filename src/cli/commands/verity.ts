import type { Command } from '../command.ts';

export const verityCommands: Command[] = [];
