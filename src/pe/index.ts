/** PE/COFF images: reading (streamed from files), the checksum, the Authenticode digest and the certificate table. */
export {
  encodeCertificateTable,
  parseCertificateTable,
  WIN_CERT_REVISION_2_0,
  WIN_CERT_TYPE_PKCS_SIGNED_DATA,
  WIN_CERTIFICATE_HEADER,
  type WinCertificate,
} from './certificates.ts';
export { imageChecksum, PeChecksum } from './checksum.ts';
export {
  type AuthenticodeLayout,
  authenticodeDigest,
  authenticodeDigests,
  authenticodeLayout,
  type DigestAlgorithm,
  type LayoutOptions,
  type Range,
  unsignedRanges,
} from './digest.ts';
export { PeError, type PeErrorCode } from './errors.ts';
export {
  alignUp,
  CERTIFICATE_DIRECTORY,
  type DataDirectory,
  DEBUG_DIRECTORY,
  MACHINE_ARM64,
  MACHINE_X64,
  PE32_MAGIC,
  PE32PLUS_MAGIC,
  type PeHeaders,
  type PeSection,
  SCN_CNT_CODE,
  SCN_CNT_INITIALIZED_DATA,
  SCN_MEM_EXECUTE,
  SCN_MEM_READ,
  SCN_MEM_WRITE,
  SECTION_HEADER_SIZE,
} from './format.ts';
export { PeImage, sectionSource, withPeImage } from './reader.ts';
export { type ByteSource, bufferSource, chunks, fileSource } from './source.ts';
export { PeStream, type PeStreamOptions } from './writer.ts';
