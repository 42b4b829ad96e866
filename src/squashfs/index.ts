export { DEFAULT_LEVEL, type WriteCompression } from './compression.ts';
export { type CompressorName, SquashfsError, type SquashfsErrorCode } from './format.ts';
export { type SquashfsWriteOptions, type SquashfsWriteResult, writeSquashfs } from './writer.ts';
