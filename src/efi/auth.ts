/**
 * Time-based authenticated variable payloads (`.auth` files, what efi-updatevar writes and
 * sign-efi-sig-list makes): EFI_VARIABLE_AUTHENTICATION_2 {EFI_TIME TimeStamp,
 * WIN_CERTIFICATE_UEFI_GUID {u32 dwLength, u16 wRevision 0x0200, u16 wCertificateType 0x0EF1,
 * CertType EFI_CERT_TYPE_PKCS7_GUID, CertData: a DER PKCS#7 SignedData}} followed by the new
 * variable data. The signature covers `authenticatedPayload` (variable.ts).
 */
import { EfiError } from './errors.ts';
import { decodeGuid, encodeGuid, GUIDS } from './guid.ts';
import { EFI_TIME_SIZE } from './time.ts';

export const WIN_CERT_TYPE_EFI_GUID = 0x0ef1;

export function encodeAuthenticatedVariable(timestamp: Buffer, pkcs7: Uint8Array, data: Uint8Array): Buffer {
  const header = Buffer.alloc(EFI_TIME_SIZE + 24);
  timestamp.copy(header, 0, 0, EFI_TIME_SIZE);
  header.writeUInt32LE(24 + pkcs7.length, EFI_TIME_SIZE);
  header.writeUInt16LE(0x0200, EFI_TIME_SIZE + 4);
  header.writeUInt16LE(WIN_CERT_TYPE_EFI_GUID, EFI_TIME_SIZE + 6);
  encodeGuid(GUIDS.certPkcs7).copy(header, EFI_TIME_SIZE + 8);
  return Buffer.concat([header, pkcs7, data]);
}

export interface AuthenticatedVariable {
  timestamp: Buffer;
  pkcs7: Buffer;
  data: Buffer;
}

export function parseAuthenticatedVariable(
  payload: Uint8Array,
  subject = 'authenticated variable',
): AuthenticatedVariable {
  const b = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const fail = (message: string) => new EfiError('EFI_BAD_DATA', `${subject}: ${message}`, { subject });
  if (b.length < EFI_TIME_SIZE + 24) throw fail('too short for EFI_VARIABLE_AUTHENTICATION_2');
  const length = b.readUInt32LE(EFI_TIME_SIZE);
  if (
    b.readUInt16LE(EFI_TIME_SIZE + 4) !== 0x0200 ||
    b.readUInt16LE(EFI_TIME_SIZE + 6) !== WIN_CERT_TYPE_EFI_GUID
  )
    throw fail('the certificate is not a WIN_CERTIFICATE_UEFI_GUID');
  if (decodeGuid(b, EFI_TIME_SIZE + 8) !== GUIDS.certPkcs7) throw fail('the certificate type is not PKCS#7');
  if (length < 24 || EFI_TIME_SIZE + length > b.length)
    throw fail(`certificate length ${length} does not fit`);
  return {
    timestamp: b.subarray(0, EFI_TIME_SIZE),
    pkcs7: b.subarray(EFI_TIME_SIZE + 24, EFI_TIME_SIZE + length),
    data: b.subarray(EFI_TIME_SIZE + length),
  };
}
