/**
 * composefs dumpfiles (composefs-dump(5)): one entry per line,
 * `PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST [XATTR...]`.
 * The parser accepts what `mkcomposefs --from-file` accepts; the formatter prints what
 * `composefs-info dump` prints, byte for byte. Names and xattr names no filesystem may hold
 * (control characters, NUL, unknown xattr namespaces) are refused.
 */
import { entryNameProblem, quoteBytes, xattrNameProblem } from '../tree/names.ts';
import {
  type CfsEntry,
  type CfsNode,
  ComposefsError,
  DIGEST_SIZE,
  INLINE_CONTENT_MAX,
  isDir,
  S_IFBLK,
  S_IFCHR,
  S_IFLNK,
  S_IFMT,
  setXattr,
  walkCfs,
} from './model.ts';

const VALID_TYPES = new Set([0o140000, 0o120000, 0o100000, 0o060000, 0o040000, 0o020000, 0o010000]);
const XATTR_VALUE_MAX = 0xffff;

// ---------------------------------------------------------------------------------------------
// Escaping

/** Escaping flavours: '=' escaped too (xattrs), and a lone '-' escaped (optional fields). */
const Escape = { Standard: 0, Equal: 1, LoneDash: 2 } as const;

const HEX = '0123456789abcdef';

/** Escapes bytes as composefs-info does: `\\ \n \r \t`, and `\xHH` for every non-graphic byte. */
function escapeField(bytes: Uint8Array, how: number): string {
  if (how & Escape.LoneDash && bytes.length === 1 && bytes[0] === 0x2d) return '\\x2d';
  let out = '';
  for (const c of bytes) {
    if (c === 0x5c) out += '\\\\';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x09) out += '\\t';
    else if ((c === 0x3d && how & Escape.Equal) || c <= 0x20 || c >= 0x7f)
      out += `\\x${HEX[c >> 4]}${HEX[c & 15]}`;
    else out += String.fromCharCode(c);
  }
  return out;
}

const bytesOf = (s: string) => Buffer.from(s, 'latin1');

function unescapeField(field: string, what: string, line: number): Buffer {
  const out = Buffer.alloc(field.length);
  let n = 0;
  for (let i = 0; i < field.length; i++) {
    const c = field.charCodeAt(i);
    if (c !== 0x5c) {
      out[n++] = c;
      continue;
    }
    if (++i >= field.length) throw bad(line, `no character after escape in ${what}`);
    const e = field[i];
    if (e === '\\') out[n++] = 0x5c;
    else if (e === 'n') out[n++] = 0x0a;
    else if (e === 'r') out[n++] = 0x0d;
    else if (e === 't') out[n++] = 0x09;
    else if (e === 'x') {
      const hex = field.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw bad(line, `invalid hex escape in ${what}`);
      out[n++] = Number.parseInt(hex, 16);
      i += 2;
    } else throw bad(line, `unsupported escape \\${e} in ${what}`);
  }
  return out.subarray(0, n);
}

function optional(field: string, what: string, line: number): Buffer | undefined {
  return field === '-' ? undefined : unescapeField(field, what, line);
}

function bad(line: number, message: string): ComposefsError {
  return new ComposefsError('COMPOSEFS_BAD_DUMPFILE', `dumpfile line ${line}: ${message}`, {
    subject: `line ${line}`,
  });
}

// ---------------------------------------------------------------------------------------------
// Parsing

function integer(field: string, base: 8 | 10, what: string, line: number): number {
  const pattern = base === 8 ? /^[0-7]+$/ : /^[0-9]+$/;
  if (!pattern.test(field)) throw bad(line, `invalid ${what} ${JSON.stringify(field)}`);
  const value = Number.parseInt(field, base);
  if (!Number.isSafeInteger(value)) throw bad(line, `${what} ${field} is too large`);
  return value;
}

interface Pending {
  root?: CfsNode;
  /** Children by name while parsing (sorted at the end). */
  dirs: Map<CfsNode, Map<string, CfsEntry>>;
  links: { entry: CfsEntry; target: string; line: number }[];
}

function lookup(state: Pending, components: string[]): CfsEntry | undefined {
  let entry: CfsEntry | undefined = state.root && { name: '', node: state.root };
  for (const name of components) {
    const children = entry && state.dirs.get(entry.node);
    entry = children?.get(name);
    if (!entry) return undefined;
  }
  return entry;
}

function parseLine(state: Pending, text: string, line: number): void {
  if (text.includes('\0')) throw bad(line, 'embedded NUL character');
  const fields = text.split(' ');
  while (fields.length < 11) fields.push('');
  const [pathField, sizeField, modeField, nlinkField, uidField, gidField, rdevField, mtimeField] = fields;
  const path = unescapeField(pathField!, 'path', line).toString('latin1');
  if (path === '') throw bad(line, 'empty path');
  const hardlink = modeField!.startsWith('@');
  const mode = integer(hardlink ? modeField!.slice(1) : modeField!, 8, 'mode', line);
  // Like mkcomposefs, only the type is checked; the inode keeps the low 16 bits.
  if (!VALID_TYPES.has(mode & S_IFMT) || mode > 0xffffffff) {
    throw bad(line, `invalid mode ${mode.toString(8)}`);
  }
  const node: CfsNode = {
    mode,
    size: 0,
    nlink: 1,
    uid: 0,
    gid: 0,
    rdev: 0,
    mtime: { sec: 0, nsec: 0 },
    xattrs: [],
  };
  const entry: CfsEntry = { name: '', node };

  // Place the entry in the tree.
  const components = path.split('/').filter((c) => c !== '');
  if (components.length === 0) {
    if (!isDir(node)) throw bad(line, 'the root must be a directory');
    if (state.root) throw bad(line, 'more than one root');
    state.root = node;
    state.dirs.set(node, new Map());
  } else {
    if (!state.root) throw bad(line, 'the root must come first');
    const name = components.pop()!;
    const parent = lookup(state, components);
    if (!parent) throw bad(line, `parent directory missing for ${path}`);
    const siblings = state.dirs.get(parent.node);
    if (!siblings || parent.link) throw bad(line, `parent of ${path} is not a directory`);
    const problem = entryNameProblem(name);
    if (problem) throw bad(line, `${problem} in ${quoteBytes(path)}`);
    if (name.length > 255) throw bad(line, `name longer than 255 bytes in ${quoteBytes(path)}`);
    if (siblings.has(name)) throw bad(line, `${path} already exists`);
    entry.name = name;
    siblings.set(name, entry);
    if (isDir(node)) state.dirs.set(node, new Map());
  }

  if (hardlink) {
    if (isDir(node)) throw bad(line, 'directories cannot be hardlinked');
    const target = optional(fields[8]!, 'hardlink target', line);
    if (!target) throw bad(line, 'hardlink without a target path');
    entry.link = true;
    state.links.push({ entry, target: target.toString('latin1'), line });
    return;
  }

  node.size = integer(sizeField!, 10, 'size', line);
  node.nlink = integer(nlinkField!, 10, 'nlink', line);
  node.uid = integer(uidField!, 10, 'uid', line);
  node.gid = integer(gidField!, 10, 'gid', line);
  if (node.nlink > 0xffffffff || node.uid > 0xffffffff || node.gid > 0xffffffff) {
    throw bad(line, 'nlink, uid and gid must fit in 32 bits');
  }
  const rdev = integer(rdevField!, 10, 'rdev', line);
  const type = mode & S_IFMT;
  if (type === S_IFCHR || type === S_IFBLK) {
    if (rdev > 0xffffffff) throw bad(line, 'device number does not fit in 32 bits');
    node.rdev = rdev;
  }
  const dot = mtimeField!.indexOf('.');
  if (dot < 0) throw bad(line, `invalid mtime ${JSON.stringify(mtimeField)}`);
  node.mtime = {
    sec: integer(mtimeField!.slice(0, dot), 10, 'mtime', line),
    nsec: integer(mtimeField!.slice(dot + 1), 10, 'mtime nanoseconds', line),
  };
  if (node.mtime.nsec > 999_999_999) throw bad(line, 'mtime nanoseconds out of range');

  const payload = optional(fields[8]!, 'payload', line);
  const content = optional(fields[9]!, 'content', line);
  const digest = optional(fields[10]!, 'digest', line);
  if (content && content.length !== node.size) {
    throw bad(line, `content is ${content.length} bytes but the size is ${node.size}`);
  }
  if (type === S_IFLNK) {
    if (!payload || payload.length === 0) throw bad(line, 'symlink without a target');
    if (payload.length > 4095) throw bad(line, 'symlink target too long');
    node.payload = payload.toString('latin1');
    node.size = payload.length;
  } else {
    if (payload) node.payload = payload.toString('latin1');
    if (content) {
      if (content.length > INLINE_CONTENT_MAX)
        throw bad(line, `inline content over ${INLINE_CONTENT_MAX} bytes`);
      node.content = content;
    }
  }
  if (digest) {
    const hex = digest.toString('latin1');
    if (!/^[0-9a-fA-F]*$/.test(hex) || hex.length !== DIGEST_SIZE * 2) {
      throw bad(line, `digest must be ${DIGEST_SIZE * 2} hex digits`);
    }
    node.digest = Buffer.from(hex, 'hex');
  }
  let xattrBytes = 0;
  for (const field of fields.slice(11)) {
    const eq = field.indexOf('=');
    if (eq < 0) throw bad(line, 'xattr without =');
    const name = unescapeField(field.slice(0, eq), 'xattr name', line).toString('latin1');
    const value = unescapeField(field.slice(eq + 1), 'xattr value', line);
    const problem = xattrNameProblem(name);
    if (problem) throw bad(line, `${problem}: ${quoteBytes(name)}`);
    if (value.length > XATTR_VALUE_MAX) throw bad(line, `xattr ${name} value too long`);
    xattrBytes += name.length + value.length + 8;
    if (xattrBytes > XATTR_VALUE_MAX / 2) throw bad(line, 'too many xattrs');
    setXattr(node, name, value);
  }
}

/** Parses a dumpfile into a tree. Lines end with `\n`; a missing final newline is accepted. */
export function parseDumpfile(text: string | Uint8Array): CfsNode {
  const data = typeof text === 'string' ? text : Buffer.from(text).toString('latin1');
  const lines = data.split('\n');
  if (lines.at(-1) === '') lines.pop();
  const state: Pending = { dirs: new Map(), links: [] };
  lines.forEach((l, i) => {
    parseLine(state, l, i + 1);
  });
  if (!state.root) throw new ComposefsError('COMPOSEFS_BAD_DUMPFILE', 'dumpfile has no root entry');
  for (const { entry, target, line } of state.links) {
    const seen = new Set<CfsEntry>();
    let resolved = lookup(
      state,
      target.split('/').filter((c) => c !== ''),
    );
    while (resolved?.link) {
      if (seen.has(resolved)) throw bad(line, `hardlink loop at ${target}`);
      seen.add(resolved);
      const next = state.links.find((l) => l.entry === resolved);
      resolved =
        next &&
        lookup(
          state,
          next.target.split('/').filter((c) => c !== ''),
        );
    }
    if (!resolved) throw bad(line, `no target at ${target} for a hardlink`);
    if (resolved === entry) throw bad(line, `hardlink to itself at ${target}`);
    if (isDir(resolved.node)) throw bad(line, `hardlink to the directory ${target}`);
    entry.node = resolved.node;
  }
  for (const [dir, children] of state.dirs) {
    dir.children = [...children.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
  return state.root;
}

// ---------------------------------------------------------------------------------------------
// Formatting

/** One dumpfile line per entry, depth-first with sorted children, as `composefs-info dump`. */
export function* dumpLines(root: CfsNode): Generator<string> {
  for (const { path, node, linkOf } of walkCfs(root)) {
    const payload = linkOf !== undefined ? linkOf : node.payload;
    const fields = [
      escapeField(bytesOf(path), Escape.Standard),
      String(node.size),
      `${linkOf !== undefined ? '@' : ''}${node.mode.toString(8)}`,
      String(node.nlink),
      String(node.uid),
      String(node.gid),
      String(node.rdev),
      `${node.mtime.sec}.${node.mtime.nsec}`,
      payload === undefined ? '-' : escapeField(bytesOf(payload), Escape.LoneDash),
      node.content === undefined ? '-' : escapeField(node.content, Escape.LoneDash),
      node.digest === undefined ? '-' : Buffer.from(node.digest).toString('hex'),
      ...node.xattrs.map(
        ([name, value]) => `${escapeField(bytesOf(name), Escape.Equal)}=${escapeField(value, Escape.Equal)}`,
      ),
    ];
    yield fields.join(' ');
  }
}

export function formatDumpfile(root: CfsNode): string {
  let out = '';
  for (const line of dumpLines(root)) out += `${line}\n`;
  return out;
}
