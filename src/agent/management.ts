/**
 * The management image's boot (`seal.management`): revocation of every older production UKI and
 * the installation of the system that replaces them, and nothing else — no service runs.
 *
 * Its UKI is signed with a key of its own (its own PCR 7), and its initrd carries a management
 * policy, which opens only the TPM owner secret. The agent:
 *
 *   verifies the device's `current` system (its product is the device's) → fetches the system at
 *   seal.install into the store and verifies it as a boot would (CA, product, the TPM's floor,
 *   every layer) → reads, from its boot image, the signed policy its new UKI carries → stages that
 *   UKI as a plain boot entry → raises the TPM's policy version to that policy's (older UKIs'
 *   policies then fail at unlock) → makes the system `current` → removes the other entries →
 *   powers off.
 *
 * Interrupted anywhere, it can run again: a stage repeats, and the version is raised only while
 * it is below the new UKI's.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SystemManifest } from '../manifest/spec.ts';
import { verifySystem } from '../manifest/verify.ts';
import { parseCertificates } from '../pki/index.ts';
import { LayoutStore } from '../store/index.ts';
import {
  checkPolicy,
  parsePolicy,
  readAcceptedVersion,
  readVersion,
  revoke,
  type Tpm,
} from '../tpm/index.ts';
import { BOOT_IMAGE_POLICY, BOOT_IMAGE_UKI } from '../uki/boot-image.ts';
import { bootEntryName, ENTRIES_DIR, mountEsp } from './boot-entries.ts';
import type { AgentParameters } from './cmdline.ts';
import { Device, RUN } from './device.ts';
import type { DeviceDisk } from './disk.ts';
import { AgentError } from './errors.ts';
import type { BootLog } from './log.ts';
import { MS, system } from './system.ts';
import { SEAL_ROOT } from './tools.ts';
import { downgradeProblem, fetchSystem } from './update.ts';

const fail = (message: string): never => {
  throw new AgentError('AGENT_UPDATE', message);
};

export async function manage(
  params: AgentParameters,
  log: BootLog,
  disk: DeviceDisk,
  tpm: Tpm,
): Promise<void> {
  const source = params.install!;
  const policy = await log.step(
    'read the management policy',
    () => {
      const p = parsePolicy(
        readFileSync(`${SEAL_ROOT}/etc/policy.json`),
        'the signed TPM policy of the initrd',
      );
      if (p.role !== 'management')
        fail(
          `seal.management needs a management policy in the initrd (seal tpm policy sign --management), not a ${p.role} one`,
        );
      return p;
    },
    (p) => `policy version ${p.policyVersion}`,
  );
  const ca = parseCertificates(
    readFileSync(`${SEAL_ROOT}/etc/manifest-ca.pem`, 'utf8'),
    'the manifest CA of the initrd',
  )[0]!;
  await log.step('mount the store', () => {
    mkdirSync(`${RUN}/store`, { recursive: true });
    system().mount(
      disk.partitions.store.device,
      `${RUN}/store`,
      'ext4',
      MS.RDONLY | MS.NOSUID | MS.NODEV,
      null,
    );
  });
  const entries = await log.step(
    'mount the ESP',
    () => mountEsp(disk.partitions.esp.device),
    (e) =>
      `entries: ${
        e
          .list()
          .map((x) => x.file)
          .join(', ') || 'none'
      }`,
  );
  const current = await log.step(
    "verify the device's current system",
    () => verifySystem(`oci:${RUN}/store:current`, { ca }),
    (r) => `product ${r.document.product}, version ${r.document.version}`,
  );
  const device = new Device({
    store: await LayoutStore.open(`${RUN}/store`),
    ca,
    product: current.document.product,
    tpm,
    versionAuth: Buffer.alloc(0),
    log,
    state: { events: [] },
    esp: { entries },
  });
  await log.step(
    `fetch the system ${source}`,
    () => fetchSystem(device, source, { transport: { plainHttp: params.registryInsecure } }),
    (f) => `${f.blobs} new blobs, ${f.bytes} bytes`,
  );
  const report = await log.step(
    'verify it',
    () => device.verify('next', true),
    (r) => `version ${r.document.version}, ${r.manifest.digest}, every layer verified`,
  );
  const next = report.document as SystemManifest;
  const problem = downgradeProblem(current.document as SystemManifest, next);
  if (problem) fail(problem);
  const boot = next.targets.find((t) => t.role === 'boot');
  if (!boot)
    fail(`version ${next.version} carries no UKI (a target of role boot): there is nothing to install`);
  if (!existsSync(entries.dir))
    fail(
      `this device's ESP has no ${ENTRIES_DIR}: it boots its UKI without systemd-boot, where no entry can be installed`,
    );

  const layers = await device.openImage(boot!);
  const image = layers.lowers[0]!;
  const wanted = await log.step(
    "read the new UKI's policy",
    () => {
      let text: Buffer;
      try {
        text = readFileSync(join(image, BOOT_IMAGE_POLICY));
      } catch {
        return fail(
          `the boot image of version ${next.version} carries no ${BOOT_IMAGE_POLICY} (seal uki image --policy): the version to revoke up to is unknown`,
        );
      }
      const p = parsePolicy(text, `the policy of version ${next.version}'s UKI`);
      const check = checkPolicy(p);
      if (p.role !== 'production' || !check.signatureValid || !check.consistent || !check.wellFormed)
        fail(
          `the policy of version ${next.version}'s UKI is not a valid production policy: ${check.problems.join('; ')}`,
        );
      if (!p.signingKey.name.equals(policy.signingKey.name))
        fail(
          `the policy of version ${next.version}'s UKI is signed by another key than the management policy's`,
        );
      return p.policyVersion;
    },
    (v) => `policy version ${v}`,
  );
  const at = (await readVersion(tpm)) ?? fail('the TPM has no policy version (it was not provisioned)');
  if (wanted < at)
    fail(`the new UKI's policy is for version ${wanted}, below the TPM's ${at}: it could never unlock`);
  if (wanted > at + 1)
    fail(`the new UKI's policy is for version ${wanted}: one management boot raises the TPM's ${at} by one`);
  if (wanted > at && policy.policyVersion !== at)
    fail(`the management policy is for version ${policy.policyVersion}, the TPM is at ${at}`);

  await log.step(
    `install the UKI of version ${next.version}`,
    () => device.writingEntries((e) => e.stage(next.version, join(image, BOOT_IMAGE_UKI), undefined, true)),
    (e) => `${ENTRIES_DIR}/${e.file}`,
  );
  await log.step(
    'revoke the older UKIs',
    async () => (wanted > at ? revoke(tpm, policy) : { from: at, to: at }),
    (r) =>
      r.to > r.from
        ? `policy version ${r.from} -> ${r.to}: every UKI with an older policy now fails at unlock`
        : `policy version already ${r.to}`,
  );
  await log.step(`make version ${next.version} current`, () =>
    device.writingStore(async () => {
      await device.store.tag(report.manifest, 'current');
      await device.store.untag('next').catch(() => {});
    }),
  );
  const id = bootEntryName(next.version);
  const removed = await device.writingEntries((e) => e.keepOnly(id));
  await device.closeUnused(new Set());
  log.say(
    `management: version ${next.version} installed with its UKI ${id}${removed.length ? `; removed ${removed.join(', ')}` : ''}; accepted version stays ${await readAcceptedVersion(tpm)} until it boots; powering off`,
  );
}
