import { SealError } from '../errors.ts';

export type RegistryErrorCode =
  | 'REFERENCE_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'NOT_FOUND'
  | 'RATE_LIMITED'
  | 'SERVER'
  | 'NETWORK'
  | 'PROTOCOL'
  | 'DIGEST_MISMATCH'
  | 'SIZE_MISMATCH'
  | 'CREDENTIALS'
  | 'TOO_LARGE'
  | 'TLS'
  /** A server too slow: the deadline (--timeout) passed, or the progress rate (--low-speed) fell short. */
  | 'TIMEOUT';

/** Failures talking to an OCI distribution registry; `subject` names the URL or reference. */
export class RegistryError extends SealError<RegistryErrorCode> {
  /** HTTP status when the failure is an HTTP answer. */
  readonly status: number | undefined;

  constructor(
    code: RegistryErrorCode,
    message: string,
    options: { subject?: string; cause?: unknown; status?: number } = {},
  ) {
    super(code, message, options);
    this.status = options.status;
  }
}

/**
 * Whether trying again may help: connection failures, 429 and 5xx answers. Not TIMEOUT: a
 * server that moved too little for a whole window is given one fresh connection by the client
 * (a stalled connection is the usual cause), not a retry budget multiplied at every level.
 */
export function isRetryable(error: unknown): boolean {
  return (
    error instanceof RegistryError &&
    (error.code === 'NETWORK' || error.code === 'RATE_LIMITED' || error.code === 'SERVER')
  );
}

export const isTimeout = (error: unknown): boolean =>
  error instanceof RegistryError && error.code === 'TIMEOUT';

/** Text a server sent, escaped for a one-line message (JSON escapes) and cut if long. */
export function printable(text: string, max = 200): string {
  const cut = text.length > max;
  return `${JSON.stringify(cut ? text.slice(0, max) : text).slice(1, -1)}${cut ? '…' : ''}`;
}

/** Text a server sent, quoted, escaped and cut for a one-line message. */
export function quoted(text: string, max = 200): string {
  return `"${printable(text, max)}"`;
}
