export type { Command, CommandContext, OptionSpec } from './command.ts';
export { main } from './main.ts';
