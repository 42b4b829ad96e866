import { type TarWriteEntry, writeTar } from '../tar/index.ts';
import { type Tree, walk } from './model.ts';

/**
 * The tree as a deterministic tar layer: depth-first, children sorted bytewise, directories
 * with a trailing '/', hardlinks as tar hardlinks to the first path; the root is './' so its
 * owner, mode and mtime travel with the layer.
 */
export function treeToTar(tree: Tree): AsyncGenerator<Uint8Array> {
  function* entries(): Generator<TarWriteEntry> {
    for (const { path, inode, linkOf } of walk(tree)) {
      const common = {
        mode: inode.mode,
        uid: inode.uid,
        gid: inode.gid,
        mtime: inode.mtime,
        xattrs: inode.xattrs,
      };
      if (linkOf !== undefined) {
        yield { ...common, path, type: 'hardlink', linkname: linkOf };
        continue;
      }
      switch (inode.type) {
        case 'dir':
          yield { ...common, path: path === '' ? './' : `${path}/`, type: 'dir' };
          break;
        case 'file':
          yield { ...common, path, type: 'file', size: inode.content.size, body: inode.content.read() };
          break;
        case 'symlink':
          yield { ...common, path, type: 'symlink', linkname: inode.target };
          break;
        case 'char':
        case 'block':
          yield { ...common, path, type: inode.type, devmajor: inode.rdev.major, devminor: inode.rdev.minor };
          break;
        case 'fifo':
          yield { ...common, path, type: 'fifo' };
          break;
        case 'socket':
          // tar cannot hold sockets; like GNU tar, they are left out.
          break;
      }
    }
  }
  return writeTar(entries());
}
