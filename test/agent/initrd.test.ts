/**
 * The initrd of a device: its kernel modules resolved as kmod resolves them (modinfo) and
 * decompressed as xz does, its contents as cpio and zstd read them, byte-identical when built
 * twice, and the refusals of what it cannot be built from.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createPrivateKey } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { AGENT_MODULES, AgentError, buildInitrd, resolveModules } from '../../src/agent/index.ts';
import { bundleAgent } from '../../src/agent/initrd.ts';
import { SealError } from '../../src/errors.ts';
import { ipePolicy, signIpePolicy } from '../../src/ipe/index.ts';

const work = mkdtempSync(join(tmpdir(), 'seal-initrd-'));
after(() => rmSync(work, { recursive: true, force: true }));
let deb: string;
let modules: string;

before(() => {
  deb = execFileSync('bash', ['scripts/kernel-package.sh'], { encoding: 'utf8' }).trim();
  execFileSync('dpkg-deb', ['-x', deb, join(work, 'kernel')]);
  const base = join(work, 'kernel/lib/modules');
  modules = join(base, readdirSync(base)[0]!);
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      join(work, 'ca.key'),
      '-out',
      join(work, 'ca.pem'),
      '-subj',
      '/CN=test CA',
      '-days',
      '1',
    ],
    { stdio: 'ignore' },
  );
});

test('modules come with their dependencies first, as modinfo names them, decompressed as xz -d does', () => {
  const resolved = resolveModules(modules, AGENT_MODULES);
  const names = resolved.map((m) => m.name);
  for (const m of resolved) {
    const file = join(modules, `${m.path}.xz`);
    const depends = execFileSync('modinfo', ['-F', 'depends', file], { encoding: 'utf8' }).trim();
    for (const d of depends.split(',').filter(Boolean)) {
      const at = names.indexOf(d.replace(/-/g, '_'));
      assert.ok(at >= 0 && at < names.indexOf(m.name), `${d} before ${m.name}`);
    }
    assert.ok(
      m.data.equals(execFileSync('xz', ['-dc', file], { maxBuffer: 1 << 28 })),
      `${m.path} decompressed`,
    );
  }
  for (const expected of [
    'dm_verity',
    'dm_bufio',
    'dm_mod',
    'dm_crypt',
    'overlay',
    'erofs',
    'squashfs',
    'virtio_blk',
    'vfat',
    'fat',
    // The update media's FAT and the iocharset the kernel's vfat defaults to.
    'nls_ascii',
  ])
    assert.ok(names.includes(expected), expected);
  assert.equal(new Set(names).size, names.length, 'each module once');
  assert.deepEqual(resolveModules(modules, ['ext4']), [], 'a built-in module needs no file');
  assert.throws(
    () => resolveModules(modules, ['no_such_module']),
    (e) => e instanceof AgentError && e.code === 'AGENT_KERNEL',
  );
});

test('the initrd: reproducible, what cpio lists is the runtime, the agent bundle, the CA, the modules and the tools — no tests, no dev tooling', async () => {
  const a = await buildInitrd(join(work, 'a.zst'), {
    manifestCa: join(work, 'ca.pem'),
    kernel: deb,
    level: 1,
  });
  const b = await buildInitrd(join(work, 'b.zst'), {
    manifestCa: join(work, 'ca.pem'),
    kernel: deb,
    level: 1,
  });
  assert.equal(a.sha256, b.sha256, 'the same inputs give the same bytes');
  const cpio = execFileSync('zstd', ['-dc', join(work, 'a.zst')], { maxBuffer: 1 << 30 });
  const list = execFileSync('cpio', ['-it', '--quiet'], {
    input: cpio,
    encoding: 'utf8',
    maxBuffer: 1 << 28,
  }).split('\n');
  for (const path of [
    'init',
    'seal/node',
    'seal/app/agent.blob',
    'seal/app/src/agent/boot.ts',
    'seal/app/build/Release/system.node',
    'seal/bin/cryptsetup',
    'seal/bin/veritysetup',
    'seal/bin/crun',
    'seal/bin/mke2fs',
    'seal/lib/ld-linux-x86-64.so.2',
    'lib64/ld-linux-x86-64.so.2',
    'seal/etc/manifest-ca.pem',
    'seal/etc/modules',
    `lib/modules/${a.kernelVersion}/kernel/drivers/md/dm-verity.ko`,
  ])
    assert.ok(list.includes(path), `${path} in the initrd`);
  assert.ok(
    !list.some((p) => p.startsWith('test/') || p.includes('/test/') || p.includes('node_modules/')),
    'no tests, no node_modules',
  );
  assert.ok(!list.includes('seal/etc/policy.json'), 'no policy unless given');
  // The agent starts from a V8 snapshot, where a script has no dynamic import(): what it loads late, it requires.
  const bundle = (await bundleAgent()).toString();
  assert.match(bundle, /parseCommandLine/, 'the agent is bundled');
  for (const dynamic of [/(?<![.\w$])import\(\s*['"`]/, /await\s+import\(/])
    assert.doesNotMatch(bundle, dynamic, 'no dynamic import() in the agent');

  // The installer's tools run inside the initrd alone, through its own loader: a FAT made and
  // written there (mtools needs glibc's codepage module, which lives outside /seal).
  const root = join(work, 'root');
  mkdirSync(root);
  execFileSync('cpio', ['-id', '--quiet'], { cwd: root, input: cpio, maxBuffer: 1 << 28 });
  writeFileSync(join(root, 'tmp/hello'), 'hello\n');
  const inInitrd = (program: string, ...args: string[]) =>
    execFileSync(
      'chroot',
      [
        root,
        '/seal/lib/ld-linux-x86-64.so.2',
        '--library-path',
        '/seal/lib',
        `/seal/bin/${program}`,
        ...args,
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
  inInitrd('mkfs.vfat', '-C', '-F', '32', '/tmp/esp.img', '65536');
  inInitrd('mmd', '-i', '/tmp/esp.img', '::/EFI', '::/EFI/BOOT');
  inInitrd('mcopy', '-i', '/tmp/esp.img', '/tmp/hello', '::/EFI/BOOT/HELLO.TXT');
  assert.equal(
    execFileSync('mtype', ['-i', join(root, 'tmp/esp.img'), '::/EFI/BOOT/HELLO.TXT'], { encoding: 'utf8' }),
    'hello\n',
    'the FAT the initrd wrote reads back with the host mtools',
  );
  const listed = execFileSync('cpio', ['-i', '--quiet', '--to-stdout', 'seal/etc/modules'], {
    input: cpio,
    maxBuffer: 1 << 28,
  }).toString();
  assert.deepEqual(
    listed
      .trim()
      .split('\n')
      .map((l) => l.replace(/^.*\//, '').replace(/\.ko$/, '').replace(/-/g, '_')),
    a.modules,
  );
});

test('an initrd cannot be made from a CA file without a certificate, or a kernel without modules', async () => {
  writeFileSync(join(work, 'not-a-ca.pem'), 'nothing here\n');
  await assert.rejects(
    buildInitrd(join(work, 'x.zst'), { manifestCa: join(work, 'not-a-ca.pem'), kernel: deb, level: 1 }),
    (e) => e instanceof SealError && e.code === 'PKI_BAD_CERTIFICATE',
  );
  await assert.rejects(
    buildInitrd(join(work, 'x.zst'), { manifestCa: join(work, 'ca.pem'), kernel: work, level: 1 }),
    (e) => e instanceof AgentError && e.code === 'AGENT_KERNEL',
  );
});

test('the kernel signer and the signed IPE policy go into /seal/etc; a file that is neither is refused', async () => {
  const key = createPrivateKey(readFileSync(join(work, 'ca.key')));
  const signed = join(work, 'policy.p7s');
  writeFileSync(
    signed,
    signIpePolicy(ipePolicy(), { key, certificate: readFileSync(join(work, 'ca.pem'), 'utf8') }),
  );
  const result = await buildInitrd(join(work, 'signed.zst'), {
    manifestCa: join(work, 'ca.pem'),
    kernel: deb,
    kernelSigner: join(work, 'ca.pem'),
    ipePolicy: signed,
    level: 1,
  });
  const cpio = execFileSync('zstd', ['-dc', result.path], { maxBuffer: 1 << 30 });
  const read = (path: string) =>
    execFileSync('cpio', ['-i', '--quiet', '--to-stdout', path], { input: cpio, maxBuffer: 1 << 28 });
  assert.deepEqual(read('seal/etc/kernel-signer.pem'), readFileSync(join(work, 'ca.pem')));
  assert.deepEqual(read('seal/etc/ipe-policy.p7s'), readFileSync(signed));

  writeFileSync(join(work, 'unsigned-policy'), ipePolicy());
  for (const [option, file, code] of [
    ['kernelSigner', join(work, 'not-a-ca.pem'), 'PKI_BAD_CERTIFICATE'],
    ['ipePolicy', join(work, 'unsigned-policy'), 'AGENT_INITRD'],
    ['ipePolicy', join(work, 'ca.pem'), 'AGENT_INITRD'],
  ] as const) {
    await assert.rejects(
      buildInitrd(join(work, 'refused.zst'), {
        manifestCa: join(work, 'ca.pem'),
        kernel: deb,
        level: 1,
        [option]: file,
      }),
      (e) => e instanceof SealError && e.code === code,
      `${option} ${file}`,
    );
    assert.ok(!existsSync(join(work, 'refused.zst')), 'nothing written');
  }
});
