/**
 * EFI_TIME {u16 Year, u8 Month, u8 Day, u8 Hour, u8 Minute, u8 Second, u8 Pad1, u32 Nanosecond,
 * i16 TimeZone, u8 Daylight, u8 Pad2}: the timestamps of time-based authenticated variables.
 * Seal writes them in UTC with the nanosecond, time zone and daylight fields zero, as the UEFI
 * specification requires of EFI_VARIABLE_AUTHENTICATION_2 timestamps.
 */
import { EfiError } from './errors.ts';

export const EFI_TIME_SIZE = 16;

export function encodeEfiTime(date: Date): Buffer {
  if (Number.isNaN(date.getTime())) throw new EfiError('EFI_INVALID_OPTION', 'invalid date');
  const year = date.getUTCFullYear();
  if (year < 1900 || year > 9999)
    throw new EfiError('EFI_INVALID_OPTION', `year ${year} does not fit EFI_TIME`);
  const out = Buffer.alloc(EFI_TIME_SIZE);
  out.writeUInt16LE(year, 0);
  out[2] = date.getUTCMonth() + 1;
  out[3] = date.getUTCDate();
  out[4] = date.getUTCHours();
  out[5] = date.getUTCMinutes();
  out[6] = date.getUTCSeconds();
  return out;
}

/** The time an EFI_TIME names (time zone applied when given); undefined for an all-zero one. */
export function decodeEfiTime(bytes: Uint8Array, offset = 0): Date | undefined {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset + offset, EFI_TIME_SIZE);
  const year = b.readUInt16LE(0);
  if (year === 0) return undefined;
  const zone = b.readInt16LE(12);
  const utc = Date.UTC(year, b[2]! - 1, b[3]!, b[4]!, b[5]!, b[6]!);
  // TimeZone is minutes from UTC (localtime = UTC - TimeZone), 0x07FF when unspecified.
  return new Date(zone === 0x07ff ? utc : utc + zone * 60_000);
}
