/**
 * `seal tpm …`: the TPM client and Seal's EA design from the command line — factory
 * provisioning, signed policies, unlock, revocation, the TPM-resident identity — plus read-only
 * helpers (status, PCRs, policy inspection). Secrets are printed only when asked with `-`.
 */
import { createPrivateKey, createPublicKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { UsageError } from '../../errors.ts';
import {
  ACCEPTED_BASE_INDEX,
  ACCEPTED_INDEX,
  checkPolicy,
  computeApproved,
  createIdentity,
  DEFAULT_TPM,
  HASHES,
  handleHex,
  identityPublic,
  lockPcr7,
  NV,
  ownerAuthSet,
  parseHashName,
  parsePolicy,
  provision,
  quoteIdentity,
  readAcceptedState,
  readVersion,
  revoke,
  SECRET_INDEX,
  SECRETS,
  type SecretName,
  SRK_HANDLE,
  serializePolicy,
  signChallenge,
  signPolicy,
  Tpm,
  TpmError,
  TpmResponseError,
  unlock,
  VERSION_INDEX,
  verifyChallenge,
} from '../../tpm/index.ts';
import { writeFileAtomic } from '../../util/atomic.ts';
import type { Command, OptionSpec } from '../command.ts';

type Options = Record<string, string | boolean | string[] | undefined>;

const tpmOption: Record<string, OptionSpec> = {
  tpm: {
    type: 'string',
    value: 'DEV|swtpm:HOST:PORT|swtpm:unix:PATH',
    description: `the TPM: a device, or swtpm's TCP or Unix command socket (default ${DEFAULT_TPM})`,
  },
};

async function withTpm<T>(options: Options, run: (tpm: Tpm) => Promise<T>): Promise<T> {
  const tpm = await Tpm.open(typeof options.tpm === 'string' ? options.tpm : DEFAULT_TPM);
  try {
    return await run(tpm);
  } finally {
    await tpm.close();
  }
}

function required(options: Options, name: string): string {
  const v = options[name];
  if (typeof v !== 'string' || v === '') throw new UsageError(`--${name} is required`);
  return v;
}

function passphrase(file: unknown): string | undefined {
  return typeof file === 'string' ? readFileSync(file, 'utf8').split('\n')[0] : undefined;
}

function readPrivate(path: string, passphraseFile: unknown): KeyObject {
  try {
    const pass = passphrase(passphraseFile);
    return createPrivateKey({
      key: readFileSync(path),
      format: 'pem',
      ...(pass !== undefined ? { passphrase: pass } : {}),
    });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).path) throw error;
    throw new TpmError('TPM_KEY', `cannot read a private key from ${path}: ${(error as Error).message}`, {
      subject: path,
      cause: error,
    });
  }
}

/** A public key from a PEM public key, certificate or private key. */
function readPublic(path: string): KeyObject {
  const pem = readFileSync(path);
  try {
    if (pem.includes('CERTIFICATE')) return new X509Certificate(pem).publicKey;
    return createPublicKey(pem);
  } catch (error) {
    throw new TpmError('TPM_KEY', `cannot read a public key from ${path}: ${(error as Error).message}`, {
      subject: path,
      cause: error,
    });
  }
}

function readCertificateDer(path: string): Buffer {
  try {
    return Buffer.from(new X509Certificate(readFileSync(path)).raw);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).path) throw error;
    throw new TpmError(
      'TPM_INVALID_ARGUMENT',
      `${path} is not an X.509 certificate: ${(error as Error).message}`,
      { subject: path },
    );
  }
}

function parseHexOption(value: string, name: string, size?: number): Buffer {
  const clean = value.replace(/^0x/, '').toLowerCase();
  if (!/^([0-9a-f]{2})+$/.test(clean))
    throw new UsageError(`--${name} takes hex bytes, not ${JSON.stringify(value)}`);
  const b = Buffer.from(clean, 'hex');
  if (size !== undefined && b.length !== size)
    throw new UsageError(`--${name} is ${b.length} bytes, not ${size}`);
  return b;
}

function readPolicyFile(path: string) {
  return parsePolicy(readFileSync(path), path);
}

/** Where each secret goes: FILE (atomically, mode 0600) or `-` (stdout); at most one `-`. */
function secretOutputs(options: Options, names: Record<string, string>, json: boolean): Map<string, string> {
  const out = new Map<string, string>();
  for (const [option, name] of Object.entries(names)) {
    const v = options[option];
    if (typeof v === 'string' && v) out.set(name, v);
  }
  const stdout = [...out.values()].filter((v) => v === '-').length;
  if (stdout > 1) throw new UsageError('only one secret can go to stdout (-)');
  if (stdout && json) throw new UsageError('--json and a secret on stdout (-) do not mix');
  return out;
}

async function emit(target: string, data: Buffer | string): Promise<void> {
  if (target === '-') process.stdout.write(data);
  else await writeFileAtomic(target, data, 0o600);
}

function pem(label: string, der: Buffer): string {
  return `-----BEGIN ${label}-----\n${der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END ${label}-----\n`;
}

const SECRET_LABEL: Record<SecretName, string> = {
  deviceCert: 'device certificate',
  deviceKey: 'device key',
  luksPassphrase: 'LUKS passphrase',
  ownerSecret: 'owner secret',
  versionAuth: 'version authorization',
};

export const tpmCommands: Command[] = [
  {
    path: ['tpm', 'provision'],
    summary: 'Factory step: take ownership and store the device secrets under the product policy-signing key',
    args: '',
    arity: [0, 0],
    details:
      'Defines the policy version counter (1 on a fresh TPM) and the secret NV indices — device certificate, device key (unless TPM-resident), LUKS passphrase, version authorization, owner secret — each readable only through PolicyAuthorize(policy-signing key), written and write-locked; the accepted manifest version (an NV counter anyone reads and only the version authorization raises, and its base), at 0; then sets a random owner authorization kept only in the TPM (never printed). Idempotent; a TPM provisioned by someone else is refused unchanged. A TPM provisioned before Seal kept the accepted version is completed with --management-policy, booted in the management image.',
    options: {
      ...tpmOption,
      'product-policy-key': {
        type: 'string',
        value: 'PEM',
        description: 'the product policy-signing public key (or certificate)',
      },
      'device-cert': { type: 'string', value: 'PEM', description: 'the device certificate' },
      'device-key': { type: 'string', value: 'PEM', description: 'the device private key' },
      'device-key-passphrase-file': {
        type: 'string',
        value: 'FILE',
        description: "the device key's passphrase",
      },
      'device-key-in-tpm': {
        type: 'boolean',
        description: 'the device key is the TPM-resident identity key (seal tpm identity create)',
      },
      'luks-passphrase-file': {
        type: 'string',
        value: 'FILE',
        description: 'store this LUKS passphrase (default: 64 random hex characters)',
      },
      'luks-passphrase-out': {
        type: 'string',
        value: 'FILE|-',
        description: 'write the stored LUKS passphrase to FILE or stdout',
      },
      'management-policy': {
        type: 'string',
        value: 'FILE',
        description:
          'a management policy for the current version: adds the accepted manifest version to a TPM provisioned without it',
      },
    },
    async run(ctx, _, options) {
      const inTpm = options['device-key-in-tpm'] === true;
      if (inTpm === (typeof options['device-key'] === 'string'))
        throw new UsageError('give --device-key or --device-key-in-tpm (one of them)');
      const policyKey = readPublic(required(options, 'product-policy-key'));
      const deviceCert = readCertificateDer(required(options, 'device-cert'));
      const deviceKey = inTpm
        ? undefined
        : (readPrivate(options['device-key'] as string, options['device-key-passphrase-file']).export({
            type: 'pkcs8',
            format: 'der',
          }) as Buffer);
      const outputs = secretOutputs(options, { 'luks-passphrase-out': 'luks' }, ctx.json);
      const luks =
        typeof options['luks-passphrase-file'] === 'string'
          ? readFileSync(options['luks-passphrase-file'])
          : undefined;
      const managementPolicy =
        typeof options['management-policy'] === 'string'
          ? readPolicyFile(options['management-policy'])
          : undefined;
      const result = await withTpm(options, (tpm) =>
        provision(tpm, {
          policyKey,
          deviceCert,
          ...(deviceKey ? { deviceKey } : { deviceKeyInTpm: true }),
          ...(luks ? { luksPassphrase: luks } : {}),
          ...(managementPolicy ? { managementPolicy } : {}),
        }),
      );
      try {
        const target = outputs.get('luks');
        if (target) {
          if (!result.luksPassphrase)
            throw new TpmError(
              'TPM_INVALID_ARGUMENT',
              'the TPM was already provisioned: its LUKS passphrase can only be read back with a signed policy (seal tpm unlock)',
            );
          await emit(target, result.luksPassphrase);
        }
      } finally {
        result.luksPassphrase?.fill(0);
      }
      const { luksPassphrase: _luks, ...report } = result;
      ctx.result(report);
      if (outputs.get('luks') !== '-')
        ctx.print(
          `${{ provisioned: 'Provisioned', 'already-provisioned': 'Already provisioned', completed: 'Completed' }[result.status]}: policy version ${result.version}, accepted manifest version ${result.acceptedVersion}, indices ${Object.entries(
            result.indices,
          )
            .map(([k, v]) => `${k} ${v}`)
            .join(', ')}`,
        );
      return 0;
    },
  },
  {
    path: ['tpm', 'policy', 'sign'],
    summary: 'Sign the policy a boot image unlocks with: PolicyPCR(PCR 7) ∧ PolicyNV(version == N)',
    args: 'OUT',
    arity: [1, 1],
    details:
      'OUT is a JSON file (or - for stdout) that ships in the initrd. PCR 7 is given as its SHA-256 value (--pcr7), or predicted for booting a UKI signed by the same key with a varstore (--uki, --vars, [--boot-manager]): PCR 7 depends on the db entry that vouches for the signer, not on the image, so any UKI signed by the production key serves. --management signs for the management image: its policy opens the owner secret (seal tpm revoke).',
    options: {
      key: { type: 'string', value: 'PEM', description: 'the product policy-signing private key (required)' },
      'passphrase-file': { type: 'string', value: 'FILE', description: "the key's passphrase" },
      pcr7: {
        type: 'string',
        value: 'HEX',
        description: 'the SHA-256 PCR 7 value of the boot image',
      },
      uki: {
        type: 'string',
        value: 'UKI',
        description: 'predict PCR 7 for booting this signed UKI (with --vars)',
      },
      vars: { type: 'string', value: 'VARS', description: 'the varstore the device boots with (with --uki)' },
      'boot-manager': { type: 'string', value: 'EFI', description: 'a boot manager started before the UKI' },
      version: { type: 'string', value: 'N', description: 'the policy version the TPM must hold (required)' },
      management: { type: 'boolean', description: 'a management policy (opens the owner secret)' },
    },
    async run(ctx, [out], options) {
      const key = readPrivate(required(options, 'key'), options['passphrase-file']);
      let pcr7: Buffer;
      if (typeof options.uki === 'string') {
        if (typeof options.vars !== 'string' || options.pcr7 !== undefined)
          throw new UsageError('--uki takes --vars, and replaces --pcr7');
        const { predictPcrs } = await import('../../measure/index.ts');
        const prediction = await predictPcrs({
          uki: options.uki,
          varstore: options.vars,
          ...(typeof options['boot-manager'] === 'string' ? { bootManager: options['boot-manager'] } : {}),
          pcrs: [7],
          banks: ['sha256'],
        });
        if (!prediction.secureBoot)
          throw new UsageError(
            `${options.vars} is not a Secure Boot varstore: PCR 7 would not name the signer`,
          );
        pcr7 = prediction.values.sha256![7]!;
      } else {
        pcr7 = parseHexOption(required(options, 'pcr7'), 'pcr7', 32);
      }
      const version = Number(required(options, 'version'));
      if (!Number.isSafeInteger(version) || version < 1)
        throw new UsageError('--version takes a whole number ≥ 1');
      const policy = signPolicy({
        key,
        role: options.management ? 'management' : 'production',
        version,
        pcrs: [[7, pcr7]],
      });
      const text = serializePolicy(policy);
      if (out === '-') process.stdout.write(text);
      else await writeFileAtomic(out!, text);
      ctx.result({
        file: out,
        role: policy.role,
        version,
        approvedPolicy: policy.approvedPolicy.toString('hex'),
        signingKey: policy.signingKey.name.toString('hex'),
      });
      if (out !== '-')
        ctx.print(
          `${out}: ${policy.role} policy for version ${version}, approved digest ${policy.approvedPolicy.toString('hex')}`,
        );
      return 0;
    },
  },
  {
    path: ['tpm', 'policy', 'show'],
    summary: 'Show a signed policy and check it offline (digest, signature, role)',
    args: 'POLICY',
    arity: [1, 1],
    options: {
      key: { type: 'string', value: 'PEM', description: 'also require this policy-signing public key' },
    },
    async run(ctx, [file], options) {
      const p = readPolicyFile(file!);
      const check = checkPolicy(p);
      const problems = [...check.problems];
      if (typeof options.key === 'string') {
        const expected = readPublic(options.key).export({ type: 'spki', format: 'der' }) as Buffer;
        if (
          !expected.equals(
            createPublicKey(p.signingKey.pem).export({ type: 'spki', format: 'der' }) as Buffer,
          )
        )
          problems.push(`it is not signed by ${options.key}`);
      }
      const report = {
        file,
        role: p.role,
        policyVersion: p.policyVersion,
        pcrs: Object.fromEntries(p.pcr.pcrs.map(([n, v]) => [`${p.pcr.bank}:${n}`, v.toString('hex')])),
        versionIndex: handleHex(p.nv.index),
        approvedPolicy: p.approvedPolicy.toString('hex'),
        computedPolicy: computeApproved(p).toString('hex'),
        signingKey: p.signingKey.name.toString('hex'),
        valid: problems.length === 0,
        problems,
      };
      ctx.result(report);
      ctx.print(`${file}: ${p.role} policy, version ${p.policyVersion}`);
      for (const [k, v] of Object.entries(report.pcrs)) ctx.print(`  PCR ${k} = ${v}`);
      ctx.print(`  approved policy ${report.approvedPolicy}`);
      ctx.print(`  signing key ${report.signingKey}`);
      ctx.print(
        problems.length ? `  INVALID: ${problems.join('; ')}` : '  valid: digest and signature check',
      );
      return problems.length ? 1 : 0;
    },
  },
  {
    path: ['tpm', 'unlock'],
    summary: 'Satisfy a signed policy and read the device secrets (optionally locking PCR 7 afterwards)',
    args: '',
    arity: [0, 0],
    details:
      "Reads the secrets in one salted policy session with parameter encryption. Without an -out option it only reports which secrets were released; secrets are written only where asked (FILE: atomically, mode 0600; -: stdout). On refusal nothing is written and the message carries the TPM's reason.",
    options: {
      ...tpmOption,
      policy: { type: 'string', value: 'FILE', description: 'the signed policy (required)' },
      'lock-pcr7': {
        type: 'boolean',
        description: 'extend PCR 7 afterwards so nothing more can be read in this boot',
      },
      'storage-key-name': {
        type: 'string',
        value: 'HEX',
        description: 'refuse a storage key (salt) other than this Name (provision reports it)',
      },
      'device-cert-out': {
        type: 'string',
        value: 'FILE|-',
        description: 'write the device certificate (PEM)',
      },
      'device-key-out': { type: 'string', value: 'FILE|-', description: 'write the device key (PKCS#8 PEM)' },
      'luks-passphrase-out': { type: 'string', value: 'FILE|-', description: 'write the LUKS passphrase' },
    },
    async run(ctx, _, options) {
      const policy = readPolicyFile(required(options, 'policy'));
      const outputs = secretOutputs(
        options,
        {
          'device-cert-out': 'deviceCert',
          'device-key-out': 'deviceKey',
          'luks-passphrase-out': 'luksPassphrase',
        },
        ctx.json,
      );
      const unlocked = await withTpm(options, (tpm) =>
        unlock(tpm, {
          policy,
          lockPcr7: options['lock-pcr7'] === true,
          ...(typeof options['storage-key-name'] === 'string'
            ? { storageKeyName: parseHexOption(options['storage-key-name'], 'storage-key-name', 34) }
            : {}),
        }),
      );
      try {
        const s = unlocked.secrets;
        for (const [name, target] of outputs) {
          const secret = s[name as SecretName];
          if (!secret)
            throw new TpmError(
              'TPM_NOT_PROVISIONED',
              `the TPM released no ${SECRET_LABEL[name as SecretName]}`,
            );
          const data =
            name === 'deviceCert'
              ? pem('CERTIFICATE', secret)
              : name === 'deviceKey'
                ? pem('PRIVATE KEY', secret)
                : secret;
          await emit(target, data);
        }
        const released = SECRETS.filter((n) => s[n]).map((n) => ({ secret: n, bytes: s[n]!.length }));
        ctx.result({ version: unlocked.version, released, pcr7Locked: options['lock-pcr7'] === true });
        if (![...outputs.values()].includes('-')) {
          ctx.print(
            `Released for policy version ${unlocked.version}: ${released.map((r) => `${SECRET_LABEL[r.secret]} (${r.bytes} bytes)`).join(', ')}`,
          );
          if (options['lock-pcr7']) ctx.print('PCR 7 locked for this boot');
        }
      } finally {
        unlocked.wipe();
      }
      return 0;
    },
  },
  {
    path: ['tpm', 'lock-pcr7'],
    summary:
      "Extend PCR 7 with Seal's fixed lock value in every bank, so no signed policy matches until reboot",
    args: '',
    arity: [0, 0],
    options: { ...tpmOption },
    async run(ctx, _, options) {
      await withTpm(options, (tpm) => lockPcr7(tpm));
      ctx.result({ locked: true });
      ctx.print('PCR 7 locked for this boot');
      return 0;
    },
  },
  {
    path: ['tpm', 'revoke'],
    summary: 'Management flow: bump the policy version, revoking every policy signed for an older one',
    args: '',
    arity: [0, 0],
    options: {
      ...tpmOption,
      'management-policy': {
        type: 'string',
        value: 'FILE',
        description: 'a management policy for the current version (required)',
      },
    },
    async run(ctx, _, options) {
      const policy = readPolicyFile(required(options, 'management-policy'));
      const result = await withTpm(options, (tpm) => revoke(tpm, policy));
      ctx.result(result);
      ctx.print(
        `Policy version ${result.from} → ${result.to}: policies for version ${result.from} are revoked`,
      );
      return 0;
    },
  },
  {
    path: ['tpm', 'status'],
    summary: "What the TPM holds of Seal's provisioning (read-only)",
    args: '',
    arity: [0, 0],
    options: { ...tpmOption },
    async run(ctx, _, options) {
      const report = await withTpm(options, async (tpm) => {
        const nv = async (index: number) => {
          try {
            const { public: pub } = await tpm.nvReadPublic(index);
            return {
              size: pub.dataSize,
              attributes: `0x${pub.attributes.toString(16)}`,
              writeLocked: (pub.attributes & NV.WRITELOCKED) !== 0,
            };
          } catch (error) {
            if (error instanceof TpmResponseError && error.rcName === 'TPM_RC_HANDLE') return null;
            throw error;
          }
        };
        const present = async (handle: number) => {
          try {
            return (await tpm.readPublic(handle)).name.toString('hex');
          } catch (error) {
            if (error instanceof TpmResponseError && error.rcName === 'TPM_RC_HANDLE') return null;
            throw error;
          }
        };
        const secrets: Record<string, unknown> = {};
        for (const name of SECRETS)
          secrets[name] = { index: handleHex(SECRET_INDEX[name]), nv: await nv(SECRET_INDEX[name]) };
        let accepted: { version: number | null; base: number | null; problem?: string };
        try {
          const state = await readAcceptedState(tpm);
          accepted = { version: state.version, base: Number(state.base) };
        } catch (error) {
          if (!(error instanceof TpmError) || !['TPM_NOT_PROVISIONED', 'TPM_FOREIGN'].includes(error.code))
            throw error;
          accepted = { version: null, base: null, problem: error.message };
        }
        return {
          tpm: tpm.address,
          ownerAuthSet: await ownerAuthSet(tpm),
          policyVersion: (await readVersion(tpm)) ?? null,
          versionIndex: handleHex(VERSION_INDEX),
          acceptedVersion: accepted.version,
          acceptedVersionIndex: handleHex(ACCEPTED_INDEX),
          acceptedVersionBase: accepted.base,
          acceptedVersionBaseIndex: handleHex(ACCEPTED_BASE_INDEX),
          ...(accepted.problem ? { acceptedVersionProblem: accepted.problem } : {}),
          secrets,
          srk: { handle: handleHex(SRK_HANDLE), name: await present(SRK_HANDLE) },
          identity: (await identityPublic(tpm))?.name.toString('hex') ?? null,
        };
      });
      ctx.result(report);
      ctx.print(
        `${report.tpm}: owner authorization ${report.ownerAuthSet ? 'set' : 'not set'}, policy version ${report.policyVersion ?? 'none'}, accepted manifest version ${report.acceptedVersion ?? 'none'}`,
      );
      if (report.acceptedVersionProblem) ctx.print(`  (${report.acceptedVersionProblem})`);
      for (const [name, v] of Object.entries(report.secrets) as [
        string,
        { index: string; nv: { size: number; writeLocked: boolean } | null },
      ][])
        ctx.print(
          `  ${name.padEnd(15)} ${v.index} ${v.nv ? `${v.nv.size} bytes${v.nv.writeLocked ? ', write-locked' : ''}` : 'absent'}`,
        );
      ctx.print(`  storage key     ${report.srk.handle} ${report.srk.name ? 'present' : 'absent'}`);
      ctx.print(`  identity key    ${report.identity ? 'TPM-resident' : 'absent'}`);
      return 0;
    },
  },
  {
    path: ['tpm', 'accepted-version'],
    summary: 'The highest system-manifest version this device accepted (anti-rollback, read-only)',
    args: '',
    arity: [0, 0],
    details:
      "Reads the accepted-version counter and its base in one salted policy session (the response authenticated by the storage key) and prints counter − base: 0 until the device's agent first raises it. Only the agent raises it, with the version authorization unlock released.",
    options: {
      ...tpmOption,
      'storage-key-name': {
        type: 'string',
        value: 'HEX',
        description: 'refuse a storage key (salt) other than this Name (provision reports it)',
      },
    },
    async run(ctx, _, options) {
      const state = await withTpm(options, (tpm) =>
        readAcceptedState(tpm, {
          ...(typeof options['storage-key-name'] === 'string'
            ? { storageKeyName: parseHexOption(options['storage-key-name'], 'storage-key-name', 34) }
            : {}),
        }),
      );
      ctx.result({
        acceptedVersion: state.version,
        counter: state.counter.toString(),
        base: state.base.toString(),
        index: handleHex(ACCEPTED_INDEX),
        baseIndex: handleHex(ACCEPTED_BASE_INDEX),
      });
      ctx.print(String(state.version));
      return 0;
    },
  },
  {
    path: ['tpm', 'pcrs'],
    summary: 'Read PCR values (read-only)',
    args: '[PCR…]',
    arity: [0, 24],
    options: {
      ...tpmOption,
      bank: { type: 'string', value: HASHES.join('|'), description: 'the PCR bank (default sha256)' },
    },
    async run(ctx, pcrs, options) {
      const bank = parseHashName(typeof options.bank === 'string' ? options.bank : 'sha256');
      const list = pcrs.length ? pcrs.map((p) => Number(p)) : Array.from({ length: 24 }, (_, i) => i);
      for (const p of list)
        if (!Number.isInteger(p) || p < 0 || p > 23) throw new UsageError(`PCR ${p} is not 0-23`);
      const values = await withTpm(options, (tpm) => tpm.pcrRead([{ hash: bank, pcrs: list }]));
      values.sort((a, b) => a.pcr - b.pcr);
      ctx.result(Object.fromEntries(values.map((v) => [`${bank}:${v.pcr}`, v.value.toString('hex')])));
      for (const v of values) ctx.print(`${bank}:${String(v.pcr).padEnd(2)} ${v.value.toString('hex')}`);
      return 0;
    },
  },
  {
    path: ['tpm', 'identity', 'create'],
    summary:
      'Create the TPM-resident device identity key (restricted ECDSA P-256, non-exportable) before provisioning',
    args: '',
    arity: [0, 0],
    details:
      'Idempotent. Certify its public key with: seal pki device new DIR --product UUID --serial SN --public-key PEM',
    options: {
      ...tpmOption,
      out: { type: 'string', value: 'PEM', description: 'write its public key (SubjectPublicKeyInfo PEM)' },
    },
    async run(ctx, _, options) {
      const id = await withTpm(options, (tpm) => createIdentity(tpm));
      if (typeof options.out === 'string') await writeFileAtomic(options.out, id.pem);
      ctx.result({
        handle: handleHex(id.handle),
        name: id.name.toString('hex'),
        created: id.created,
        publicKey: id.pem,
      });
      ctx.print(
        `${id.created ? 'Created' : 'Found'} identity key ${handleHex(id.handle)} (name ${id.name.toString('hex')})`,
      );
      if (typeof options.out !== 'string') ctx.print(id.pem.trimEnd());
      return 0;
    },
  },
  {
    path: ['tpm', 'identity', 'show'],
    summary: "Print the TPM-resident identity key's public key",
    args: '',
    arity: [0, 0],
    options: { ...tpmOption, out: { type: 'string', value: 'PEM', description: 'write it to a file' } },
    async run(ctx, _, options) {
      const id = await withTpm(options, (tpm) => identityPublic(tpm));
      if (!id)
        throw new TpmError('TPM_NOT_PROVISIONED', 'the TPM has no identity key (seal tpm identity create)');
      if (typeof options.out === 'string') await writeFileAtomic(options.out, id.pem);
      ctx.result({ handle: handleHex(id.handle), name: id.name.toString('hex'), publicKey: id.pem });
      if (typeof options.out !== 'string') ctx.print(id.pem.trimEnd());
      return 0;
    },
  },
  {
    path: ['tpm', 'identity', 'sign'],
    summary: 'Sign a challenge with the identity key (ECDSA-SHA256, DER)',
    args: '',
    arity: [0, 0],
    options: {
      ...tpmOption,
      challenge: { type: 'string', value: 'HEX', description: 'the challenge bytes' },
      'challenge-file': { type: 'string', value: 'FILE', description: 'the challenge, from a file' },
      out: {
        type: 'string',
        value: 'FILE|-',
        description: 'write the DER signature (default: print it as hex)',
      },
    },
    async run(ctx, _, options) {
      const challenge = challengeOf(options);
      const { der } = await withTpm(options, (tpm) => signChallenge(tpm, challenge));
      if (typeof options.out === 'string') await emit(options.out, der);
      ctx.result({ signature: der.toString('hex') });
      if (typeof options.out !== 'string') ctx.print(der.toString('hex'));
      return 0;
    },
  },
  {
    path: ['tpm', 'identity', 'verify'],
    summary: 'Verify a challenge signature with a device certificate or public key (offline)',
    args: '',
    arity: [0, 0],
    options: {
      key: { type: 'string', value: 'PEM', description: 'the device certificate or public key (required)' },
      challenge: { type: 'string', value: 'HEX', description: 'the challenge bytes' },
      'challenge-file': { type: 'string', value: 'FILE', description: 'the challenge, from a file' },
      signature: { type: 'string', value: 'FILE', description: 'the DER signature (required)' },
    },
    async run(ctx, _, options) {
      const key = readPublic(required(options, 'key'));
      const ok = verifyChallenge(key, challengeOf(options), readFileSync(required(options, 'signature')));
      ctx.result({ valid: ok });
      ctx.print(ok ? 'valid signature' : 'INVALID signature');
      return ok ? 0 : 1;
    },
  },
  {
    path: ['tpm', 'identity', 'quote'],
    summary: 'Quote PCRs with the identity key (attestation), with a nonce',
    args: 'OUT',
    arity: [1, 1],
    options: {
      ...tpmOption,
      nonce: { type: 'string', value: 'HEX', description: "the verifier's nonce (required)" },
      pcrs: { type: 'string', value: 'LIST', description: 'SHA-256 PCRs to quote (default 7)' },
    },
    async run(ctx, [out], options) {
      const nonce = parseHexOption(required(options, 'nonce'), 'nonce');
      const pcrs = (typeof options.pcrs === 'string' ? options.pcrs : '7').split(',').map(Number);
      for (const p of pcrs)
        if (!Number.isInteger(p) || p < 0 || p > 23) throw new UsageError(`--pcrs: ${p} is not 0-23`);
      const quote = await withTpm(options, (tpm) => quoteIdentity(tpm, nonce, [{ hash: 'sha256', pcrs }]));
      const doc = {
        type: 'seal-tpm-quote',
        pcrs: pcrs.map((p) => `sha256:${p}`),
        nonce: nonce.toString('hex'),
        pcrDigest: quote.attest.quote?.pcrDigest.toString('hex'),
        attest: quote.attestBytes.toString('hex'),
        signature: quote.der.toString('hex'),
      };
      const text = `${JSON.stringify(doc, null, 2)}\n`;
      if (out === '-') process.stdout.write(text);
      else await writeFileAtomic(out!, text);
      ctx.result(doc);
      if (out !== '-') ctx.print(`${out}: quote of ${doc.pcrs.join(', ')}, PCR digest ${doc.pcrDigest}`);
      return 0;
    },
  },
];

function challengeOf(options: Options): Buffer {
  if (typeof options.challenge === 'string') return parseHexOption(options.challenge, 'challenge');
  if (typeof options['challenge-file'] === 'string') return readFileSync(options['challenge-file']);
  throw new UsageError('--challenge or --challenge-file is required');
}
