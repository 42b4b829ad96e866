/**
 * TCG event logs (`binary_bios_measurements`): the crypto-agile format of TPM 2.0 firmware (a
 * legacy SHA-1 header event carrying the `Spec ID Event03` structure that lists the banks and
 * digest sizes, then TCG_PCR_EVENT2 records with one digest per bank) and the older SHA-1-only
 * format. Parsing checks every length against the log; replay extends each bank's PCRs with the
 * recorded digests (EV_NO_ACTION events are not extended; a StartupLocality event sets PCR 0's
 * starting value).
 */
import { type Bank, bankOfAlgorithm, DIGEST_SIZES, extend, zeros } from './banks.ts';
import { MeasureError } from './errors.ts';
import { describeEvent, EV, eventTypeName } from './events.ts';

export interface LogEvent {
  /** 0-based position in the log (the header event is 0). */
  index: number;
  pcr: number;
  type: number;
  /** Digests by bank (banks the log records but Seal does not know are left out). */
  digests: Partial<Record<Bank, Buffer>>;
  data: Buffer;
}

export interface EventLog {
  format: 'crypto-agile' | 'sha1';
  /** The banks the log carries digests for, with their TPM algorithm ids. */
  banks: Bank[];
  /** Every event, the header event first. */
  events: LogEvent[];
  /** The locality the firmware started the TPM at (PCR 0's starting value), from StartupLocality. */
  startupLocality: number;
}

const MAX_EVENT_DATA = 16 << 20;

export function parseEventLog(log: Uint8Array, subject = 'event log'): EventLog {
  const data = Buffer.from(log.buffer, log.byteOffset, log.byteLength);
  const fail = (message: string, at: number) =>
    new MeasureError('MEASURE_BAD_EVENT_LOG', `${subject}: ${message} at byte ${at}`, { subject });
  const need = (at: number, n: number, what: string) => {
    if (at + n > data.length) throw fail(`${what} runs past the end of the log`, at);
  };
  // The first event is always in the SHA-1 format.
  need(0, 32, 'the header event');
  const headerSize = data.readUInt32LE(28);
  need(32, headerSize, 'the header event data');
  const header: LogEvent = {
    index: 0,
    pcr: data.readUInt32LE(0),
    type: data.readUInt32LE(4),
    digests: { sha1: data.subarray(8, 28) },
    data: data.subarray(32, 32 + headerSize),
  };
  const events: LogEvent[] = [header];
  let at = 32 + headerSize;
  let startupLocality = 0;
  const signature = header.data.toString('latin1', 0, 16);
  if (header.type === EV.NO_ACTION && signature === 'Spec ID Event03\0') {
    // TCG_EfiSpecIDEventStruct: signature, platform class, versions, uintn size, the algorithms.
    const spec = header.data;
    if (spec.length < 28) throw fail('the Spec ID event is too short', 32);
    const count = spec.readUInt32LE(24);
    if (count === 0 || count > 16 || spec.length < 28 + count * 4 + 1)
      throw fail(`the Spec ID event lists ${count} algorithms`, 32);
    const sizes = new Map<number, number>();
    for (let i = 0; i < count; i++) sizes.set(spec.readUInt16LE(28 + i * 4), spec.readUInt16LE(30 + i * 4));
    for (const [id, size] of sizes) {
      const bank = bankOfAlgorithm(id);
      if (bank && DIGEST_SIZES[bank] !== size)
        throw fail(`algorithm 0x${id.toString(16)} has digest size ${size}`, 32);
      if (size === 0 || size > 128) throw fail(`algorithm 0x${id.toString(16)} has digest size ${size}`, 32);
    }
    const banks = [...sizes.keys()].map(bankOfAlgorithm).filter((b): b is Bank => b !== undefined);
    while (at < data.length) {
      const start = at;
      need(at, 12, `event ${events.length}`);
      const pcr = data.readUInt32LE(at);
      const type = data.readUInt32LE(at + 4);
      const digestCount = data.readUInt32LE(at + 8);
      if (pcr > 31) throw fail(`event ${events.length} names PCR ${pcr}`, start);
      if (digestCount > count) throw fail(`event ${events.length} has ${digestCount} digests`, start);
      at += 12;
      const digests: Partial<Record<Bank, Buffer>> = {};
      for (let i = 0; i < digestCount; i++) {
        need(at, 2, `event ${events.length} digest`);
        const id = data.readUInt16LE(at);
        const size = sizes.get(id);
        if (size === undefined)
          throw fail(`event ${events.length} has a digest of unlisted algorithm 0x${id.toString(16)}`, at);
        need(at + 2, size, `event ${events.length} digest`);
        const bank = bankOfAlgorithm(id);
        if (bank) digests[bank] = data.subarray(at + 2, at + 2 + size);
        at += 2 + size;
      }
      need(at, 4, `event ${events.length} size`);
      const size = data.readUInt32LE(at);
      if (size > MAX_EVENT_DATA) throw fail(`event ${events.length} declares ${size} bytes of data`, at);
      need(at + 4, size, `event ${events.length} data`);
      const event: LogEvent = {
        index: events.length,
        pcr,
        type,
        digests,
        data: data.subarray(at + 4, at + 4 + size),
      };
      at += 4 + size;
      if (
        type === EV.NO_ACTION &&
        pcr === 0 &&
        size === 17 &&
        event.data.toString('latin1', 0, 16) === 'StartupLocality\0'
      )
        startupLocality = event.data[16]!;
      events.push(event);
    }
    return { format: 'crypto-agile', banks, events, startupLocality };
  }
  // The SHA-1 log of TPM 1.2 firmware: every event like the header.
  while (at < data.length) {
    const start = at;
    need(at, 32, `event ${events.length}`);
    const size = data.readUInt32LE(at + 28);
    if (size > MAX_EVENT_DATA) throw fail(`event ${events.length} declares ${size} bytes of data`, start);
    need(at + 32, size, `event ${events.length} data`);
    events.push({
      index: events.length,
      pcr: data.readUInt32LE(at),
      type: data.readUInt32LE(at + 4),
      digests: { sha1: data.subarray(at + 8, at + 28) },
      data: data.subarray(at + 32, at + 32 + size),
    });
    at += 32 + size;
  }
  return {
    format: 'sha1',
    banks: ['sha1'],
    events: events.slice(header.type === EV.NO_ACTION ? 1 : 0),
    startupLocality,
  };
}

export type PcrValues = Partial<Record<Bank, Record<number, Buffer>>>;

/** The PCR values the log's events produce, per bank, for every PCR an event touches. */
export function replayEventLog(log: EventLog): PcrValues {
  const values: PcrValues = {};
  for (const bank of log.banks) values[bank] = {};
  for (const event of log.events) {
    if (event.type === EV.NO_ACTION) continue;
    for (const bank of log.banks) {
      const digest = event.digests[bank];
      if (!digest) continue;
      const pcrs = values[bank]!;
      let current = pcrs[event.pcr];
      if (!current) {
        current = zeros(bank);
        if (event.pcr === 0 && log.startupLocality) current[current.length - 1] = log.startupLocality;
      }
      pcrs[event.pcr] = extend(bank, current, digest);
    }
  }
  return values;
}

export interface EventDescription {
  index: number;
  pcr: number;
  type: string;
  typeCode: number;
  digests: Partial<Record<Bank, string>>;
  description: string;
  /** The event data, hex (up to 4 KiB of it). */
  data: string;
  dataSize: number;
}

/** The events in a form for people and for JSON. */
export function describeEventLog(log: EventLog): EventDescription[] {
  return log.events.map((e) => ({
    index: e.index,
    pcr: e.pcr,
    type: eventTypeName(e.type),
    typeCode: e.type,
    digests: Object.fromEntries(Object.entries(e.digests).map(([b, d]) => [b, d.toString('hex')])),
    description: describeEvent(e.type, e.data),
    data: e.data.subarray(0, 4096).toString('hex'),
    dataSize: e.data.length,
  }));
}
