export * from './content.ts';
export {
  type FromDirectoryOptions,
  type ToDirectoryOptions,
  treeFromDirectory,
  writeTreeToDirectory,
} from './directory.ts';
export { TreeError, type TreeErrorCode } from './errors.ts';
export { type ListedInode, listLines, modeString } from './listing.ts';
export * from './model.ts';
export * from './names.ts';
export {
  applyLayer,
  type LayerTreeOptions,
  layerTree,
  mergeLayers,
  OPAQUE_WHITEOUT,
  pathComponents,
  type TarTreeOptions,
  treeFromTar,
  WHITEOUT_PREFIX,
} from './overlay.ts';
export { Spool } from './spool.ts';
export { treeToTar } from './to-tar.ts';
