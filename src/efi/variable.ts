/**
 * UEFI variables as firmware measures and authenticates them: UEFI_VARIABLE_DATA (what
 * EV_EFI_VARIABLE_* events hash) and the serialization a time-based authenticated write signs
 * (name ‖ vendor GUID ‖ attributes ‖ timestamp ‖ data), plus the attribute bits.
 */
import { encodeGuid } from './guid.ts';

export const ATTR = {
  NON_VOLATILE: 0x1,
  BOOTSERVICE_ACCESS: 0x2,
  RUNTIME_ACCESS: 0x4,
  HARDWARE_ERROR_RECORD: 0x8,
  AUTHENTICATED_WRITE_ACCESS: 0x10,
  TIME_BASED_AUTHENTICATED_WRITE_ACCESS: 0x20,
  APPEND_WRITE: 0x40,
} as const;

/** NV | BS | RT | time-based authenticated write: PK, KEK, db, dbx. */
export const SECURE_BOOT_ATTRIBUTES = 0x27;

/** UEFI_VARIABLE_DATA {GUID, u64 name length (characters), u64 data length, UTF-16 name, data}. */
export function encodeVariableData(name: string, guid: string, data: Uint8Array): Buffer {
  const header = Buffer.alloc(32);
  encodeGuid(guid).copy(header, 0);
  header.writeBigUInt64LE(BigInt(name.length), 16);
  header.writeBigUInt64LE(BigInt(data.length), 24);
  return Buffer.concat([header, Buffer.from(name, 'utf16le'), data]);
}

/** What an EFI_VARIABLE_AUTHENTICATION_2 signature covers. */
export function authenticatedPayload(
  name: string,
  guid: string,
  attributes: number,
  timestamp: Buffer,
  data: Uint8Array,
): Buffer {
  const attr = Buffer.alloc(4);
  attr.writeUInt32LE(attributes, 0);
  return Buffer.concat([Buffer.from(name, 'utf16le'), encodeGuid(guid), attr, timestamp, data]);
}
