export { type Compression, compress, decompress, sniffCompression } from './compress.ts';
export { TarError, type TarErrorCode } from './errors.ts';
export { readTar, type TarEntry, type TarEntryType, type TarHeader } from './reader.ts';
export { entryHeaders, type TarWriteEntry, writeTar } from './writer.ts';
