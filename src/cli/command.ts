/**
 * The shape of a CLI command. Commands live in `cli/commands/<domain>.ts`, parse nothing
 * themselves and call the domain modules; `cli/main.ts` dispatches, prints and exits.
 */
import type { Progress } from './progress.ts';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  default?: string | boolean;
  /** Shown in --help, e.g. 'N', 'HEX|-'. */
  value?: string;
  /** The values a string option accepts; any other is a usage error naming them. */
  choices?: string[];
  /**
   * A string option whose value may be left out: a bare `--NAME` means `--NAME=IMPLICIT`
   * (skopeo's `--tls-verify`). A following word is taken as the value only when it is one of
   * `choices` (`--tls-verify false`); without `choices` the value must be joined with `=`.
   */
  implicit?: string;
  description: string;
}

export interface CommandContext {
  json: boolean;
  debug: boolean;
  /** Writes a line of human output (suppressed under --json). */
  print(line: string): void;
  /** Emits a machine-readable result under --json (ignored otherwise). */
  result(value: unknown): void;
  /** A progress bar on a TTY, a no-op when piped or under --json. */
  progress(label: string, total?: number): Progress;
}

export interface Command {
  /** Words after `seal`, e.g. ['image', 'import']. */
  path: string[];
  summary: string;
  /** Positional arguments for usage, e.g. 'SRC DEST'. */
  args: string;
  /** Minimum and maximum number of positional arguments (max Infinity for variadic). */
  arity: [number, number];
  options?: Record<string, OptionSpec>;
  /** Longer text shown under --help. */
  details?: string;
  run(
    ctx: CommandContext,
    positionals: string[],
    options: Record<string, string | boolean | string[] | undefined>,
  ): Promise<number | undefined>;
}
