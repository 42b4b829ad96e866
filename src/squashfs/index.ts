export { DEFAULT_LEVEL, type WriteCompression, XZ_FILTERS, type XzFilter } from './compression.ts';
export { type CompressorName, SquashfsError, type SquashfsErrorCode, type Superblock } from './format.ts';
export { type SquashfsDirEntry, SquashfsImage, type SquashfsInode } from './reader.ts';
export { type SquashfsWriteOptions, type SquashfsWriteResult, writeSquashfs } from './writer.ts';
