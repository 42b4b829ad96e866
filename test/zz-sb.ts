import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, rmSync } from 'node:fs';
import { OVMF_CODE_SECURE_BOOT, runQemu, Swtpm } from '../src/machine/index.ts';
import { runSeal } from './helpers/cli.ts';
import { buildBootKit, buildSystem, buildUki, type DeviceFixture, installDisk } from './helpers/device.ts';
import { vmKernel } from './helpers/vm.ts';

const w = '/tmp/dev/w';
const f: DeviceFixture = {
  work: w,
  pki: `${w}/pki`,
  ca: `${w}/pki/manifest-ca.pem`,
  productKey: `${w}/pki/products/5e4c1f0a-6d2b-4c8e-9f3a-7b1d2e3c4f50.key`,
  productCert: `${w}/pki/products/5e4c1f0a-6d2b-4c8e-9f3a-7b1d2e3c4f50.pem`,
  policyKey: `${w}/policy.key`,
  policyPub: `${w}/policy.pub`,
  deviceCert: `${w}/pki/devices/SN0001.pem`,
  deviceKey: `${w}/pki/devices/SN0001.key`,
  layout: `${w}/images`,
};
const step = process.argv[2] ?? 'all';
let t = performance.now();
const lap = (what: string) => {
  console.log(what, Math.round(performance.now() - t));
  t = performance.now();
};
if (step === 'all' || step === 'build') {
  rmSync(`${w}/secureboot`, { recursive: true, force: true });
  rmSync(`${w}/pki/kernel`, { recursive: true, force: true });
  rmSync(`${w}/pki/kernel-ca.pem`, { force: true });
  rmSync(`${w}/pki/kernel-ca.key`, { force: true });
  const kit = buildBootKit(
    f,
    `${vmKernel()}/vmlinuz`,
    execFileSync('bash', ['scripts/kernel-package.sh'], { encoding: 'utf8' }).trim(),
  );
  lap('kit');
  buildUki(f, kit, `${w}/seal.efi`);
  lap('uki');
  installDisk(f, `oci:${w}/images:system-7`, `${w}/disk.img`, `${w}/seal.efi`);
  lap('install');
  rmSync(`${w}/tpm`, { recursive: true, force: true });
  const tpm = await Swtpm.start({ stateDir: `${w}/tpm`, mode: 'tcp' });
  const r = runSeal([
    'tpm',
    'provision',
    '--tpm',
    tpm.address,
    '--product-policy-key',
    f.policyPub,
    '--device-cert',
    f.deviceCert,
    '--device-key',
    f.deviceKey,
  ]);
  console.log(r.stdout, r.stderr);
  await tpm.stop();
  copyFileSync(kit.vars, `${w}/vars.fd`);
  lap('tpm');
}
if (step === 'all' || step === 'boot') {
  const tpm = await Swtpm.start({ stateDir: `${w}/tpm`, mode: 'qemu' });
  const result = await runQemu({
    firmware: { code: OVMF_CODE_SECURE_BOOT, vars: `${w}/vars.fd` },
    disks: [{ path: `${w}/disk.img`, virtio: true }],
    tpm,
    memory: 2048,
    timeoutMs: 300000,
    stopOn: /boot complete.*\n(.*\n){2}|the boot ends|Access Denied/,
    onOutput: (s) => process.stdout.write(s),
  });
  await tpm.stop();
  lap('boot');
  console.log(result.timedOut, result.stopped);
}
