/**
 * An attacker's toolbox: a canary directory outside every destination whose whole state
 * (contents, modes, owners, times and xattrs) is snapshotted before and compared after, and
 * hostile archives made by an independent producer (Python's tarfile) in ustar, GNU and pax form.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SealError } from '../../src/errors.ts';

export interface Canary {
  dir: string;
  /** A regular file an attack tries to change (xattrs, capabilities, contents). */
  victim: string;
  /** Throws if anything under `dir` changed since the canary was made. */
  assertUntouched(): void;
}

/** Every path under `dir` with its type, mode, owner, size, times, content digest, link target and xattrs. */
function snapshot(dir: string): string {
  const lines: string[] = [];
  const visit = (path: string) => {
    const st = lstatSync(path, { bigint: true });
    let what = `${path} ${st.mode} ${st.uid}:${st.gid} ${st.size} ${st.mtimeNs} ${st.nlink}`;
    if (st.isFile()) what += ` ${createHash('sha256').update(readFileSync(path)).digest('hex')}`;
    if (st.isSymbolicLink()) what += ` -> ${readlinkSync(path)}`;
    lines.push(what);
    if (st.isDirectory()) for (const name of readdirSync(path).sort()) visit(join(path, name));
  };
  visit(dir);
  // getfattr, not Seal's own xattr code: the check must not share the code it checks.
  const xattrs = spawnSync(
    'getfattr',
    ['--recursive', '--dump', '--match=-', '--encoding=hex', '--absolute-names', '--no-dereference', dir],
    { encoding: 'latin1' },
  );
  return `${lines.join('\n')}\n${xattrs.stdout}`;
}

/** A canary directory with a victim file, a subdirectory and a symlink, all carrying a user xattr. */
export function makeCanary(): Canary {
  const dir = mkdtempSync(join(tmpdir(), 'seal-canary-'));
  const victim = join(dir, 'victim');
  writeFileSync(victim, 'the host file an attack aims at\n');
  mkdirSync(join(dir, 'sub'));
  writeFileSync(join(dir, 'sub', 'inner'), 'inner\n');
  symlinkSync('victim', join(dir, 'link'));
  execFileSync('setfattr', ['-n', 'user.canary', '-v', 'untouched', victim]);
  return { dir, victim, assertUntouched: watchDirectory(dir) };
}

/** Snapshots `dir` now; the function returned throws if anything under it changed since. */
export function watchDirectory(dir: string): () => void {
  const before = snapshot(dir);
  return () => assert.equal(snapshot(dir), before, `something outside the destination changed under ${dir}`);
}

/** Asserts a SealError with one of `codes` (the message is shown on failure). */
export function assertTyped(error: unknown, codes: string[], what: string): void {
  assert.ok(error instanceof SealError, `${what}: an untyped error: ${(error as Error)?.stack ?? error}`);
  assert.ok(
    codes.includes(error.code),
    `${what}: ${error.code} (${error.message}), expected ${codes.join(' or ')}`,
  );
}

export interface PyMember {
  name: string;
  type?: 'file' | 'dir' | 'symlink' | 'hardlink' | 'fifo' | 'char';
  data?: string;
  linkname?: string;
  /** pax records for this member (keys and values as byte strings, latin1). */
  pax?: Record<string, string>;
}

/**
 * A tar archive written by Python's tarfile (an independent producer) in `format`: 'ustar',
 * 'gnu' or 'pax'. Names and pax records are byte strings (latin1), passed as JSON on stdin.
 */
export function pythonTar(members: PyMember[], format: 'ustar' | 'gnu' | 'pax'): Buffer {
  const script = `
import io, json, sys, tarfile
spec = json.load(sys.stdin)
fmt = {'ustar': tarfile.USTAR_FORMAT, 'gnu': tarfile.GNU_FORMAT, 'pax': tarfile.PAX_FORMAT}[spec['format']]
out = io.BytesIO()
b = lambda s: s.encode('latin1')
with tarfile.open(fileobj=out, mode='w', format=fmt, encoding='latin1', errors='surrogateescape') as tar:
    for m in spec['members']:
        info = tarfile.TarInfo(b(m['name']).decode('latin1'))
        info.mtime = 1650000000
        kind = m.get('type', 'file')
        data = b(m.get('data', ''))
        info.type = {'file': tarfile.REGTYPE, 'dir': tarfile.DIRTYPE, 'symlink': tarfile.SYMTYPE,
                     'hardlink': tarfile.LNKTYPE, 'fifo': tarfile.FIFOTYPE, 'char': tarfile.CHRTYPE}[kind]
        info.mode = 0o755 if kind == 'dir' else 0o644
        if 'linkname' in m: info.linkname = m['linkname']
        if kind == 'char': info.devmajor, info.devminor = 1, 3
        if 'pax' in m: info.pax_headers = m['pax']
        info.size = len(data) if kind == 'file' else 0
        tar.addfile(info, io.BytesIO(data) if kind == 'file' else None)
sys.stdout.buffer.write(out.getvalue())
`;
  const r = spawnSync('python3', ['-c', script], {
    input: JSON.stringify({ format, members }),
    maxBuffer: 1 << 26,
  });
  if (r.status !== 0) throw new Error(`python3 tarfile failed: ${r.stderr}`);
  return r.stdout;
}

/** A fresh temporary directory. */
export function scratch(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `seal-sec-${prefix}-`));
}

/**
 * The squashfs and EROFS images of `dir` made by mksquashfs and mkfs.erofs, beside it. The
 * squashfs metadata is left uncompressed so that names can be found and patched in place.
 */
export function referenceImages(
  dir: string,
  erofsOptions: string[] = [],
): { squashfs: string; erofs: string } {
  const squashfs = `${dir}.sqfs`;
  const erofs = `${dir}.erofs`;
  execFileSync('mksquashfs', [
    dir,
    squashfs,
    '-quiet',
    '-no-progress',
    '-noappend',
    '-noI',
    '-noX',
    '-noD',
    '-noF',
  ]);
  execFileSync('mkfs.erofs', ['--quiet', ...erofsOptions, erofs, dir]);
  return { squashfs, erofs };
}

/** Replaces the only occurrence of `from` in `file` by `to`, of the same length. */
export function patchOnce(file: string, from: string, to: string): void {
  const data = readFileSync(file);
  const needle = Buffer.from(from, 'latin1');
  const at = data.indexOf(needle);
  assert.ok(at >= 0 && data.indexOf(needle, at + 1) < 0, `one ${JSON.stringify(from)} in ${file}`);
  assert.equal(from.length, to.length);
  Buffer.from(to, 'latin1').copy(data, at);
  writeFileSync(file, data);
}
