/**
 * Kernel signatures: Seal against the reference tools on the same inputs, in one run (median of
 * rounds taken in turn, bench/timing.ts), as ratios.
 * - `seal fsverity sign FILE` against `fsverity sign FILE` (digest of a SIZE MiB file, then the
 *   PKCS#7 signature; RSA 2048), both as commands;
 * - 200 dm-verity root-hash signatures in one process (`signRootHash`, what `seal image
 *   sign-verity` does per layer) against 200 `openssl smime -sign -noattr -nocerts -binary` runs;
 * - `seal image sign-verity` of a sealed composefs image (verification included), for scale.
 *   node bench/signatures.ts [SIZE_MIB]
 */
import { execFileSync } from 'node:child_process';
import { createPrivateKey, randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { signRootHash } from '../src/seal/index.ts';
import { race } from './timing.ts';

const mib = Number(process.argv[2] ?? 256);
const work = mkdtempSync(join(tmpdir(), 'bench-signatures-'));
const seal = fileURLToPath(new URL('../bin/seal', import.meta.url));
const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: 'ignore' });

try {
  const key = join(work, 'key.pem');
  const cert = join(work, 'cert.pem');
  run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    key,
    '-out',
    cert,
    '-subj',
    '/CN=bench',
    '-days',
    '1',
  ]);
  const data = join(work, 'data.img');
  const fd = openSync(data, 'w');
  for (let i = 0; i < mib; i++) writeSync(fd, randomBytes(1 << 20));
  closeSync(fd);

  const file = await race(3, {
    seal: () => run(seal, ['fsverity', 'sign', data, join(work, 'seal.sig'), '--key', key, '--cert', cert]),
    fsverity: () => run('fsverity', ['sign', data, join(work, 'ref.sig'), `--key=${key}`, `--cert=${cert}`]),
  });
  if (!readFileSync(join(work, 'seal.sig')).equals(readFileSync(join(work, 'ref.sig'))))
    throw new Error('the signatures differ');

  const roots = Array.from({ length: 200 }, () => randomBytes(32).toString('hex'));
  const signer = { key: createPrivateKey(readFileSync(key)), certificate: readFileSync(cert) };
  const rootFile = join(work, 'root.txt');
  const many = await race(3, {
    seal: () => {
      for (const r of roots) signRootHash(r, signer);
    },
    openssl: () => {
      for (const r of roots) {
        writeFileSync(rootFile, r);
        run('openssl', [
          'smime',
          '-sign',
          '-noattr',
          '-nocerts',
          '-binary',
          '-in',
          rootFile,
          '-signer',
          cert,
          '-inkey',
          key,
          '-outform',
          'DER',
          '-out',
          join(work, 'r.p7s'),
        ]);
      }
    },
  });

  const src = join(work, 'src');
  const tree = join(work, 'tree');
  run('mkdir', ['-p', join(tree, 'usr')]);
  for (let i = 0; i < 200; i++) writeFileSync(join(tree, 'usr', `f${i}`), randomBytes(20_000));
  run(seal, ['image', 'import', `dir:${tree}`, `oci:${src}:t`]);
  run(seal, ['image', 'seal', `oci:${src}:t`, `oci:${join(work, 'cfs')}:s`, '--format', 'composefs']);
  const image = await race(3, {
    seal: () =>
      run(seal, ['image', 'sign-verity', `oci:${join(work, 'cfs')}:s`, '--key', key, '--cert', cert]),
  });

  console.log(
    `fs-verity signature of a ${mib} MiB file: seal ${file.seal.toFixed(2)} s, fsverity sign ${file.fsverity.toFixed(2)} s, ratio ${(file.seal / file.fsverity).toFixed(2)} (identical bytes)`,
  );
  console.log(
    `200 root-hash signatures: seal ${many.seal.toFixed(3)} s in one process, openssl smime ${many.openssl.toFixed(2)} s as 200 runs, ratio ${(many.seal / many.openssl).toFixed(3)}`,
  );
  console.log(
    `seal image sign-verity of a 200-file composefs image (verify + 4 signatures): ${image.seal.toFixed(2)} s`,
  );
} finally {
  rmSync(work, { recursive: true, force: true });
}
