/**
 * The one error base of Seal. Every module throws a subclass of its own whose `code` is a
 * string-union of that module's failure kinds, so callers can switch on `code` without
 * parsing messages, and the CLI can print one line naming the offending input.
 */
export class SealError<Code extends string = string> extends Error {
  readonly code: Code;
  /** The input the failure is about: a path, a reference, a digest, a block number... */
  readonly subject: string | undefined;

  constructor(code: Code, message: string, options: { subject?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.subject = options.subject;
    this.name = new.target.name;
  }
}

export function isSealError(e: unknown): e is SealError {
  return e instanceof SealError;
}

/** Raised by the CLI layer for bad command lines. */
export class UsageError extends SealError<'USAGE'> {
  constructor(message: string) {
    super('USAGE', message);
  }
}
