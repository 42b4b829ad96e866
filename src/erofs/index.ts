export { type ErofsCreateOptions, erofsNodesFromTree, fileSink, writeErofs } from './create.ts';
export { BLOCK_SIZE, ErofsError, type ErofsErrorCode, type Superblock } from './format.ts';
export { type ErofsDirEntry, ErofsImage, type ErofsInode } from './reader.ts';
export {
  type ErofsFileData,
  type ErofsNode,
  type ErofsSink,
  type ErofsWriteOptions,
  type ErofsWriteResult,
  type ErofsXattr,
  writeErofsImage,
} from './writer.ts';
export { xxh32 } from './xxh32.ts';
