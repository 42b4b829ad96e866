/**
 * OVMF's variable store file (`OVMF_VARS_4M.fd`): a firmware volume (EFI_FIRMWARE_VOLUME_HEADER,
 * header length at byte 48, a 16-bit checksum over the header) holding EDK2's authenticated
 * variable store (VARIABLE_STORE_HEADER: format GUID, size, format 0x5A, state 0xFE), whose
 * records are AUTHENTICATED_VARIABLE_HEADER {u16 StartId 0x55AA, u8 State, u8 Reserved,
 * u32 Attributes, u64 MonotonicCount, EFI_TIME TimeStamp, u32 PubKeyIndex, u32 NameSize,
 * u32 DataSize, VendorGuid}, the UTF-16 name, the data, each record 4-byte aligned; free space
 * is 0xFF. Reading keeps the live copy of each variable (a record whose state says added and not
 * deleted); writing rebuilds the store compactly, as the firmware's reclaim does, and leaves the
 * rest of the file (the fault-tolerant-write areas) untouched.
 */
import { EfiError } from './errors.ts';
import { decodeGuid, encodeGuid, GUIDS } from './guid.ts';
import { decodeEfiTime, EFI_TIME_SIZE } from './time.ts';

const FV_SIGNATURE = 0x4856465f; // '_FVH'
const STORE_HEADER_SIZE = 28;
const RECORD_HEADER_SIZE = 60;
const START_ID = 0x55aa;
const VAR_ADDED = 0x3f;
const VAR_FORMATTED = 0x5a;
const VAR_HEALTHY = 0xfe;

export interface EfiVariable {
  name: string;
  guid: string;
  attributes: number;
  data: Buffer;
  /** The 16-byte EFI_TIME of time-based authenticated variables (zeros otherwise). */
  timestamp: Buffer;
  monotonicCount: bigint;
  pubKeyIndex: number;
}

interface Layout {
  storeOffset: number;
  storeSize: number;
}

const align4 = (n: number) => (n + 3) & ~3;

function checksum16(data: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < data.length; i += 2) sum = (sum + data.readUInt16LE(i)) & 0xffff;
  return sum;
}

/** A variable store file, read into memory (they are a few hundred KiB). */
export class Varstore {
  readonly #file: Buffer;
  readonly #layout: Layout;
  readonly subject: string;
  #variables: EfiVariable[];

  private constructor(file: Buffer, layout: Layout, variables: EfiVariable[], subject: string) {
    this.#file = file;
    this.#layout = layout;
    this.#variables = variables;
    this.subject = subject;
  }

  static parse(file: Uint8Array, subject = 'varstore'): Varstore {
    const data = Buffer.from(file);
    const fail = (message: string) => new EfiError('EFI_BAD_VARSTORE', `${subject}: ${message}`, { subject });
    if (data.length < 0x48 + STORE_HEADER_SIZE) throw fail('too short for a firmware volume');
    if (data.readUInt32LE(40) !== FV_SIGNATURE) throw fail('no firmware volume signature (_FVH) at byte 40');
    const fvLength = Number(data.readBigUInt64LE(32));
    const headerLength = data.readUInt16LE(48);
    if (fvLength > data.length) throw fail(`the firmware volume (${fvLength} bytes) is longer than the file`);
    if (headerLength < 56 || headerLength % 2 !== 0 || headerLength + STORE_HEADER_SIZE > fvLength)
      throw fail(`firmware volume header length ${headerLength} is wrong`);
    if (checksum16(data.subarray(0, headerLength)) !== 0)
      throw fail('the firmware volume header checksum is wrong');
    if (decodeGuid(data, 16) !== GUIDS.systemNvDataFv)
      throw fail('the firmware volume is not an NV variable volume');
    const storeOffset = headerLength;
    const format = decodeGuid(data, storeOffset);
    if (format !== GUIDS.authenticatedVariableStore)
      throw fail(
        format === GUIDS.variableStore
          ? 'the variable store is not the authenticated kind (no Secure Boot variables possible)'
          : `unknown variable store format ${format}`,
      );
    const storeSize = data.readUInt32LE(storeOffset + 16);
    if (storeSize < STORE_HEADER_SIZE || storeOffset + storeSize > fvLength)
      throw fail(`the variable store size ${storeSize} does not fit the volume`);
    if (data[storeOffset + 20] !== VAR_FORMATTED || data[storeOffset + 21] !== VAR_HEALTHY)
      throw fail('the variable store is not formatted and healthy');
    const end = storeOffset + storeSize;
    const records: (EfiVariable & { state: number })[] = [];
    let at = align4(storeOffset + STORE_HEADER_SIZE);
    while (at + RECORD_HEADER_SIZE <= end && data.readUInt16LE(at) === START_ID) {
      const state = data[at + 2]!;
      const nameSize = data.readUInt32LE(at + 36);
      const dataSize = data.readUInt32LE(at + 40);
      const nameAt = at + RECORD_HEADER_SIZE;
      if (nameSize > end - nameAt || dataSize > end - nameAt - nameSize)
        throw fail(`the variable record at byte ${at} runs past the store`);
      if (nameSize % 2 !== 0) throw fail(`the variable record at byte ${at} has an odd name size`);
      records.push({
        state,
        attributes: data.readUInt32LE(at + 4),
        monotonicCount: data.readBigUInt64LE(at + 8),
        timestamp: Buffer.from(data.subarray(at + 16, at + 16 + EFI_TIME_SIZE)),
        pubKeyIndex: data.readUInt32LE(at + 32),
        guid: decodeGuid(data, at + 44),
        name: data.toString('utf16le', nameAt, nameAt + nameSize).replace(/\0+$/, ''),
        data: Buffer.from(data.subarray(nameAt + nameSize, nameAt + nameSize + dataSize)),
      });
      at = align4(nameAt + nameSize + dataSize);
    }
    // A record is live once added and until deleted; one in delete transition only when no
    // added copy of the same variable follows it.
    const live = (s: number) => (s & 0xc0) === 0 && (s & 0x02) !== 0;
    const key = (v: EfiVariable) => `${v.guid}/${v.name}`;
    const added = new Set(records.filter((r) => live(r.state) && r.state & 0x01).map(key));
    const variables = records
      .filter((r) => live(r.state) && (r.state & 0x01 || !added.has(key(r))))
      .map(({ state: _, ...v }) => v);
    return new Varstore(data, { storeOffset, storeSize }, variables, subject);
  }

  /** The live variables, in store order. */
  variables(): EfiVariable[] {
    return [...this.#variables];
  }

  get(name: string, guid: string): EfiVariable | undefined {
    return this.#variables.find((v) => v.name === name && v.guid === guid);
  }

  /** Adds or replaces a variable (replaced ones keep their place). */
  set(
    variable: Omit<EfiVariable, 'timestamp' | 'monotonicCount' | 'pubKeyIndex'> & Partial<EfiVariable>,
  ): void {
    const full: EfiVariable = {
      timestamp: Buffer.alloc(EFI_TIME_SIZE),
      monotonicCount: 0n,
      pubKeyIndex: 0,
      ...variable,
    };
    const i = this.#variables.findIndex((v) => v.name === variable.name && v.guid === variable.guid);
    if (i >= 0) this.#variables[i] = full;
    else this.#variables.push(full);
  }

  delete(name: string, guid: string): void {
    this.#variables = this.#variables.filter((v) => !(v.name === name && v.guid === guid));
  }

  /** The file with the store rebuilt from the current variables. */
  toBuffer(): Buffer {
    const out = Buffer.from(this.#file);
    const { storeOffset, storeSize } = this.#layout;
    const end = storeOffset + storeSize;
    let at = align4(storeOffset + STORE_HEADER_SIZE);
    out.fill(0xff, at, end);
    for (const v of this.#variables) {
      const name = Buffer.from(`${v.name}\0`, 'utf16le');
      const size = RECORD_HEADER_SIZE + name.length + v.data.length;
      if (at + size > end)
        throw new EfiError(
          'EFI_VARSTORE_FULL',
          `${this.subject}: no room for variable ${v.name} (${storeSize}-byte store)`,
          {
            subject: this.subject,
          },
        );
      out.writeUInt16LE(START_ID, at);
      out[at + 2] = VAR_ADDED;
      out[at + 3] = 0;
      out.writeUInt32LE(v.attributes, at + 4);
      out.writeBigUInt64LE(v.monotonicCount, at + 8);
      v.timestamp.copy(out, at + 16, 0, EFI_TIME_SIZE);
      out.writeUInt32LE(v.pubKeyIndex, at + 32);
      out.writeUInt32LE(name.length, at + 36);
      out.writeUInt32LE(v.data.length, at + 40);
      encodeGuid(v.guid).copy(out, at + 44);
      name.copy(out, at + RECORD_HEADER_SIZE);
      v.data.copy(out, at + RECORD_HEADER_SIZE + name.length);
      at = align4(at + size);
    }
    return out;
  }
}

/** A variable's timestamp as a date, when set. */
export function variableTime(variable: EfiVariable): Date | undefined {
  return decodeEfiTime(variable.timestamp);
}
