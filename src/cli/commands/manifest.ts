import type { Command } from '../command.ts';

export const manifestCommands: Command[] = [];
