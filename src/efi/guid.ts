/**
 * EFI GUIDs: 16 bytes, the first three fields little-endian (`aaf32c78-947b-439a-…` is stored
 * as 78 2c f3 aa 7b 94 9a 43 …), and the well-known ones Secure Boot and OVMF use.
 */
import { EfiError } from './errors.ts';

const GUID = /^([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})$/i;

export function encodeGuid(text: string): Buffer {
  const m = GUID.exec(text);
  if (!m) throw new EfiError('EFI_BAD_DATA', `${JSON.stringify(text)} is not a GUID`);
  const out = Buffer.alloc(16);
  out.writeUInt32LE(Number.parseInt(m[1]!, 16), 0);
  out.writeUInt16LE(Number.parseInt(m[2]!, 16), 4);
  out.writeUInt16LE(Number.parseInt(m[3]!, 16), 6);
  Buffer.from(m[4]! + m[5]!, 'hex').copy(out, 8);
  return out;
}

export function decodeGuid(bytes: Uint8Array, offset = 0): string {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset + offset, 16);
  const hex = (n: number, width: number) => n.toString(16).padStart(width, '0');
  const tail = b.subarray(8).toString('hex');
  return `${hex(b.readUInt32LE(0), 8)}-${hex(b.readUInt16LE(4), 4)}-${hex(b.readUInt16LE(6), 4)}-${tail.slice(0, 4)}-${tail.slice(4)}`;
}

export const GUIDS = {
  /** EFI_GLOBAL_VARIABLE: PK, KEK, SecureBoot, SetupMode, Boot####… */
  globalVariable: '8be4df61-93ca-11d2-aa0d-00e098032b8c',
  /** EFI_IMAGE_SECURITY_DATABASE_GUID: db, dbx, dbt, dbr. */
  imageSecurityDatabase: 'd719b2cb-3d3a-4596-a3bc-dad00e67656f',
  certX509: 'a5c059a1-94e4-4aa7-87b5-ab155c2bf072',
  certSha256: 'c1c41626-504c-4092-aca9-41f936934328',
  certSha384: 'ff3e5307-9fd0-48c9-85f1-8ad56c701e01',
  certSha512: '093e0fae-a6c4-4f50-9f1b-d41e2b89c19a',
  certSha1: '826ca512-cf10-4ac9-b187-be01496631bd',
  certX509Sha256: '3bd2a492-96c0-4079-b420-fcf98ef103ed',
  certX509Sha384: '7076876e-80c2-4ee6-aad2-28b349a6865b',
  certX509Sha512: '446dbf63-2502-4cda-bcfa-2465d2b0fe9d',
  certRsa2048: '3c5766e8-269c-4e34-aa14-ed776e85b3b6',
  /** EFI_CERT_TYPE_PKCS7_GUID: the certificate type of time-based authenticated variables. */
  certPkcs7: '4aafd29d-68df-49ee-8aa9-347d375665a7',
  /** EDK2's SecureBootEnable, CustomMode, VendorKeysNv and certdb variables. */
  secureBootEnableDisable: 'f0a30bc7-af08-4556-99c4-001009c93a44',
  customMode: 'c076ec0c-7028-4399-a072-71ee5c448b9f',
  vendorKeysNv: '9073e4e0-60ec-4b6e-9903-4c223c260f3c',
  certDb: 'd9bee56e-75dc-49d9-b4d7-b534210f637a',
  /** The variable store formats of EDK2's variable driver, and the firmware volume file system. */
  authenticatedVariableStore: 'aaf32c78-947b-439a-a180-2e144ec37792',
  variableStore: 'ddcf3616-3275-4164-98b6-fe85707ffe7d',
  systemNvDataFv: 'fff12b8d-7696-4c8b-a985-2747075b4f50',
} as const;

/** Names for well-known GUIDs, for listings. */
export const GUID_NAMES: Record<string, string> = {
  [GUIDS.globalVariable]: 'EFI global variable',
  [GUIDS.imageSecurityDatabase]: 'image security database',
  [GUIDS.certX509]: 'X.509',
  [GUIDS.certSha256]: 'SHA-256',
  [GUIDS.certSha384]: 'SHA-384',
  [GUIDS.certSha512]: 'SHA-512',
  [GUIDS.certSha1]: 'SHA-1',
  [GUIDS.certX509Sha256]: 'X.509 TBS SHA-256',
  [GUIDS.certX509Sha384]: 'X.509 TBS SHA-384',
  [GUIDS.certX509Sha512]: 'X.509 TBS SHA-512',
  [GUIDS.certRsa2048]: 'RSA-2048',
};
