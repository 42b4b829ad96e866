import { SealError } from '../errors.ts';

/**
 * Why an attestation was refused, or could not be made. A verifier's refusals each have their
 * own code, so a service can count them and a test can tell them apart; the message names the
 * offending input (the certificate, the PCR, the event).
 */
export type AttestErrorCode =
  | 'ATTEST_INVALID_OPTION'
  /** An evidence document that does not parse: JSON, type, version, encodings, TPM structures. */
  | 'ATTEST_EVIDENCE'
  /** A reference file that does not parse. */
  | 'ATTEST_REFERENCE'
  /**
   * The key that quoted is not one the device CA certified: the chain does not lead to the CA,
   * a certificate expired, the certified key is another key, or it is not a TPM-resident
   * restricted signing key.
   */
  | 'ATTEST_UNTRUSTED_KEY'
  /** The quote's (or a certification's) signature does not verify with the certified key. */
  | 'ATTEST_SIGNATURE'
  /** The quote answers another nonce: a replay, or another verifier's challenge. */
  | 'ATTEST_NONCE'
  /** The PCR values the evidence carries are not the ones the TPM quoted. */
  | 'ATTEST_PCR_VALUES'
  /** The event log does not parse, does not replay to the quoted PCRs, or holds an edited event. */
  | 'ATTEST_EVENT_LOG'
  /** The PCRs and events are not those of any system the reference accepts. */
  | 'ATTEST_REFERENCE_MISMATCH'
  /** The device certificate names another product than the reference's. */
  | 'ATTEST_PRODUCT'
  /** The key a secret would be protected with is not provably the device TPM's, bound to the quoted PCRs. */
  | 'ATTEST_BINDING'
  /** A nonce the verifier did not issue, already used, or expired. */
  | 'ATTEST_CHALLENGE'
  /** A secret the verifier does not hold, or a released secret that does not decrypt. */
  | 'ATTEST_SECRET'
  /** A request or answer of the challenge/response protocol that is malformed, or a transport failure. */
  | 'ATTEST_PROTOCOL'
  /** The verifier refused the device (its answer's code and reason are in the message and `remoteCode`). */
  | 'ATTEST_REFUSED';

/** A log event named by a refusal: where it is and what it is. */
export interface NamedEvent {
  /** 0-based position in the log (the header event is 0). */
  index: number;
  pcr: number;
  type: string;
  description: string;
}

export class AttestError extends SealError<AttestErrorCode> {
  /** The first event that differs, for ATTEST_REFERENCE_MISMATCH and ATTEST_EVENT_LOG. */
  readonly event: NamedEvent | undefined;
  /** For ATTEST_REFUSED: the verifier's code. */
  readonly remoteCode: string | undefined;

  constructor(
    code: AttestErrorCode,
    message: string,
    options: { subject?: string; cause?: unknown; event?: NamedEvent; remoteCode?: string } = {},
  ) {
    super(code, message, options);
    this.event = options.event;
    this.remoteCode = options.remoteCode;
  }
}
