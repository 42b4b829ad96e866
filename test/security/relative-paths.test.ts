/**
 * Every command that reads a directory keeps its extended attributes — security.capability,
 * user.* and trusted.* — whatever form the source path takes: relative, absolute, `./`-prefixed,
 * with a trailing slash, or through a symlink. (Xattrs used to be matched against getfattr's
 * absolute names and were silently dropped for relative paths.)
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ErofsImage } from '../../src/erofs/index.ts';
import { SquashfsImage } from '../../src/squashfs/index.ts';
import type { Tree } from '../../src/tree/index.ts';
import { setXattr } from '../../src/util/fsops.ts';
import { runSeal } from '../helpers/cli.ts';
import { scratch } from './helpers.ts';

const work = scratch('relative');
after(() => rmSync(work, { recursive: true, force: true }));

/** VFS_CAP_REVISION_2 with cap_net_bind_service permitted and effective (what ping-like binaries carry). */
const CAPABILITY = Buffer.from('0100000200040000000000000000000000000000', 'hex');
const EXPECTED = new Map<string, Buffer>([
  ['security.capability', CAPABILITY],
  ['user.origin', Buffer.from('kept')],
  ['trusted.overlay.opaque', Buffer.from('y')],
]);

const root = join(work, 'rootfs');
mkdirSync(join(root, 'bin'), { recursive: true });
writeFileSync(join(root, 'bin', 'tool'), 'a binary with capabilities\n');
for (const [name, value] of EXPECTED) setXattr(Buffer.from(join(root, 'bin', 'tool')), name, value);
setXattr(Buffer.from(join(root, 'bin')), 'user.dir', Buffer.from('on a directory'));
symlinkSync('rootfs', join(work, 'link-to-rootfs'));

const FORMS: [form: string, path: string][] = [
  ['relative', 'rootfs'],
  ['absolute', root],
  ['./-prefixed', './rootfs'],
  ['with a trailing slash', 'rootfs/'],
  ['through a symlink', 'link-to-rootfs'],
  ['with .. in it', 'rootfs/bin/..'],
];

function assertXattrs(tree: Tree, what: string): void {
  const bin = tree.root.children.get('bin');
  assert.equal(bin?.type, 'dir', what);
  if (bin?.type !== 'dir') return;
  assert.deepEqual(
    bin.xattrs.get('user.dir') && Buffer.from(bin.xattrs.get('user.dir')!).toString(),
    'on a directory',
    what,
  );
  const tool = bin.children.get('tool');
  assert.ok(tool, what);
  for (const [name, value] of EXPECTED) {
    const got = tool.xattrs.get(name);
    assert.ok(
      got && Buffer.from(got).equals(value),
      `${what}: ${name} is ${got ? Buffer.from(got).toString('hex') : 'missing'}`,
    );
  }
}

/** Runs seal in the work directory, where the relative paths are. */
function run(args: string[]): string {
  const r = runSeal(args, { cwd: work, encoding: 'latin1' });
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

for (const [form, path] of FORMS) {
  test(`a ${form} source path keeps every xattr: squashfs, EROFS, composefs and dir: imports`, () => {
    const id = `out${form.replace(/\W+/g, '-')}`;
    run(['squashfs', 'create', path, `${id}.sqfs`]);
    const sqfs = SquashfsImage.open(join(work, `${id}.sqfs`));
    try {
      assertXattrs(sqfs.toTree(), `squashfs create, ${form}`);
    } finally {
      sqfs.close();
    }
    run(['erofs', 'create', path, `${id}.erofs`]);
    const erofs = ErofsImage.open(join(work, `${id}.erofs`));
    try {
      assertXattrs(erofs.toTree(), `erofs create, ${form}`);
    } finally {
      erofs.close();
    }
    run(['composefs', 'create', path, `${id}.cfs`]);
    const dump = run(['composefs', 'dump', `${id}.cfs`]);
    const toolLine = dump.split('\n').find((l) => l.startsWith('/bin/tool '));
    assert.ok(
      toolLine?.includes(
        `security.capability=${[...CAPABILITY].map((b) => `\\x${b.toString(16).padStart(2, '0')}`).join('')}`,
      ),
      `composefs, ${form}: ${toolLine}`,
    );
    assert.ok(toolLine?.includes('user.origin=kept'), `composefs, ${form}: ${toolLine}`);
    run(['image', 'import', `dir:${path}`, `oci:${id}-layout:t`]);
    run(['image', 'unpack', `oci:${id}-layout:t`, `${id}-unpacked`]);
    const got = execFileSync(
      'getfattr',
      [
        '--dump',
        '--match=-',
        '--encoding=hex',
        '--absolute-names',
        join(work, `${id}-unpacked`, 'bin', 'tool'),
      ],
      {
        encoding: 'utf8',
      },
    );
    assert.ok(
      got.includes(`security.capability=0x${CAPABILITY.toString('hex')}`),
      `dir: import, ${form}: ${got}`,
    );
    assert.ok(
      got.includes(`user.origin=0x${Buffer.from('kept').toString('hex')}`),
      `dir: import, ${form}: ${got}`,
    );
  });
}
