/**
 * Extended attributes of whole directory trees through Debian's `attr` tools: one `getfattr -R`
 * process dumps every xattr of a tree and one `setfattr --restore` applies them. Node has no
 * xattr API, and native addons would have to be rebuilt against the pinned Node's ABI; one
 * process per tree is fast and the dump format is stable.
 */
import { spawn } from 'node:child_process';
import { resolve as resolvePath } from 'node:path';
import { TreeError } from './errors.ts';

/** getfattr escapes '\\' and newlines (and a few others) in paths as \ooo; everything else is raw. */
function unescapePath(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}

function escapePath(bytes: string): string {
  return bytes.replace(/[\\\n\r]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

function run(
  command: string,
  args: string[],
  input?: Buffer,
): Promise<{ stdout: Buffer; stderr: string; code: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e) =>
      reject(
        new TreeError(
          'TREE_UNSUPPORTED',
          `cannot run ${command} (install Debian's attr package): ${e.message}`,
        ),
      ),
    );
    child.on('close', (code) =>
      resolve({ stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8'), code: code ?? -1 }),
    );
    child.stdin.end(input);
  });
}

/**
 * Every xattr under the directory `root` (an ordinary path), by path relative to it as a byte
 * string ('' for the root itself). Symlinks are not followed; every namespace readable is included.
 */
export async function readTreeXattrs(root: string): Promise<Map<string, Map<string, Uint8Array>>> {
  const { stdout, stderr, code } = await run('getfattr', [
    '--recursive',
    '--dump',
    '--match=-',
    '--encoding=hex',
    '--absolute-names',
    '--no-dereference',
    '--',
    root,
  ]);
  const prefix = Buffer.from(resolvePath(root), 'utf8').toString('latin1');
  const result = new Map<string, Map<string, Uint8Array>>();
  let current: Map<string, Uint8Array> | undefined;
  for (const line of stdout.toString('latin1').split('\n')) {
    if (line.startsWith('# file: ')) {
      current = new Map();
      const path = unescapePath(line.slice(8));
      result.set(
        path === prefix ? '' : path.startsWith(`${prefix}/`) ? path.slice(prefix.length + 1) : path,
        current,
      );
    } else if (line !== '' && current) {
      const eq = line.indexOf('=');
      const name = eq < 0 ? line : line.slice(0, eq);
      const value = eq < 0 ? '' : line.slice(eq + 1);
      current.set(name, Buffer.from(value.startsWith('0x') ? value.slice(2) : '', 'hex'));
    }
  }
  // Filesystems without xattr support (a squashfs image made without any) answer listxattr
  // with EOPNOTSUPP: that means no xattrs, not a failure.
  const failures = stderr
    .split('\n')
    .filter((line) => line.trim() && !line.includes('Operation not supported'));
  if (code !== 0 && result.size === 0 && failures.length > 0) {
    throw new TreeError('TREE_UNSUPPORTED', `getfattr failed on ${root}: ${failures[0]}`, {
      subject: root,
    });
  }
  return result;
}

/** Sets xattrs on many paths (absolute, byte strings) in one `setfattr --restore` run. */
export async function writeTreeXattrs(entries: [string, Map<string, Uint8Array>][]): Promise<void> {
  const lines: string[] = [];
  for (const [path, xattrs] of entries) {
    if (xattrs.size === 0) continue;
    lines.push(`# file: ${escapePath(path)}`);
    for (const [name, value] of xattrs) lines.push(`${name}=0x${Buffer.from(value).toString('hex')}`);
    lines.push('');
  }
  if (lines.length === 0) return;
  const { code, stderr } = await run(
    'setfattr',
    ['--no-dereference', '--restore=-'],
    Buffer.from(lines.join('\n'), 'latin1'),
  );
  if (code !== 0) {
    throw new TreeError(
      'TREE_EXTRACT',
      `setting extended attributes failed: ${stderr.trim().split('\n')[0]}`,
    );
  }
}
