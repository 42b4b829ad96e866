import type { Command } from '../command.ts';

export const registryCommands: Command[] = [];
