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
  | 'TLS';

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

/** Whether trying again may help: connection failures, 429 and 5xx answers. */
export function isRetryable(error: unknown): boolean {
  return (
    error instanceof RegistryError &&
    (error.code === 'NETWORK' || error.code === 'RATE_LIMITED' || error.code === 'SERVER')
  );
}
