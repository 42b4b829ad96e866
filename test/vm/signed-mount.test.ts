/**
 * `seal image mount --cert` on a kernel that checks signatures itself (Debian's 6.12 through UEFI,
 * with the snakeoil certificate in db and so in the .platform keyring), Seal running in the VM:
 * - a squashfs image signed with the db key opens through dm-verity with its root-hash signature
 *   (`verified (with signature)`); one signed by a stranger passes Seal's check when the stranger
 *   is named trusted, and the kernel refuses it;
 * - a composefs image in a store on ext4 with fs-verity: its EROFS goes into the store with
 *   fs-verity enabled with its signature (the kernel measures the sealed digest), the objects get
 *   fs-verity, it mounts with `verity=require`; signed by a stranger, the kernel refuses it; a
 *   certificate that signed nothing is refused by Seal before the kernel is asked.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { runSeal } from '../helpers/cli.ts';
import { opensslSelfSigned } from '../helpers/keys.ts';
import { prng, randomBytes } from '../helpers/trees.ts';
import { runInVm, SEAL_IN_VM, SEAL_IN_VM_PROGRAMS, sealForVm } from '../helpers/vm.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-vm-signed-mount-'));
after(() => rm(work, { recursive: true, force: true }));

function seal(...args: string[]): string {
  const r = runSeal(args);
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const SNAKEOIL = {
  key: '/usr/share/ovmf/PkKek-1-snakeoil.key',
  cert: '/usr/share/ovmf/PkKek-1-snakeoil.pem',
};
const UEFI = { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', vars: '/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd' };

test('seal image mount --cert: the kernel checks the signatures Seal hands it, and refuses a stranger', async () => {
  const ecdsa = opensslSelfSigned(work, 'image-signer', 'ec:P-256');
  const stranger = opensslSelfSigned(work, 'stranger', 'ec:P-256');
  const nobody = opensslSelfSigned(work, 'nobody', 'ec:P-256');
  const passphrase = join(work, 'passphrase');
  writeFileSync(passphrase, 'snakeoil\n');

  const root = join(work, 'root');
  mkdirSync(join(root, 'etc'), { recursive: true });
  writeFileSync(join(root, 'etc/hello'), 'hello from a signed image\n');
  const big = randomBytes(prng(5), 150_000);
  writeFileSync(join(root, 'big'), big);
  const bigSum = execFileSync('sha256sum', [join(root, 'big')], { encoding: 'utf8' }).split(' ')[0];
  const src = join(work, 'src');
  seal('image', 'import', `dir:${root}`, `oci:${src}:test`);

  // composefs images in a store on ext4 with fs-verity: one signed by the trusted key, one by a stranger.
  const store = join(work, 'store');
  const sealed = JSON.parse(
    seal(
      'image',
      'seal',
      `oci:${src}:test`,
      `oci:${join(store, 'cfs')}:s`,
      '--format',
      'composefs',
      '--sign-key',
      ecdsa.key,
      '--sign-cert',
      ecdsa.cert,
      '--json',
    ),
  );
  const merged = JSON.parse(readFileSync(join(store, 'cfs/blobs/sha256', sealed.digest.slice(7)), 'utf8'))
    .annotations['composefs.merged.erofs.v1.fsverity-sha256-12'];
  seal(
    'image',
    'seal',
    `oci:${src}:test`,
    `oci:${join(store, 'cfs-stranger')}:s`,
    '--format',
    'composefs',
    '--sign-key',
    stranger.key,
    '--sign-cert',
    stranger.cert,
  );
  const ext4 = join(work, 'store.ext4');
  execFileSync('mkfs.ext4', ['-q', '-O', 'verity', '-b', '4096', '-d', store, ext4, '64M']);

  // squashfs images: one signed with the db key, one by a stranger.
  const layouts = join(work, 'layouts');
  seal('image', 'seal', `oci:${src}:test`, `oci:${join(layouts, 'sq')}:s`);
  seal(
    'image',
    'sign-verity',
    `oci:${join(layouts, 'sq')}:s`,
    '--key',
    SNAKEOIL.key,
    '--cert',
    SNAKEOIL.cert,
    '--passphrase-file',
    passphrase,
  );
  seal(
    'image',
    'seal',
    `oci:${src}:test`,
    `oci:${join(layouts, 'sq-stranger')}:s`,
    '--sign-key',
    stranger.key,
    '--sign-cert',
    stranger.cert,
  );
  const certs = join(layouts, 'certs');
  mkdirSync(certs);
  for (const [name, cert] of [
    ['ecdsa.pem', ecdsa.cert],
    ['stranger.pem', stranger.cert],
    ['nobody.pem', nobody.cert],
    ['snakeoil.pem', SNAKEOIL.cert],
  ] as const)
    copyFileSync(cert, join(certs, name));
  execFileSync('openssl', ['x509', '-in', ecdsa.cert, '-outform', 'der', '-out', join(certs, 'ecdsa.der')]);

  const s = SEAL_IN_VM;
  const script = `
keyctl padd asymmetric '' %:.fs-verity < /layouts/certs/ecdsa.der > /dev/null
mkdir -p /store /mnt/c /mnt/x /mnt/q /mnt/y
mount -t ext4 -o loop /data/store.ext4 /store
${s} image mount oci:/store/cfs:s /mnt/c --cert /layouts/certs/ecdsa.pem
echo "composefs hello: $(cat /mnt/c/etc/hello)"
echo "composefs big: $(sha256sum /mnt/c/big | cut -d' ' -f1)"
echo "composefs image: $(fsverity measure /store/cfs/composefs-images/${merged}.cfs | cut -d' ' -f1)"
${s} image mount oci:/store/cfs-stranger:s /mnt/x --cert /layouts/certs/stranger.pem || echo "composefs stranger: refused"
${s} image mount oci:/store/cfs:s /mnt/x --cert /layouts/certs/nobody.pem || echo "composefs untrusted: refused"
${s} image mount oci:/layouts/sq:s /mnt/q --cert /layouts/certs/snakeoil.pem
for d in $(ls /dev/mapper | grep seal-); do veritysetup status $d | grep -i 'status:'; done
echo "squashfs hello: $(cat /mnt/q/etc/hello)"
${s} image mount oci:/layouts/sq-stranger:s /mnt/y --cert /layouts/certs/stranger.pem || echo "squashfs stranger: refused"
echo "devices: $(ls /dev/mapper | grep -c seal-)"
${s} image umount /mnt/q
${s} image umount /mnt/c
echo "after: $(ls /dev/mapper | grep -c seal-) devices, $(grep -c /mnt/ /proc/mounts) mounts"
`;
  const r = await runInVm(
    script,
    { 'store.ext4': ext4 },
    {
      directories: { seal: sealForVm(join(work, 'seal-tree')), layouts },
      programs: [...SEAL_IN_VM_PROGRAMS, '/usr/bin/keyctl'],
      uefi: UEFI,
      timeoutMs: 400_000,
    },
  );
  assert.equal(r.status, 0, r.output);
  const out = r.output;
  for (const line of [
    'the kernel checked the signatures against its own keys',
    'composefs hello: hello from a signed image',
    `composefs big: ${bigSum}`,
    `composefs image: sha256:${merged}`,
    'composefs stranger: refused',
    'composefs untrusted: refused',
    'squashfs hello: hello from a signed image',
    'squashfs stranger: refused',
    'devices: 1',
    'after: 0 devices, 0 mounts',
  ]) {
    assert.ok(out.split('\n').includes(line), `missing "${line}" in:\n${out}`);
  }
  assert.equal(out.match(/the kernel checked the signatures against its own keys/g)?.length, 2, out);
  assert.match(out, /status:\s+verified \(with signature\)/);
  // Who refused what: the kernel (ENOKEY) the strangers Seal was told to trust, Seal the certificate that signed nothing.
  assert.match(
    out,
    /fs-verity refused: its signer's certificate is not in the \.fs-verity keyring \[MOUNT_FAILED\]/,
  );
  assert.match(out, /Required key not available.*\[MOUNT_FAILED\]/);
  assert.match(out, /no accepted signature: .*not a trusted certificate \[IMAGE_SIGNATURE_INVALID\]/);
});
