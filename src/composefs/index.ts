export { dumpLines, formatDumpfile, parseDumpfile } from './dumpfile.ts';
export {
  type ComposefsImageResult,
  type FormatVersion,
  HEADER_MAGIC,
  readComposefsImage,
  writeComposefsImage,
} from './image.ts';
export {
  type CfsEntry,
  type CfsNode,
  ComposefsError,
  type ComposefsErrorCode,
  INLINE_LIMIT,
  walkCfs,
} from './model.ts';
export {
  type ComposefsMountResult,
  kernelHasFsverity,
  mountComposefs,
  unmountComposefs,
  type VerityMode,
} from './mount.ts';
export { composefsTree, objectPath, storeObject } from './objects.ts';
