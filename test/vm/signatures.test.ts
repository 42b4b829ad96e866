/**
 * The kernel enforces Seal's signatures, in one boot of Debian's 6.12 kernel through UEFI
 * firmware (OVMF, Secure Boot off) whose db holds Debian's snakeoil test certificate: the kernel
 * loads db into its `.platform` keyring, which dm-verity (DM_VERITY_VERIFY_ROOTHASH_SIG_PLATFORM_KEYRING)
 * and IPE (IPE_POLICY_SIG_PLATFORM_KEYRING) trust. The snakeoil private key ships in the ovmf
 * package, so Seal signs with it as a product would with the key whose certificate it enrolled.
 *
 * - composefs: the signers' certificates in the `.fs-verity` keyring, `fs.verity.require_signatures=1`:
 *   the merged EROFS, the manifest and the config get fs-verity enabled with the signatures
 *   from Seal's composefs signature artifacts (ECDSA and RSA); an unsigned image, one signed by a
 *   stranger and a modified one are refused; the image mounts over its object store with overlayfs
 *   `verity=require` and reads back; an object modified on disk fails to read.
 * - dm-verity: the sealed squashfs layer opens with Seal's root-hash signature; a stranger's
 *   signature, or a trusted signature of another root hash, is refused.
 * - IPE: Seal's signed policy is accepted (a stranger's refused) and activated; then binaries run
 *   from the signed dm-verity image (directly and through an overlay) and from a file with a
 *   signed fs-verity digest, and are denied from an unsigned dm-verity device, from an overlay's
 *   writable layer and from a composefs mount (whose objects carry no signature of their own);
 *   a file whose fs-verity digest the policy pins runs without a signature, another does not.
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
import { runInVm } from '../helpers/vm.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-vm-signatures-'));
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

const blob = (layout: string, digest: string) => join(layout, 'blobs/sha256', digest.slice(7));
const json = (layout: string, digest: string) => JSON.parse(readFileSync(blob(layout, digest), 'utf8'));

/** The signature blobs of a signature artifact, by the annotation key naming what each signs. */
function signaturesOf(layout: string, artifactDigest: string): Map<string, string> {
  const artifact = json(layout, artifactDigest);
  const out = new Map<string, string>();
  for (const l of artifact.layers) {
    const key = Object.keys(l.annotations).find(
      (k) => k.startsWith('composefs.') || k === 'seal.verity.root-hash',
    )!;
    out.set(key, blob(layout, l.digest));
  }
  return out;
}

test('the kernel checks Seal signatures: fs-verity (composefs), dm-verity root hashes, IPE policy and execution', async () => {
  const ecdsa = opensslSelfSigned(work, 'image-signer-ec', 'ec:P-256');
  const rsa = opensslSelfSigned(work, 'image-signer-rsa', 'rsa:2048');
  const stranger = opensslSelfSigned(work, 'stranger', 'ec:P-256');
  const passphrase = join(work, 'snakeoil-passphrase');
  writeFileSync(passphrase, 'snakeoil\n');
  const der = (pem: string, out: string) =>
    execFileSync('openssl', ['x509', '-in', pem, '-outform', 'der', '-out', out]);

  // The image: a static busybox, a small file (inline in composefs images) and a large one (an object).
  const root = join(work, 'root');
  mkdirSync(join(root, 'bin'), { recursive: true });
  mkdirSync(join(root, 'etc'));
  mkdirSync(join(root, 'data'));
  copyFileSync('/bin/busybox', join(root, 'bin/busybox'));
  writeFileSync(join(root, 'etc/hello'), 'hello from a signed image\n');
  const big = randomBytes(prng(3), 200_000);
  writeFileSync(join(root, 'data/big'), big);
  const bigSum = execFileSync('sha256sum', [join(root, 'data/big')], { encoding: 'utf8' }).split(' ')[0];
  const src = join(work, 'src');
  seal('image', 'import', `dir:${root}`, `oci:${src}:test`);

  // composefs, signed by two signers at and after sealing, and by a stranger.
  const cfs = join(work, 'cfs');
  const sealed = JSON.parse(
    seal(
      'image',
      'seal',
      `oci:${src}:test`,
      `oci:${cfs}:s`,
      '--format',
      'composefs',
      '--sign-key',
      ecdsa.key,
      '--sign-cert',
      ecdsa.cert,
      '--json',
    ),
  );
  const rsaSigned = JSON.parse(
    seal('image', 'sign-verity', `oci:${cfs}:s`, '--key', rsa.key, '--cert', rsa.cert, '--json'),
  );
  const strangerSigned = JSON.parse(
    seal('image', 'sign-verity', `oci:${cfs}:s`, '--key', stranger.key, '--cert', stranger.cert, '--json'),
  );
  const ecSigs = signaturesOf(cfs, sealed.signature.artifact.digest);
  const rsaSigs = signaturesOf(cfs, rsaSigned.artifact.digest);
  const strangerSigs = signaturesOf(cfs, strangerSigned.artifact.digest);
  const image = json(cfs, sealed.digest);
  const mergedDigest = image.annotations['composefs.merged.erofs.v1.fsverity-sha256-12'];

  // The store: the merged image, the manifest and config, the objects, a signed busybox, on ext4 with verity.
  const store = join(work, 'store');
  mkdirSync(join(store, 'image'), { recursive: true });
  mkdirSync(join(store, 'bin'));
  const merged = join(store, 'image/merged.cfs');
  assert.match(
    seal(
      'composefs',
      'create',
      `oci:${cfs}:s`,
      merged,
      '--objects',
      join(store, 'objects'),
      '--print-digest',
    ),
    new RegExp(mergedDigest),
  );
  copyFileSync(blob(cfs, sealed.digest), join(store, 'image/manifest.json'));
  copyFileSync(blob(cfs, image.config.digest), join(store, 'image/config.json'));
  for (const copy of ['unsigned', 'foreign']) copyFileSync(merged, join(store, `image/${copy}.cfs`));
  const tampered = readFileSync(merged);
  tampered[tampered.length - 100]! ^= 0x01;
  writeFileSync(join(store, 'image/tampered.cfs'), tampered);
  copyFileSync('/bin/busybox', join(store, 'bin/busybox'));
  // Two more copies without signatures: one whose fs-verity digest the policy pins, one another.
  // Bytes after the ELF image change the digest, not the program (and keep both apart from the
  // image's busybox); busybox finds its applet by the name it runs as, so each keeps the name.
  mkdirSync(join(store, 'pinned'));
  mkdirSync(join(store, 'unpinned'));
  const busybox = readFileSync('/bin/busybox');
  writeFileSync(join(store, 'pinned/busybox'), Buffer.concat([busybox, Buffer.from('p')]), { mode: 0o755 });
  writeFileSync(join(store, 'unpinned/busybox'), Buffer.concat([busybox, Buffer.from('u')]), { mode: 0o755 });
  const pinnedDigest = seal('fsverity', 'digest', join(store, 'pinned/busybox')).split(' ')[0]!;
  const bigObject = seal('fsverity', 'digest', join(root, 'data/big')).split(/[: ]/)[1]!;
  const ext4 = join(work, 'store.ext4');
  execFileSync('mkfs.ext4', ['-q', '-O', 'verity', '-b', '4096', '-d', store, ext4, '64M']);
  const objectBlock = Number(
    execFileSync('debugfs', ['-R', `bmap /objects/${bigObject.slice(0, 2)}/${bigObject.slice(2)} 0`, ext4], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim(),
  );
  assert.ok(objectBlock > 0);
  const files: Record<string, string> = { 'store.ext4': ext4 };
  files['merged.sig'] = ecSigs.get('composefs.merged.erofs.v1.fsverity-sha256-12')!;
  files['manifest.sig'] = rsaSigs.get('composefs.manifest.fsverity-sha256-12')!;
  files['config.sig'] = ecSigs.get('composefs.config.fsverity-sha256-12')!;
  files['foreign.sig'] = strangerSigs.get('composefs.merged.erofs.v1.fsverity-sha256-12')!;
  seal(
    'fsverity',
    'sign',
    '/bin/busybox',
    join(work, 'busybox.sig'),
    '--key',
    ecdsa.key,
    '--cert',
    ecdsa.cert,
  );
  files['busybox.sig'] = join(work, 'busybox.sig');
  der(ecdsa.cert, join(work, 'ec.der'));
  der(rsa.cert, join(work, 'rsa.der'));
  files['ec.der'] = join(work, 'ec.der');
  files['rsa.der'] = join(work, 'rsa.der');

  // squashfs + dm-verity, signed with the key whose certificate is in db, and by a stranger.
  const sq = join(work, 'sq');
  const sqSealed = JSON.parse(seal('image', 'seal', `oci:${src}:test`, `oci:${sq}:s`, '--flatten', '--json'));
  const trusted = JSON.parse(
    seal(
      'image',
      'sign-verity',
      `oci:${sq}:s`,
      '--key',
      SNAKEOIL.key,
      '--cert',
      SNAKEOIL.cert,
      '--passphrase-file',
      passphrase,
      '--json',
    ),
  );
  const foreign = JSON.parse(
    seal('image', 'sign-verity', `oci:${sq}:s`, '--key', stranger.key, '--cert', stranger.cert, '--json'),
  );
  const layer = sqSealed.layers[0];
  const rootHash = layer.rootHash as string;
  files['sq.img'] = blob(sq, layer.digest);
  files['sq.sig'] = signaturesOf(sq, trusted.artifact.digest).get('seal.verity.root-hash')!;
  files['sq-foreign.sig'] = signaturesOf(sq, foreign.artifact.digest).get('seal.verity.root-hash')!;
  seal(
    'verity',
    'sign',
    'ab'.repeat(32),
    join(work, 'wrong.sig'),
    '--key',
    SNAKEOIL.key,
    '--cert',
    SNAKEOIL.cert,
    '--passphrase-file',
    passphrase,
  );
  files['sq-wrong.sig'] = join(work, 'wrong.sig');
  const data = readFileSync(files['sq.img']);
  const hashOffset = Math.ceil(Number(data.readBigUInt64LE(40)) / 4096) * 4096;

  // The IPE policy, signed by the db key and by a stranger.
  seal(
    'ipe',
    'policy',
    join(work, 'policy'),
    '--fsverity-digest',
    pinnedDigest,
    '--key',
    SNAKEOIL.key,
    '--cert',
    SNAKEOIL.cert,
    '--passphrase-file',
    passphrase,
  );
  files['policy.p7s'] = join(work, 'policy.p7s');
  seal('ipe', 'policy', join(work, 'foreign-policy'), '--key', stranger.key, '--cert', stranger.cert);
  files['policy-foreign.p7s'] = join(work, 'foreign-policy.p7s');

  const cfsMount =
    'mount -t erofs -o ro /store/image/merged.cfs /meta && ' +
    'mount -t overlay composefs -o ro,metacopy=on,redirect_dir=on,verity=require,lowerdir=/meta::/store/objects /cfs';
  const open = (name: string, sig?: string) =>
    `veritysetup open sq.img ${name} sq.img ${rootHash} --hash-offset ${hashOffset}${sig ? ` --root-hash-signature=${sig}` : ''}`;
  const script = `
mount -t securityfs securityfs /sys/kernel/security
echo "platform keyring: $(keyctl show %:.platform | grep -c SnakeOil)"
keyctl padd asymmetric '' %:.fs-verity < ec.der > /dev/null
keyctl padd asymmetric '' %:.fs-verity < rsa.der > /dev/null
mkdir -p /store /meta /cfs /sq /sq2 /t /ov
mount -t ext4 -o loop store.ext4 /store
for f in $(find /store/objects -type f); do fsverity enable $f; done
echo 1 > /proc/sys/fs/verity/require_signatures
fsverity enable /store/image/merged.cfs --signature=merged.sig && echo "merged: enabled"
fsverity enable /store/image/manifest.json --signature=manifest.sig && echo "manifest: enabled"
fsverity enable /store/image/config.json --signature=config.sig && echo "config: enabled"
fsverity enable /store/bin/busybox --signature=busybox.sig && echo "busybox: enabled"
fsverity enable /store/image/unsigned.cfs || echo "unsigned: refused"
fsverity enable /store/image/foreign.cfs --signature=foreign.sig || echo "foreign: refused"
fsverity enable /store/image/tampered.cfs --signature=merged.sig || echo "tampered: refused"
echo "measured $(fsverity measure /store/image/merged.cfs | cut -d' ' -f1)"
${cfsMount}
echo "composefs hello: $(cat /cfs/etc/hello)"
echo "composefs big: $(sha256sum /cfs/data/big | cut -d' ' -f1)"
umount /cfs; umount /meta; umount /store
mount -t ext4 -o loop store.ext4 /store
${cfsMount} && echo "signed image: mounted again"
cat /cfs/data/big > /dev/null 2>&1 && echo "unsigned object under require_signatures: read" || echo "unsigned object under require_signatures: refused"
umount /cfs; umount /meta; umount /store
echo 0 > /proc/sys/fs/verity/require_signatures
dd if=/dev/zero of=store.ext4 bs=1 count=1 seek=$((${objectBlock} * 4096 + 100)) conv=notrunc 2>/dev/null
mount -t ext4 -o loop store.ext4 /store
${cfsMount}
cat /cfs/data/big > /dev/null 2>&1 && echo "modified object: read" || echo "modified object: EIO"
echo "composefs hello again: $(cat /cfs/etc/hello)"
fsverity enable /store/pinned/busybox && fsverity enable /store/unpinned/busybox
${open('good', 'sq.sig')} && echo "dm-verity signed: opened"
veritysetup status good | grep -i 'status:'
${open('foreign', 'sq-foreign.sig')} || echo "dm-verity stranger: refused"
${open('wrong', 'sq-wrong.sig')} || echo "dm-verity other root hash: refused"
${open('plain')} && echo "dm-verity unsigned: opened"
mount -t squashfs -o ro /dev/mapper/good /sq
mount -t squashfs -o ro /dev/mapper/plain /sq2
cat policy-foreign.p7s > /sys/kernel/security/ipe/new_policy || echo "stranger's policy: refused"
cat policy.p7s > /sys/kernel/security/ipe/new_policy && echo "policy: loaded"
echo 1 > /sys/kernel/security/ipe/policies/seal/active && echo "policy: active"
/sq/bin/busybox echo "exec signed dm-verity: ran"
/store/bin/busybox echo "exec signed fs-verity: ran"
/sq2/bin/busybox echo "exec unsigned dm-verity: ran" || echo "exec unsigned dm-verity: denied"
/cfs/bin/busybox echo "exec composefs: ran" || echo "exec composefs: denied"
mount -t tmpfs tmpfs /t; mkdir /t/u /t/w
mount -t overlay overlay -o lowerdir=/sq,upperdir=/t/u,workdir=/t/w /ov
/ov/bin/busybox echo "exec image through overlay: ran"
cp /sq/bin/busybox /ov/bin/copied
/ov/bin/copied echo "exec writable layer: ran" || echo "exec writable layer: denied"
/store/pinned/busybox echo "exec pinned fs-verity digest: ran"
/store/unpinned/busybox echo "exec unsigned fs-verity: ran" || echo "exec unsigned fs-verity: denied"
`;
  const r = await runInVm(script, files, { programs: ['/usr/bin/keyctl'], uefi: UEFI, timeoutMs: 300_000 });
  assert.equal(r.status, 0, r.output);
  const out = r.output;
  for (const line of [
    'platform keyring: 1',
    'merged: enabled',
    'manifest: enabled',
    'config: enabled',
    'busybox: enabled',
    'unsigned: refused',
    'foreign: refused',
    'tampered: refused',
    `measured sha256:${mergedDigest}`,
    'composefs hello: hello from a signed image',
    `composefs big: ${bigSum}`,
    'signed image: mounted again',
    'unsigned object under require_signatures: refused',
    'modified object: EIO',
    'composefs hello again: hello from a signed image',
    'dm-verity signed: opened',
    'dm-verity stranger: refused',
    'dm-verity other root hash: refused',
    'dm-verity unsigned: opened',
    "stranger's policy: refused",
    'policy: loaded',
    'policy: active',
    'exec signed dm-verity: ran',
    'exec signed fs-verity: ran',
    'exec unsigned dm-verity: denied',
    'exec composefs: denied',
    'exec image through overlay: ran',
    'exec writable layer: denied',
    'exec pinned fs-verity digest: ran',
    'exec unsigned fs-verity: denied',
  ]) {
    assert.ok(out.split('\n').includes(line), `missing "${line}" in:\n${out}`);
  }
  assert.match(out, /status:\s+verified \(with signature\)/);
  // The kernel's reasons: no signature with require_signatures, an unknown key, a bad signature.
  assert.match(out, /unsigned\.cfs': Operation not permitted/);
  assert.match(out, /foreign\.cfs': Required key not available/);
  assert.match(out, /tampered\.cfs': Key was rejected by service|tampered\.cfs': Bad message/);
});
