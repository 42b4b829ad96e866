/** UEFI formats: GUIDs, EFI_TIME, signature lists, variables, authenticated payloads and OVMF's varstore. */
export {
  type AuthenticatedVariable,
  encodeAuthenticatedVariable,
  parseAuthenticatedVariable,
  WIN_CERT_TYPE_EFI_GUID,
} from './auth.ts';
export { EfiError, type EfiErrorCode } from './errors.ts';
export { decodeGuid, encodeGuid, GUID_NAMES, GUIDS } from './guid.ts';
export {
  SECURE_BOOT_VARIABLES,
  type SecureBootState,
  type SecureBootVariable,
  secureBootState,
} from './secure-boot.ts';
export {
  encodeSignatureData,
  encodeSignatureLists,
  parseSignatureLists,
  type SignatureEntry,
} from './siglist.ts';
export { decodeEfiTime, EFI_TIME_SIZE, encodeEfiTime } from './time.ts';
export { ATTR, authenticatedPayload, encodeVariableData, SECURE_BOOT_ATTRIBUTES } from './variable.ts';
export { type EfiVariable, Varstore, variableTime } from './varstore.ts';
