/**
 * The `seal.*` kernel command-line parameters. They are built into the signed UKI, so they are
 * measured (PCR 11) and cannot be changed without breaking the signature:
 *
 *   seal.tag=TAG            the system manifest to boot, by its tag in the store (default: the
 *                           store's `current` tag)
 *   seal.debug=1            stack traces with every failure, and the tools' output
 *   seal.on-failure=ACTION  what a refused boot ends in: poweroff (default), halt or reboot
 *   seal.net=ADDR/PREFIX[,gw=GATEWAY][,dev=NAME]
 *                           a static IPv4 address for the network (default interface eth0), for
 *                           following a registry (qemu's user network: 10.0.2.15/24,gw=10.0.2.2)
 *   seal.follow=REF         follow this image reference (docker://HOST:PORT/REPO:TAG): every
 *                           interval, a new signed system there is fetched, verified and applied
 *   seal.follow-interval=S  seconds between checks (default 300; with seal.media alone, 10)
 *   seal.media              look for update media at every check: a FAT filesystem (vfat only:
 *                           the smallest kernel parser a stick anyone can insert should meet) on
 *                           a block device other than the device's own disk, whole disk or a
 *                           partition, with an OCI layout in seal-update/ at its root; the system
 *                           tagged `system` there is verified and applied like a followed one
 *   seal.push=PORT          accept systems pushed with `seal push` on this TCP port (needs
 *                           seal.net): verified and applied like a followed one
 *   seal.boot=REF           network boot: no disk; the system at REF (docker://HOST:PORT/REPO:TAG)
 *                           is fetched into memory, verified as from disk, and run
 *   seal.registry-insecure=1  speak plain HTTP to the registry of seal.boot, seal.follow and
 *                           seal.install (a lab)
 *   seal.install-disk=NAME  the disk an installer writes (vda, nvme0n1), whatever it holds
 *   seal.management         the management image (seal uki build --management): revoke older
 *                           UKIs and install the system at seal.install, then power off
 *   seal.install=REF        the system the management image installs (docker://HOST:PORT/REPO:TAG);
 *                           without seal.management, an installer: the system and its UKI written
 *                           onto a blank disk (seal.install-disk=NAME chooses one), then power off
 *   seal.trial-boots=N      boots a new host may take before the device returns to the good
 *                           system by itself (default 3)
 *   seal.attest=URL         attest the boot to the verifier at URL (http:// or https://, as
 *                           `seal attest serve` listens) before PCR 7 is locked, and fetch the
 *                           secrets named by seal.attest-secret; needs seal.net. A refusal ends
 *                           the boot. In a VM, `seal machine create --attest` forwards one to
 *                           10.0.2.101:PORT
 *   seal.attest-secret=NAME[,NAME…]
 *                           the secrets to fetch (letters, digits, `.`, `_`, `-`; repeatable):
 *                           each is written to /run/seal/secrets/NAME (tmpfs, root, 0400), which
 *                           every service sees read-only at /run/secrets/NAME
 *   seal.test=NAME          a test-only stop after the named step (for the VM tests of the steps)
 *   composefs.digest=HEX    the sealed-UKI mode: the host target must be a composefs image with
 *                           this composefs digest (the fs-verity digest of its composefs image,
 *                           as the kernel measures it); any other host root is refused. Measured
 *                           in PCR 11 with the rest of the command line
 */
import { verifierUrl } from '../attest/client.ts';
import { NAME as SECRET_NAME } from '../attest/secret.ts';
import { AgentError } from './errors.ts';

export interface NetworkParameters {
  device: string;
  address: string;
  netmask: string;
  gateway?: string;
}

export interface AgentParameters {
  tag: string;
  debug: boolean;
  onFailure: 'poweroff' | 'halt' | 'reboot';
  net?: NetworkParameters;
  follow?: { source: string; intervalMs: number };
  /** Look for update media (`seal.media`) every `intervalMs`. */
  media?: { intervalMs: number };
  /** Accept pushed systems (`seal.push`) on this TCP port. */
  push?: number;
  /** Network boot from this reference. */
  boot?: string;
  /** The management image: revoke and install `install`. */
  management: boolean;
  install?: string;
  /** The disk an installer writes. */
  installDisk?: string;
  /** Plain HTTP to the registries of `boot` and `follow`. */
  registryInsecure: boolean;
  trialBoots: number;
  /** Attestation at boot: the verifier and the secrets it releases to this device. */
  attest?: { url: string; secrets: string[] };
  test?: string;
  /** The composefs digest the host root must have (`composefs.digest`: the sealed-UKI mode). */
  composefsDigest?: string;
}

const KNOWN = new Set([
  'seal.tag',
  'seal.debug',
  'seal.on-failure',
  'seal.net',
  'seal.follow',
  'seal.follow-interval',
  'seal.media',
  'seal.push',
  'seal.boot',
  'seal.registry-insecure',
  'seal.management',
  'seal.install',
  'seal.install-disk',
  'seal.trial-boots',
  'seal.test',
  'seal.attest',
  'seal.attest-secret',
]);

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

/** `ADDR/PREFIX[,gw=GATEWAY][,dev=NAME]`. */
function parseNet(value: string): NetworkParameters {
  const bad = () =>
    new AgentError('AGENT_CMDLINE', `seal.net=${value} is not ADDR/PREFIX[,gw=GATEWAY][,dev=NAME]`, {
      subject: 'seal.net',
    });
  const [cidr, ...options] = value.split(',');
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(cidr ?? '');
  if (!m || !IPV4.test(m[1]!) || Number(m[2]) > 32) throw bad();
  const prefix = Number(m[2]);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const net: NetworkParameters = {
    device: 'eth0',
    address: m[1]!,
    netmask: [24, 16, 8, 0].map((shift) => (mask >>> shift) & 0xff).join('.'),
  };
  for (const option of options) {
    const [k, v = ''] = option.split('=');
    if (k === 'gw' && IPV4.test(v)) net.gateway = v;
    else if (k === 'dev' && /^[a-z][a-z0-9]{0,14}$/.test(v)) net.device = v;
    else throw bad();
  }
  return net;
}

/** Parses /proc/cmdline (space-separated words; "double quotes" group a value with spaces, as the kernel does). */
export function parseCommandLine(text: string): AgentParameters {
  const params: AgentParameters = {
    tag: 'current',
    debug: false,
    onFailure: 'poweroff',
    trialBoots: 3,
    registryInsecure: false,
    management: false,
  };
  let interval: number | undefined;
  let media = false;
  for (const word of text.trim().match(/(?:[^\s"]+|"[^"]*")+/g) ?? []) {
    const eq = word.indexOf('=');
    const key = eq < 0 ? word : word.slice(0, eq);
    const value = eq < 0 ? '1' : word.slice(eq + 1).replace(/"/g, '');
    if (key === 'composefs.digest') {
      if (!/^[0-9a-f]{64}$/.test(value))
        throw new AgentError('AGENT_CMDLINE', `composefs.digest is 64 lowercase hex digits, not ${value}`, {
          subject: key,
        });
      params.composefsDigest = value;
      continue;
    }
    if (!key.startsWith('seal.')) continue;
    if (!KNOWN.has(key))
      throw new AgentError('AGENT_CMDLINE', `unknown kernel parameter ${key}`, { subject: key });
    switch (key) {
      case 'seal.tag':
        if (!/^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/.test(value))
          throw new AgentError('AGENT_CMDLINE', `seal.tag=${value} is not a tag`, { subject: key });
        params.tag = value;
        break;
      case 'seal.debug':
        params.debug = value !== '0';
        break;
      case 'seal.on-failure':
        if (value !== 'poweroff' && value !== 'halt' && value !== 'reboot')
          throw new AgentError('AGENT_CMDLINE', `seal.on-failure is poweroff, halt or reboot, not ${value}`, {
            subject: key,
          });
        params.onFailure = value;
        break;
      case 'seal.net':
        params.net = parseNet(value);
        break;
      case 'seal.follow':
      case 'seal.boot':
      case 'seal.install':
        if (!/^(docker|oci):[!-~]+$/.test(value))
          throw new AgentError('AGENT_CMDLINE', `${key}=${value} is not an image reference`, {
            subject: key,
          });
        if (key === 'seal.boot') params.boot = value;
        else if (key === 'seal.install') params.install = value;
        else params.follow = { intervalMs: interval ?? 300_000, source: value };
        break;
      case 'seal.follow-interval': {
        const seconds = Number(value);
        if (!Number.isInteger(seconds) || seconds < 1 || seconds > 86_400)
          throw new AgentError('AGENT_CMDLINE', `seal.follow-interval is 1 to 86400 seconds, not ${value}`, {
            subject: key,
          });
        interval = seconds * 1000;
        if (params.follow) params.follow.intervalMs = interval;
        break;
      }
      case 'seal.install-disk':
        if (!/^[a-z][a-z0-9]{0,31}$/.test(value))
          throw new AgentError('AGENT_CMDLINE', `seal.install-disk=${value} is not a disk name such as vda`, {
            subject: key,
          });
        params.installDisk = value;
        break;
      case 'seal.media':
        media = value !== '0';
        break;
      case 'seal.push': {
        const port = /^\d{1,5}$/.test(value) ? Number(value) : 0;
        if (port < 1 || port > 65535)
          throw new AgentError('AGENT_CMDLINE', `seal.push is a TCP port, not ${value}`, { subject: key });
        params.push = port;
        break;
      }
      case 'seal.management':
        params.management = value !== '0';
        break;
      case 'seal.registry-insecure':
        params.registryInsecure = value !== '0';
        break;
      case 'seal.trial-boots': {
        const n = Number(value);
        if (!Number.isInteger(n) || n < 1 || n > 10)
          throw new AgentError('AGENT_CMDLINE', `seal.trial-boots is 1 to 10, not ${value}`, {
            subject: key,
          });
        params.trialBoots = n;
        break;
      }
      case 'seal.test':
        params.test = value;
        break;
      case 'seal.attest': {
        let url: URL;
        try {
          url = verifierUrl(value);
        } catch (error) {
          throw new AgentError(
            'AGENT_CMDLINE',
            `seal.attest=${value} is not a verifier URL: ${(error as Error).message}`,
            { subject: key, cause: error },
          );
        }
        params.attest = { secrets: [], ...params.attest, url: url.href };
        break;
      }
      case 'seal.attest-secret': {
        const secrets = params.attest?.secrets ?? [];
        for (const name of value.split(',')) {
          if (!SECRET_NAME.test(name) || name === '.' || name === '..')
            throw new AgentError(
              'AGENT_CMDLINE',
              `seal.attest-secret=${value}: ${JSON.stringify(name)} is not a secret name (letters, digits, ".", "_", "-")`,
              { subject: key },
            );
          if (secrets.includes(name))
            throw new AgentError('AGENT_CMDLINE', `seal.attest-secret names ${name} twice`, {
              subject: key,
            });
          secrets.push(name);
        }
        params.attest = { url: '', ...params.attest, secrets };
        break;
      }
    }
  }
  if (params.attest) {
    if (!params.attest.url)
      throw new AgentError('AGENT_CMDLINE', 'seal.attest-secret needs seal.attest (the verifier)', {
        subject: 'seal.attest-secret',
      });
    if (params.attest.secrets.length === 0)
      throw new AgentError('AGENT_CMDLINE', 'seal.attest needs seal.attest-secret (the secrets to fetch)', {
        subject: 'seal.attest',
      });
    if (!params.net)
      throw new AgentError(
        'AGENT_CMDLINE',
        'seal.attest needs seal.net (the network to reach the verifier)',
        {
          subject: 'seal.attest',
        },
      );
    if (params.management || params.install !== undefined)
      throw new AgentError(
        'AGENT_CMDLINE',
        'seal.attest is for a device booting its system, not the management image or an installer',
        { subject: 'seal.attest' },
      );
  }
  if (params.management && params.install === undefined)
    throw new AgentError('AGENT_CMDLINE', 'seal.management needs seal.install (the system to install)', {
      subject: 'seal.management',
    });
  if (params.installDisk !== undefined && (params.install === undefined || params.management))
    throw new AgentError(
      'AGENT_CMDLINE',
      'seal.install-disk is for an installer (seal.install without seal.management)',
      {
        subject: 'seal.install-disk',
      },
    );
  if (params.install !== undefined && !params.management && (params.boot || params.follow))
    throw new AgentError(
      'AGENT_CMDLINE',
      'seal.install excludes seal.boot and seal.follow: an installer installs and powers off',
      {
        subject: 'seal.install',
      },
    );
  if (params.management && (params.boot || params.follow))
    throw new AgentError(
      'AGENT_CMDLINE',
      'seal.management excludes seal.boot and seal.follow: the management image neither network-boots nor follows',
      {
        subject: 'seal.management',
      },
    );
  if (interval !== undefined && !params.follow && !media)
    throw new AgentError('AGENT_CMDLINE', 'seal.follow-interval needs seal.follow or seal.media', {
      subject: 'seal.follow-interval',
    });
  if (params.push !== undefined) {
    if (!params.net)
      throw new AgentError('AGENT_CMDLINE', 'seal.push needs seal.net (the network pushes come from)', {
        subject: 'seal.push',
      });
    if (params.install !== undefined || params.management)
      throw new AgentError(
        'AGENT_CMDLINE',
        'seal.push is for a running device: an installer and the management image install and power off',
        { subject: 'seal.push' },
      );
  }
  if (media) {
    if (params.install !== undefined || params.management)
      throw new AgentError(
        'AGENT_CMDLINE',
        'seal.media is for a running device: an installer and the management image install and power off',
        { subject: 'seal.media' },
      );
    params.media = { intervalMs: interval ?? params.follow?.intervalMs ?? 10_000 };
  }
  return params;
}
