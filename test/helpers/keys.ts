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
