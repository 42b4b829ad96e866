import { SealError } from '../errors.ts';

export type TpmErrorCode =
  /** The TPM answered a command with an error response code (`rc`, `rcName` say which). */
  | 'TPM_RESPONSE'
  /** A response that does not parse: truncated, oversized, inconsistent. */
  | 'TPM_MALFORMED'
  /** A response whose session HMAC does not verify: the bus or the TPM is not who we think. */
  | 'TPM_RESPONSE_HMAC'
  /** The device or socket could not be opened, written or read, or did not answer in time. */
  | 'TPM_TRANSPORT'
  /** A `--tpm` address that is neither a device path nor `swtpm:HOST:PORT` / `swtpm:unix:PATH`. */
  | 'TPM_ADDRESS'
  | 'TPM_INVALID_ARGUMENT'
  /** A key Seal cannot use in the TPM (algorithm, size). */
  | 'TPM_KEY'
  /** A signed policy file that does not parse or is inconsistent with itself. */
  | 'TPM_POLICY_FILE'
  /** The TPM holds no Seal provisioning (for unlock, revoke, identity). */
  | 'TPM_NOT_PROVISIONED'
  /** The TPM was provisioned by someone else (owner, other key or other layout). */
  | 'TPM_FOREIGN'
  /** The TPM refused to release the secrets or to raise the accepted version: the message carries the TPM's reason. */
  | 'TPM_REFUSED'
  /** Lowering the accepted manifest version was asked: it only goes up. */
  | 'TPM_ROLLBACK';

/** Failures of the TPM client and of Seal's TPM workflows; `subject` names the TPM, index or file. */
export class TpmError extends SealError<TpmErrorCode> {
  /** The TPM response code when the TPM itself refused (code TPM_RESPONSE, or TPM_REFUSED caused by one). */
  readonly rc: number | undefined;

  constructor(
    code: TpmErrorCode,
    message: string,
    options: { subject?: string; cause?: unknown; rc?: number } = {},
  ) {
    super(code, message, options);
    this.rc = options.rc ?? (options.cause instanceof TpmError ? options.cause.rc : undefined);
  }
}
