/**
 * `attest/`: remote attestation of a Seal device's boot with its TPM — evidence (a quote of the
 * PCRs by the TPM-resident identity key, the firmware's event log, the identity certificate
 * chain), its verification against reference values predicted from the product's signed UKIs,
 * and a verifier service that releases secrets only a genuine device in an accepted boot state
 * can open (TPM2_MakeCredential / ActivateCredential with a PCR-bound key).
 *
 * The device agent's API (see client.ts): `fetchSecret(url, tpm, name, { certificates })`,
 * called before PCR 7 is locked.
 *
 * Formats (versioned JSON): the evidence document (evidence.ts), the reference (reference.ts),
 * the protocol's challenge and released secret (server.ts, secret.ts); docs/attestation.md.
 */
export { type FetchOptions, fetchSecret, verifierUrl } from './client.ts';
export {
  activateWithBinding,
  type BindingKey,
  DEFAULT_QUOTE_PCRS,
  EVENT_LOG_PATH,
  type Quoted,
  type QuoteOptions,
  quoteEvidence,
} from './device.ts';
export { AttestError, type AttestErrorCode, type NamedEvent } from './errors.ts';
export {
  type Binding,
  EVIDENCE_TYPE,
  EVIDENCE_VERSION,
  type Evidence,
  type EvidenceParts,
  encodeEvidence,
  evidenceFromJson,
  MAX_EVIDENCE,
  parseEvidence,
  type SignedAttest,
} from './evidence.ts';
export {
  makeReference,
  mergeReferences,
  parseReference,
  REFERENCE_TYPE,
  REFERENCE_VERSION,
  type Reference,
  type ReferenceEvent,
  type ReferenceOptions,
  type ReferenceSystem,
  serializeReference,
} from './reference.ts';
export {
  encodeSecret,
  MAX_SECRET,
  openSecret,
  type ProtectedSecret,
  parseSecret,
  protectSecret,
  SECRET_TYPE,
} from './secret.ts';
export {
  CHALLENGE_TYPE,
  type Decision,
  NonceStore,
  PROTOCOL_VERSION,
  startVerifier,
  type Verifier,
  type VerifierOptions,
} from './server.ts';
export { ChainCache, type Verdict, type VerifyOptions, verifyEvidence } from './verify.ts';
