/** Parsing of option values shared by the commands. */
import { UsageError } from '../errors.ts';

/** A whole, non-negative number option, or undefined when absent. */
export function integerOption(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0)
    throw new UsageError(`--${name} takes a whole number, not ${JSON.stringify(value)}`);
  return n;
}
