/**
 * The one error base of Seal. Every module throws a subclass of its own whose `code` is a
 * string-union of that module's failure kinds, so callers can switch on `code` without
 * parsing messages, and the CLI can print one line naming the offending input.
 */
/**
 * Control characters (C0, DEL, C1) and the invisible bidirectional and zero-width formatting
 * characters, none of which a one-line message needs.
 */
const UNPRINTABLE = /[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]/g;

/**
 * Text from an input made safe to show on a terminal: every control and formatting character
 * becomes a visible escape (`\n`, `\x1b`, `\u202e`), so an input cannot forge other output or
 * move the cursor.
 */
export function escapeControls(text: string): string {
  return text.replace(UNPRINTABLE, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    const code = c.charCodeAt(0);
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, '0')}`
      : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

export class SealError<Code extends string = string> extends Error {
  readonly code: Code;
  /** The input the failure is about: a path, a reference, a digest, a block number... */
  readonly subject: string | undefined;

  constructor(code: Code, message: string, options: { subject?: string; cause?: unknown } = {}) {
    // Messages quote inputs (names, paths, server answers): they are escaped once, here.
    super(escapeControls(message), options.cause === undefined ? undefined : { cause: options.cause });
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
