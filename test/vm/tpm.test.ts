/**
 * Seal's TPM client on a real kernel's TPM devices: a VM booting Debian's 6.12 kernel with swtpm
 * as its TIS TPM runs `seal tpm` (on the project's Node.js, from the initramfs) against
 * /dev/tpmrm0 and /dev/tpm0 — provisioning, signing a policy for the guest's PCR 7, unlocking the
 * LUKS passphrase, locking PCR 7, and being refused afterwards.
 */
import assert from 'node:assert/strict';
import { createPrivateKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Swtpm } from '../../src/machine/index.ts';
import { initPki, newDevice } from '../../src/pki/index.ts';
import { opensslKeyPair } from '../helpers/keys.ts';
import { runInVm } from '../helpers/vm.ts';

const root = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const work = mkdtempSync(join(tmpdir(), 'seal-vm-tpm-'));
after(() => rmSync(work, { recursive: true, force: true }));

test('seal tpm on /dev/tpmrm0 and /dev/tpm0 in a VM: provision, unlock, PCR 7 lock, refusal', async () => {
  await initPki(join(work, 'pki'));
  const device = await newDevice(join(work, 'pki'), {
    product: '3b241101-e2bb-4255-8caf-4136c566a962',
    serial: 'VM1',
  });
  const policy = opensslKeyPair(join(work, 'policy.key'));
  const luks = Buffer.from('a LUKS passphrase from the factory');
  writeFileSync(join(work, 'luks'), luks);
  const swtpm = await Swtpm.start({ stateDir: join(work, 'swtpm'), mode: 'qemu' });
  const node = join(root, 'node_modules/node/bin/node');
  try {
    const seal = `${node} --disable-warning=ExperimentalWarning /seal/src/cli/main.ts`;
    const script = `
S="${seal}"
ls -l /dev/tpm0 /dev/tpmrm0
$S tpm provision --tpm /dev/tpmrm0 --product-policy-key policy.pub --device-cert cert.pem --device-key key.pem --luks-passphrase-file luks
$S tpm status --tpm /dev/tpm0
P7=$($S tpm pcrs --tpm /dev/tpmrm0 --json 7 | ${node} -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s)["sha256:7"]))')
echo "PCR7 $P7"
$S tpm policy sign --key policy.key --pcr7 "$P7" --version 1 /tmp/policy.json
$S tpm unlock --tpm /dev/tpmrm0 --policy /tmp/policy.json --luks-passphrase-out - > /tmp/luks
cmp /tmp/luks luks && echo "UNLOCKED via tpmrm0"
$S tpm unlock --tpm /dev/tpm0 --policy /tmp/policy.json --lock-pcr7 && echo "UNLOCKED via tpm0, PCR 7 locked"
if $S tpm unlock --tpm /dev/tpmrm0 --policy /tmp/policy.json 2>/tmp/err; then echo "NOT REFUSED"; exit 1; fi
cat /tmp/err
`;
    writeFileSync(
      join(work, 'key.pem'),
      createPrivateKey(readFileSync(device.key!)).export({ type: 'pkcs8', format: 'pem' }),
    );
    const result = await runInVm(
      script,
      {
        'policy.pub': policy.pub,
        'policy.key': policy.key,
        'cert.pem': device.certificate,
        'key.pem': join(work, 'key.pem'),
        luks: join(work, 'luks'),
      },
      {
        programs: [node],
        directories: { '/seal/src': join(root, 'src'), '/seal/package.json': join(root, 'package.json') },
        tpm: swtpm.controlSocket!,
        timeoutMs: 480_000,
      },
    );
    assert.equal(result.status, 0, result.output);
    assert.match(result.output, /crw.* \/dev\/tpmrm0/);
    assert.match(result.output, /owner authorization set, policy version 1/);
    assert.match(result.output, /PCR7 [0-9a-f]{64}/);
    assert.match(result.output, /UNLOCKED via tpmrm0/);
    assert.match(result.output, /UNLOCKED via tpm0, PCR 7 locked/);
    assert.match(
      result.output,
      /TPM2_PolicyPCR failed: TPM_RC_VALUE .*PCR 7 was locked after the secrets were released in this boot \[TPM_REFUSED\]/,
    );
  } finally {
    await swtpm.stop();
  }
});
