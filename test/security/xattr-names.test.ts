/**
 * Extended-attribute names from inputs never reach the host as anything but the name of an
 * attribute of a file inside the destination: hostile names (a second "# file:" block, control
 * characters, NUL, over 255 bytes, unknown namespaces) are refused with typed errors by every
 * reader — tar layers in pax (SCHILY and LIBARCHIVE records) through every local transport,
 * squashfs and EROFS images made by the reference tools from a directory carrying the name or
 * patched at the byte level, composefs dumpfiles — and nothing outside the destination changes.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { writeSquashfs } from '../../src/squashfs/index.ts';
import { bufferContent, emptyDir, type Tree } from '../../src/tree/index.ts';
import { setXattr } from '../../src/util/fsops.ts';
import { runSeal } from '../helpers/cli.ts';
import { fileEntry, tarOf } from '../helpers/layout.ts';
import { assertTyped, makeCanary, patchOnce, pythonTar, referenceImages, scratch } from './helpers.ts';
import { imageWithLayers, TRANSPORTS, unpack } from './images.ts';

const canary = makeCanary();
const work = scratch('xattr');
after(() => {
  rmSync(work, { recursive: true, force: true });
  rmSync(canary.dir, { recursive: true, force: true });
});

/** A capability set (VFS_CAP_REVISION_2, cap_setuid permitted and effective): what an attacker wants on a host binary. */
const CAPABILITY = Buffer.from('01000002800000008000000000000000000000000000', 'hex');

/** Names no reader may accept, with what each tries. */
const HOSTILE: [what: string, name: string][] = [
  [
    'a second "# file:" block (setfattr --restore injection)',
    `user.a\n\n# file: ${canary.victim}\nsecurity.capability`,
  ],
  ['a carriage return', `user.a\r# file: ${canary.victim}`],
  ['an injected attribute line', `user.a=0x01\n# file: ${canary.victim}\nuser.pwned`],
  ['a trusted-namespace injection', `trusted.a\n# file: ${canary.victim}\ntrusted.pwned`],
  ['a NUL byte', 'user.nul\0security.capability'],
  ['an escape sequence', 'user.esc\x1b]0;owned\x07'],
  ['256 bytes', `user.${'x'.repeat(251)}`],
  ['an unknown namespace', 'evil.name'],
  ['only a namespace', 'user.'],
];

/** A one-file layer whose file carries `name`, in each pax form. */
function hostileLayers(name: string): [form: string, layer: () => Promise<Buffer>][] {
  const percent = [...Buffer.from(name, 'latin1')].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
  return [
    [
      'SCHILY.xattr (Seal writer)',
      () => tarOf([fileEntry('f', 'x', { xattrs: new Map([[name, CAPABILITY]]) })]),
    ],
    [
      'LIBARCHIVE.xattr (Python pax)',
      async () =>
        pythonTar(
          [{ name: 'f', data: 'x', pax: { [`LIBARCHIVE.xattr.${percent}`]: CAPABILITY.toString('base64') } }],
          'pax',
        ),
    ],
    [
      'SCHILY.xattr (Python pax)',
      async () => pythonTar([{ name: 'f', data: 'x', pax: { [`SCHILY.xattr.${name}`]: 'value' } }], 'pax'),
    ],
  ];
}

for (const transport of TRANSPORTS) {
  test(`${transport}: hostile xattr names in tar layers are refused, nothing written anywhere`, async () => {
    let cases = 0;
    for (const [what, name] of HOSTILE) {
      for (const [form, layer] of hostileLayers(name)) {
        // Python's pax writer encodes record keys as UTF-8 and cannot carry a NUL in them; a
        // SCHILY key ends at its first '=' (the rest is the value), so it cannot carry one either.
        if (form.startsWith('SCHILY.xattr (Python') && name.includes('\0')) continue;
        if (form.startsWith('SCHILY') && name.includes('=')) continue;
        const dest = join(work, `${transport}-${cases++}`);
        const ref = imageWithLayers(transport, [await layer()]);
        await assert.rejects(unpack(ref, dest), (error) => {
          assertTyped(error, ['TAR_INVALID_NAME'], `${transport}, ${form}, ${what}`);
          return true;
        });
        assert.ok(!existsSync(dest), `${what}: the destination was created`);
        canary.assertUntouched();
      }
    }
    assert.ok(cases >= 24, `${cases} cases`);
  });
}

test('names with "=" and any printable bytes are fine: set on the extracted file itself, nowhere else', async () => {
  const names = ['user.a=b', 'user.spaces and=signs', 'trusted.x=0x41', 'security.selinux-like=1'];
  const layer = await tarOf([
    fileEntry('f', 'x', { xattrs: new Map(names.map((n) => [n, Buffer.from(`v-${n}`)])) }),
  ]);
  for (const transport of TRANSPORTS) {
    const dest = join(work, `ok-${transport}`);
    await unpack(imageWithLayers(transport, [layer]), dest);
    const dump = execFileSync('getfattr', ['--dump', '--match=-', '--absolute-names', join(dest, 'f')], {
      encoding: 'latin1',
    });
    // getfattr shows "=" in a name as \\075.
    for (const n of names)
      assert.ok(dump.includes(`${n.replaceAll('=', '\\075')}="v-${n}"`), `${transport}: ${n} in\n${dump}`);
    canary.assertUntouched();
  }
});

/** Sets `name` on `file` as the kernel allows it (via Seal's addon, one syscall: no script). */
function hostileDirectory(name: string): string {
  const dir = join(work, `src-${Math.random().toString(36).slice(2)}`);
  mkdirSync(dir);
  writeFileSync(join(dir, 'f'), 'x');
  setXattr(Buffer.from(join(dir, 'f')), name, CAPABILITY);
  return dir;
}

/** Names the kernel itself lets a directory carry: the reference tools then put them in images. */
const SETTABLE = HOSTILE.filter(
  ([, name]) => !name.includes('\0') && name.length <= 255 && /^(user|trusted)\..+/s.test(name),
);

test('squashfs and EROFS images made by mksquashfs / mkfs.erofs from a directory carrying a hostile name are refused by extract and ls', () => {
  assert.ok(SETTABLE.length >= 5);
  for (const [what, name] of SETTABLE) {
    const src = hostileDirectory(name);
    const sqfs = `${src}.sqfs`;
    const erofs = `${src}.erofs`;
    execFileSync('mksquashfs', [src, sqfs, '-quiet', '-no-progress', '-noappend']);
    execFileSync('mkfs.erofs', ['--quiet', erofs, src]);
    for (const [format, image, code] of [
      ['squashfs', sqfs, 'SQUASHFS_CORRUPT'],
      ['erofs', erofs, 'EROFS_CORRUPT'],
    ] as const) {
      const dest = join(work, `x-${format}-${Math.random().toString(36).slice(2)}`);
      const r = runSeal([format, 'extract', image, dest]);
      assert.equal(r.status, 1, `${format}, ${what}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`^seal: .*xattr name holds a control character.*\\[${code}\\]\\n$`));
      assert.equal(r.stderr.split('\n').length, 2, `one line: ${r.stderr}`);
      assert.ok(!existsSync(dest), `${format}, ${what}: the destination was created`);
      canary.assertUntouched();
    }
  }
});

test('squashfs and EROFS images patched at the byte level to carry names the kernel refuses are refused', () => {
  // Each placeholder suffix is replaced in the image by a same-length hostile suffix.
  const variants: [what: string, hostile: string][] = [
    ['a NUL byte', 'nul\0security.capability'],
    ['a newline injection', `a\n# file: /x\nuser.b`],
    ['DEL', 'del\x7fname'],
  ];
  for (const [what, hostile] of variants) {
    const placeholder = `Q${'q'.repeat(hostile.length - 1)}`;
    const { squashfs: sqfs, erofs } = referenceImages(hostileDirectory(`user.${placeholder}`));
    for (const [format, image, code] of [
      ['squashfs', sqfs, 'SQUASHFS_CORRUPT'],
      ['erofs', erofs, 'EROFS_CORRUPT'],
    ] as const) {
      patchOnce(image, placeholder, hostile);
      for (const command of ['extract', 'ls']) {
        const dest = join(work, `p-${format}-${Math.random().toString(36).slice(2)}`);
        const r = runSeal(command === 'ls' ? [format, 'ls', image] : [format, 'extract', image, dest]);
        if (command === 'ls') {
          // ls lists names and modes, not xattrs: it may succeed, but never prints a raw control byte.
          assert.ok(!/[\x00-\x08\x0b-\x1f\x7f]/.test(r.stdout + r.stderr), `${format} ls, ${what}`);
          continue;
        }
        assert.equal(r.status, 1, `${format}, ${what}: ${r.stderr}`);
        assert.ok(r.stderr.endsWith(`[${code}]\n`), r.stderr);
        assert.ok(!existsSync(dest));
      }
      canary.assertUntouched();
    }
  }
});

test("Seal's own squashfs writer given a tree with a 256-byte or NUL-holding name: the reader refuses the image", async () => {
  for (const name of [`user.${'y'.repeat(251)}`, 'user.a\0b', 'evil.namespace-is-stored-as-user']) {
    const root = emptyDir();
    root.children.set('f', {
      type: 'file',
      mode: 0o644,
      uid: 0,
      gid: 0,
      mtime: { sec: 0, nsec: 0 },
      xattrs: new Map([[name.startsWith('evil.') ? `user.${name}` : name, Buffer.from('v')]]),
      content: bufferContent(Buffer.from('x')),
    });
    const tree: Tree = { root };
    const image = join(work, `own-${Math.random().toString(36).slice(2)}.sqfs`);
    try {
      await writeSquashfs(tree, image);
    } catch (error) {
      assertTyped(error, ['SQUASHFS_INVALID_OPTION', 'SQUASHFS_CORRUPT', 'SQUASHFS_TOO_LARGE'], name);
      continue;
    }
    const dest = join(work, `own-${Math.random().toString(36).slice(2)}`);
    const r = runSeal(['squashfs', 'extract', image, dest]);
    if (name.startsWith('evil.')) {
      assert.equal(r.status, 0, r.stderr);
    } else {
      assert.equal(r.status, 1, r.stderr);
      assert.ok(r.stderr.endsWith('[SQUASHFS_CORRUPT]\n'), r.stderr);
    }
    canary.assertUntouched();
  }
});

test('composefs dumpfiles with hostile xattr names are refused with a one-line typed error', () => {
  const escaped = (name: string) =>
    [...Buffer.from(name, 'latin1')]
      .map((b) =>
        b > 0x20 && b < 0x7f && b !== 0x3d && b !== 0x5c
          ? String.fromCharCode(b)
          : `\\x${b.toString(16).padStart(2, '0')}`,
      )
      .join('');
  for (const [what, name] of HOSTILE) {
    const dumpfile = join(work, `hostile-${Math.random().toString(36).slice(2)}.dump`);
    writeFileSync(
      dumpfile,
      `/ 0 40755 2 0 0 0 0.0 - - -\n/f 1 100644 1 0 0 0 0.0 - x - ${escaped(name)}=\\x01\n`,
    );
    const out = join(work, `hostile-${Math.random().toString(36).slice(2)}.cfs`);
    const r = runSeal(['composefs', 'create', `dumpfile:${dumpfile}`, out]);
    assert.equal(r.status, 1, `${what}: ${r.stderr}`);
    assert.ok(r.stderr.endsWith('[COMPOSEFS_BAD_DUMPFILE]\n'), `${what}: ${r.stderr}`);
    assert.equal(r.stderr.split('\n').length, 2, `${what}: one line: ${JSON.stringify(r.stderr)}`);
    assert.ok(!existsSync(out), `${what}: an image was written`);
  }
  canary.assertUntouched();
});

test('unpacking as a user would (the CLI) an image whose layer carries the injection of the report', async () => {
  const name = `user.a\n\n# file: ${canary.victim}\nsecurity.capability`;
  const percent = [...Buffer.from(name, 'latin1')].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
  const layer = pythonTar(
    [{ name: 'f', data: 'x', pax: { [`LIBARCHIVE.xattr.${percent}`]: CAPABILITY.toString('base64') } }],
    'pax',
  );
  const dest = join(work, 'cli-unpack');
  const r = runSeal(['image', 'unpack', imageWithLayers('oci', [layer]), dest]);
  assert.equal(r.status, 1, r.stderr);
  assert.match(
    r.stderr,
    /^seal: "f" at offset \d+: an xattr name holds a control character: "user\.a\\x0a\\x0a# file: .*\[TAR_INVALID_NAME\]\n$/,
  );
  assert.ok(!existsSync(dest));
  const caps = spawnSync('getfattr', ['--absolute-names', '-n', 'security.capability', canary.victim], {
    encoding: 'utf8',
  });
  assert.notEqual(caps.status, 0, 'the victim has no capability');
  canary.assertUntouched();
});
