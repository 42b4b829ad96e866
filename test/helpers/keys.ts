/** Signing keys made by openssl, as a user would make them. */
import { execFileSync } from 'node:child_process';

export const P256 = ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'];

/** Writes a private key (PEM) to `key` and its public key to `key` with `.pub` for `.key`. */
export function opensslKeyPair(key: string, algorithm: string[] = P256): { key: string; pub: string } {
  const pub = key.replace(/(\.key)?$/, '.pub');
  execFileSync('openssl', ['genpkey', ...algorithm, '-out', key], { stdio: 'ignore' });
  execFileSync('openssl', ['pkey', '-in', key, '-pubout', '-out', pub]);
  return { key, pub };
}

/** Key algorithms as `openssl req -newkey` options: 'rsa:2048', 'rsa:4096', 'ec:P-256', 'ec:P-384'. */
function newkey(spec: string): string[] {
  if (spec.startsWith('rsa:')) return ['-newkey', spec];
  return ['-newkey', 'ec', '-pkeyopt', `ec_paramgen_curve:${spec.slice(3)}`];
}

/** A self-signed certificate with its key, made by `openssl req -x509` (PEM files in `dir`). */
export function opensslSelfSigned(
  dir: string,
  name: string,
  spec = 'rsa:2048',
): { key: string; cert: string } {
  const key = `${dir}/${name}.key`;
  const cert = `${dir}/${name}.pem`;
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      ...newkey(spec),
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-subj',
      `/CN=${name}`,
      '-days',
      '30',
    ],
    { stdio: 'ignore' },
  );
  return { key, cert };
}

/** A certificate issued by `ca` (a self-signed one from opensslSelfSigned), with its key. */
export function opensslIssued(
  dir: string,
  name: string,
  ca: { key: string; cert: string },
  spec = 'ec:P-256',
): { key: string; cert: string } {
  const key = `${dir}/${name}.key`;
  const csr = `${dir}/${name}.csr`;
  const cert = `${dir}/${name}.pem`;
  execFileSync(
    'openssl',
    ['req', '-new', ...newkey(spec), '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}`],
    {
      stdio: 'ignore',
    },
  );
  execFileSync(
    'openssl',
    [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca.cert,
      '-CAkey',
      ca.key,
      '-CAcreateserial',
      '-out',
      cert,
      '-days',
      '30',
    ],
    { stdio: 'ignore' },
  );
  return { key, cert };
}
