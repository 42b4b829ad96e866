/** The UEFI binaries the PE, UKI and Secure Boot tests work on, and test signing keys made by openssl. */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { vmKernel } from './vm.ts';

/** systemd-boot-efi 254's UEFI stub (bookworm-backports, installed by scripts/setup.sh). */
export const STUB_254 = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
export const BOOT_MANAGER_254 = '/usr/lib/systemd/boot/efi/systemd-bootx64.efi';

/** Debian 12's own stub, systemd 252 (fetched once by scripts/systemd-252.sh). */
export function stub252(): string {
  const script = fileURLToPath(new URL('../../scripts/systemd-252.sh', import.meta.url));
  const dir = execFileSync('bash', [script], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
  return join(dir, 'linuxx64.efi.stub');
}

/** bookworm-backports' 6.12 kernel (signed by Debian), as the VM tests boot it. */
export function testKernel(): string {
  return join(vmKernel(), 'vmlinuz');
}

export type TestKeyType = 'rsa-2048' | 'rsa-3072' | 'rsa-4096' | 'ecdsa-p256' | 'ecdsa-p384';

/** A self-signed certificate and its key, made by openssl: DIR/NAME.key and DIR/NAME.crt. */
export function opensslCertificate(
  dir: string,
  name: string,
  type: TestKeyType = 'rsa-2048',
  subject = `/CN=Seal test ${name}`,
): { key: string; cert: string } {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  const algorithm = type.startsWith('rsa-')
    ? ['-newkey', `rsa:${type.slice(4)}`]
    : ['-newkey', 'ec', '-pkeyopt', `ec_paramgen_curve:${type === 'ecdsa-p256' ? 'P-256' : 'P-384'}`];
  execFileSync(
    'openssl',
    [
      'req',
      '-new',
      '-x509',
      ...algorithm,
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-subj',
      subject,
      '-days',
      '3650',
    ],
    { stdio: 'ignore' },
  );
  return { key, cert };
}
