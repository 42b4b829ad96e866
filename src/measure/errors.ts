import { SealError } from '../errors.ts';

export type MeasureErrorCode =
  | 'MEASURE_INVALID_OPTION'
  /** An event log that does not parse (bad header, an event running past the end, unknown digest sizes). */
  | 'MEASURE_BAD_EVENT_LOG'
  /** Replayed PCRs differ from the values they were compared with. */
  | 'MEASURE_PCR_MISMATCH';

export class MeasureError extends SealError<MeasureErrorCode> {}
