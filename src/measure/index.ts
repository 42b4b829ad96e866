/**
 * Measured boot: PCR banks, TCG event logs and their replay, and PCR prediction for Seal's boot
 * chain; launch measurements of confidential VMs (AMD SEV, SEV-ES, SEV-SNP, Intel TDX's MRTD) and
 * SNP attestation reports (cvm/).
 */
export {
  ALGORITHM_IDS,
  BANKS,
  type Bank,
  DIGEST_SIZES,
  digest,
  extend,
  parseBank,
  parsePcrList,
  zeros,
} from './banks.ts';
export * from './cvm/index.ts';
export { MeasureError, type MeasureErrorCode } from './errors.ts';
export {
  describeEventLog,
  type EventDescription,
  type EventLog,
  type LogEvent,
  type PcrValues,
  parseEventLog,
  replayEventLog,
} from './eventlog.ts';
export { decodeVariableData, describeEvent, EV, eventTypeName, type VariableData } from './events.ts';
export {
  CALLING_EFI_APPLICATION,
  measuredSections,
  type PcrPrediction,
  PHASES,
  type PredictedEvent,
  type PredictOptions,
  predictPcrs,
  sectionMeasurements,
  stubVersion,
} from './pcr.ts';
