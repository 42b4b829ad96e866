/**
 * The qemu command line of src/machine/qemu.ts (the VM tests boot through it): Secure Boot
 * firmware with SMM and a writable varstore, ESPs in boot order, swtpm's control socket; and the
 * inputs it refuses to pass on.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MachineError, OVMF_CODE_SECURE_BOOT, qemuArguments, type Swtpm } from '../../src/machine/index.ts';

const tpm = { controlSocket: '/run/tpm/swtpm.ctrl' } as Swtpm;

test('UEFI with Secure Boot, two ESPs in order and a TPM', () => {
  const args = qemuArguments({
    firmware: { code: OVMF_CODE_SECURE_BOOT, vars: '/tmp/vars.fd' },
    esp: ['/tmp/a', '/tmp/b'],
    tpm,
  });
  const line = args.join(' ');
  assert.match(line, /-accel tcg /);
  assert.match(line, /-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on/);
  assert.match(
    line,
    /-drive if=pflash,format=raw,unit=0,readonly=on,file=\/usr\/share\/OVMF\/OVMF_CODE_4M.secboot.fd/,
  );
  assert.match(line, /-drive if=pflash,format=raw,unit=1,file=\/tmp\/vars.fd/);
  assert.match(
    line,
    /-drive if=none,id=esp0,format=raw,file=fat:rw:\/tmp\/a -device ide-hd,drive=esp0,bus=ide.0,bootindex=1/,
  );
  assert.match(line, /-device ide-hd,drive=esp1,bus=ide.1,bootindex=2/);
  assert.match(
    line,
    /-chardev socket,id=chrtpm,path=\/run\/tpm\/swtpm.ctrl -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0/,
  );
  assert.ok(!args.includes('-nic'), 'no network unless asked');
});

test('paths qemu would split, a TPM not in qemu mode and too many disks are refused', () => {
  const refused = (options: Parameters<typeof qemuArguments>[0], pattern: RegExp) =>
    assert.throws(
      () => qemuArguments(options),
      (e: unknown) => e instanceof MachineError && pattern.test(e.message),
    );
  refused({ esp: '/tmp/a,b' }, /cannot take a path with a comma/);
  refused({ disks: [{ path: '/tmp/x,file=/etc/shadow' }] }, /cannot take a path with a comma/);
  refused({ esp: Array.from({ length: 7 }, (_, i) => `/tmp/${i}`) }, /at most 6 ESP directories/);
  refused({ tpm: {} as Swtpm }, /qemu mode/);
  refused({ kernel: { path: '/boot/vmlinuz', cmdline: 'a\nb' } }, /newlines/);
});
