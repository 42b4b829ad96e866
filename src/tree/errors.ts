import { SealError } from '../errors.ts';

export type TreeErrorCode =
  | 'TREE_UNSAFE_PATH'
  | 'TREE_SYMLINK_ESCAPE'
  | 'TREE_NOT_A_DIRECTORY'
  | 'TREE_DUPLICATE_ENTRY'
  | 'TREE_HARDLINK_TARGET'
  | 'TREE_UNSUPPORTED'
  | 'TREE_EXTRACT'
  /** A file or xattr name that no filesystem may hold (control characters, "/", NUL, too long...). */
  | 'TREE_INVALID_NAME'
  /** A file's content is not the size recorded for it (it changed while being read). */
  | 'TREE_CONTENT_SIZE';

export class TreeError extends SealError<TreeErrorCode> {}
