/**
 * What a name from an input may be before it reaches a filesystem: directory entry names and
 * extended attribute names and values. Every reader (tar, squashfs, EROFS, dumpfile, directory)
 * asks these and turns a problem into its own typed error; the directory writer asks again.
 */

/** Longest name the Linux VFS takes for a directory entry or an xattr (NAME_MAX, XATTR_NAME_MAX). */
export const NAME_MAX = 255;
/** Largest xattr value Linux stores (XATTR_SIZE_MAX). */
export const XATTR_SIZE_MAX = 65536;

/** The namespaces the kernel knows; any other prefix is refused with EOPNOTSUPP. */
const XATTR_NAMESPACES = ['user.', 'trusted.', 'security.', 'system.'];

const CONTROL = /[\x00-\x1f\x7f]/;

/** Why `name` (a byte string) cannot be one directory entry, or undefined if it can. */
export function entryNameProblem(name: string): string | undefined {
  if (name === '' || name === '.' || name === '..') return `${JSON.stringify(name)} is not a file name`;
  if (name.includes('/')) return 'a file name holds "/"';
  if (name.includes('\0')) return 'a file name holds a NUL byte';
  return undefined;
}

/** Why `name` (a byte string) cannot be an extended attribute's name, or undefined if it can. */
export function xattrNameProblem(name: string): string | undefined {
  if (CONTROL.test(name)) return 'an xattr name holds a control character';
  if (name.length > NAME_MAX) return `an xattr name is longer than ${NAME_MAX} bytes`;
  const namespace = XATTR_NAMESPACES.find((prefix) => name.startsWith(prefix));
  if (!namespace) return 'an xattr name is outside the user, trusted, security and system namespaces';
  if (name.length === namespace.length) return 'an xattr name is only a namespace';
  return undefined;
}

/** Why this set of xattrs cannot be stored, naming the first bad one; undefined if it can. */
export function xattrsProblem(xattrs: Map<string, Uint8Array>): string | undefined {
  for (const [name, value] of xattrs) {
    const problem = xattrNameProblem(name);
    if (problem) return `${problem}: ${quoteBytes(name)}`;
    if (value.length > XATTR_SIZE_MAX)
      return `the value of xattr ${quoteBytes(name)} is larger than ${XATTR_SIZE_MAX} bytes`;
  }
  return undefined;
}

/**
 * A byte string quoted for a message: printable ASCII as is, every other byte as \xHH, so that
 * a name from an input cannot forge terminal output.
 */
export function quoteBytes(name: string): string {
  let out = '"';
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c === 0x22 || c === 0x5c) out += `\\${name[i]}`;
    else if (c >= 0x20 && c < 0x7f) out += name[i];
    else out += `\\x${c.toString(16).padStart(2, '0')}`;
  }
  return `${out}"`;
}
