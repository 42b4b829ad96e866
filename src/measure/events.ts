/**
 * TCG PC Client event types and the data the UEFI ones carry (UEFI_VARIABLE_DATA,
 * UEFI_IMAGE_LOAD_EVENT, platform firmware blobs, text descriptions), decoded for people.
 */
import { decodeGuid, GUID_NAMES } from '../efi/guid.ts';

export const EV = {
  PREBOOT_CERT: 0x0,
  POST_CODE: 0x1,
  NO_ACTION: 0x3,
  SEPARATOR: 0x4,
  ACTION: 0x5,
  EVENT_TAG: 0x6,
  S_CRTM_CONTENTS: 0x7,
  S_CRTM_VERSION: 0x8,
  CPU_MICROCODE: 0x9,
  PLATFORM_CONFIG_FLAGS: 0xa,
  TABLE_OF_DEVICES: 0xb,
  COMPACT_HASH: 0xc,
  IPL: 0xd,
  IPL_PARTITION_DATA: 0xe,
  NONHOST_CODE: 0xf,
  NONHOST_CONFIG: 0x10,
  NONHOST_INFO: 0x11,
  OMIT_BOOT_DEVICE_EVENTS: 0x12,
  EFI_VARIABLE_DRIVER_CONFIG: 0x80000001,
  EFI_VARIABLE_BOOT: 0x80000002,
  EFI_BOOT_SERVICES_APPLICATION: 0x80000003,
  EFI_BOOT_SERVICES_DRIVER: 0x80000004,
  EFI_RUNTIME_SERVICES_DRIVER: 0x80000005,
  EFI_GPT_EVENT: 0x80000006,
  EFI_ACTION: 0x80000007,
  EFI_PLATFORM_FIRMWARE_BLOB: 0x80000008,
  EFI_HANDOFF_TABLES: 0x80000009,
  EFI_PLATFORM_FIRMWARE_BLOB2: 0x8000000a,
  EFI_HANDOFF_TABLES2: 0x8000000b,
  EFI_VARIABLE_BOOT2: 0x8000000c,
  EFI_HCRTM_EVENT: 0x80000010,
  EFI_VARIABLE_AUTHORITY: 0x800000e0,
  EFI_SPDM_FIRMWARE_BLOB: 0x800000e1,
  EFI_SPDM_FIRMWARE_CONFIG: 0x800000e2,
} as const;

const NAMES = new Map<number, string>(Object.entries(EV).map(([name, code]) => [code, `EV_${name}`]));

export function eventTypeName(type: number): string {
  return NAMES.get(type) ?? `0x${type.toString(16).padStart(8, '0')}`;
}

/** UEFI_VARIABLE_DATA: {GUID, u64 name length in characters, u64 data length, UTF-16 name, data}. */
export interface VariableData {
  guid: string;
  name: string;
  data: Buffer;
}

export function decodeVariableData(event: Buffer): VariableData | undefined {
  if (event.length < 32) return undefined;
  const nameLength = Number(event.readBigUInt64LE(16));
  const dataLength = Number(event.readBigUInt64LE(24));
  if (!Number.isSafeInteger(nameLength) || !Number.isSafeInteger(dataLength)) return undefined;
  if (32 + nameLength * 2 + dataLength !== event.length) return undefined;
  return {
    guid: decodeGuid(event, 0),
    name: event.toString('utf16le', 32, 32 + nameLength * 2),
    data: event.subarray(32 + nameLength * 2),
  };
}

const printable = (text: string) => /^[\x20-\x7e]*$/.test(text);

function text(event: Buffer): string | undefined {
  const ascii = event.toString('latin1').replace(/\0+$/, '');
  if (ascii.length > 0 && printable(ascii)) return JSON.stringify(ascii);
  if (event.length % 2 === 0) {
    const wide = event.toString('utf16le').replace(/\0+$/, '');
    if (wide.length > 0 && printable(wide)) return JSON.stringify(wide);
  }
  return undefined;
}

/** The file path nodes of a UEFI device path (media / file path, type 4 subtype 4). */
function devicePathFiles(path: Buffer): string[] {
  const files: string[] = [];
  for (let at = 0; at + 4 <= path.length; ) {
    const type = path[at]!;
    const subtype = path[at + 1]!;
    const length = path.readUInt16LE(at + 2);
    if (length < 4 || at + length > path.length) break;
    if (type === 4 && subtype === 4)
      files.push(path.toString('utf16le', at + 4, at + length).replace(/\0+$/, ''));
    if (type === 0x7f) break;
    at += length;
  }
  return files;
}

/** A one-line description of an event's data, as far as it is known. */
export function describeEvent(type: number, event: Buffer): string {
  switch (type) {
    case EV.EFI_VARIABLE_DRIVER_CONFIG:
    case EV.EFI_VARIABLE_BOOT:
    case EV.EFI_VARIABLE_BOOT2:
    case EV.EFI_VARIABLE_AUTHORITY: {
      const v = decodeVariableData(event);
      if (!v) break;
      const owner = GUID_NAMES[v.guid] ?? v.guid;
      return `${v.name} (${owner}), ${v.data.length} bytes`;
    }
    case EV.EFI_BOOT_SERVICES_APPLICATION:
    case EV.EFI_BOOT_SERVICES_DRIVER:
    case EV.EFI_RUNTIME_SERVICES_DRIVER: {
      if (event.length < 32) break;
      const length = Number(event.readBigUInt64LE(8));
      const pathLength = Number(event.readBigUInt64LE(24));
      const files =
        pathLength <= event.length - 32 ? devicePathFiles(event.subarray(32, 32 + pathLength)) : [];
      return `image of ${length} bytes${files.length ? ` ${files.join('')}` : ''}`;
    }
    case EV.EFI_PLATFORM_FIRMWARE_BLOB:
      if (event.length === 16)
        return `firmware blob at 0x${event.readBigUInt64LE(0).toString(16)}, ${event.readBigUInt64LE(8)} bytes`;
      break;
    case EV.EFI_PLATFORM_FIRMWARE_BLOB2: {
      const n = event[0] ?? 0;
      if (event.length === 1 + n + 16)
        return `firmware blob ${text(event.subarray(1, 1 + n)) ?? ''}, ${event.readBigUInt64LE(1 + n + 8)} bytes`;
      break;
    }
    case EV.SEPARATOR:
      return event.toString('hex');
    case EV.NO_ACTION: {
      const signature = event.toString('latin1', 0, 16).replace(/\0+$/, '');
      if (signature === 'StartupLocality' && event.length === 17) return `StartupLocality ${event[16]}`;
      if (printable(signature) && signature.length > 0) return signature;
      break;
    }
  }
  return text(event) ?? `${event.length} bytes`;
}
