/**
 * The options of every command that may reach a registry, spelt as skopeo spells them:
 * --authfile, --creds, --cert-dir, --tls-verify, with Seal's transfer limits --timeout and
 * --low-speed, and for commands with a source and a destination, --src-* and --dest-*
 * variants that take precedence over the shared option on their side. Specs and parsing all
 * come from the one table below.
 */
import { UsageError } from '../../errors.ts';
import type { RegistryOptions } from '../../registry/index.ts';
import type { OpenOptions } from '../../store/index.ts';
import type { OptionSpec } from '../command.ts';

type Options = Record<string, string | boolean | string[] | undefined>;

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1 << 20,
  mib: 1 << 20,
  g: 1 << 30,
  gib: 1 << 30,
};

/** `90`, `90s`, `1.5m`, `500ms`, `2h` (seconds without a unit), in milliseconds; positive. */
export function parseDuration(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  const ms = m ? Number(m[1]) * (DURATION_UNITS[m[2] ?? 's'] as number) : Number.NaN;
  if (!(ms > 0) || !Number.isFinite(ms))
    throw new UsageError(`${flag} takes a duration such as 90s, 10m or 500ms`);
  return ms;
}

/** `16384`, `16k`, `16KiB`, `1MiB` (binary multiples), in bytes; positive. */
function parseSize(text: string, flag: string): number {
  const m = /^(\d+)\s*([a-z]*)$/i.exec(text.trim());
  const unit = m ? SIZE_UNITS[(m[2] as string).toLowerCase()] : undefined;
  const bytes = m && unit !== undefined ? Number(m[1]) * unit : Number.NaN;
  if (!(bytes > 0) || !Number.isSafeInteger(bytes))
    throw new UsageError(`${flag} takes a size such as 16KiB`);
  return bytes;
}

/** A side of a transfer, named as the flags name it. */
export type Side = 'src' | 'dest';

const TABLE: Record<
  string,
  { spec: OptionSpec; apply(into: RegistryOptions, value: string, flag: string): void }
> = {
  authfile: {
    spec: {
      type: 'string',
      value: 'PATH',
      description: 'credentials file (default: REGISTRY_AUTH_FILE or Docker config.json)',
    },
    apply: (into, value) => {
      into.authFile = value;
    },
  },
  creds: {
    spec: {
      type: 'string',
      value: 'USER:PASS',
      description: 'registry credentials, overriding the credentials file',
    },
    apply: (into, value, flag) => {
      const colon = value.indexOf(':');
      if (colon < 0) throw new UsageError(`${flag} takes USER:PASSWORD`);
      into.credentials = { username: value.slice(0, colon), password: value.slice(colon + 1) };
    },
  },
  'cert-dir': {
    spec: {
      type: 'string',
      value: 'DIR',
      description: 'extra CA certificates (*.crt) and a client certificate (*.cert, *.key)',
    },
    apply: (into, value) => {
      into.certDir = value;
    },
  },
  timeout: {
    spec: {
      type: 'string',
      value: 'DURATION',
      description:
        'give up on a registry request after DURATION (90s, 10m), retries included (default: never)',
    },
    apply: (into, value, flag) => {
      into.timeoutMs = value.trim() === '0' ? undefined : parseDuration(value, flag);
    },
  },
  'low-speed': {
    spec: {
      type: 'string',
      value: 'BYTES/TIME',
      description: 'fail a registry transfer moving under BYTES per TIME of waiting (default 16KiB/60s; off)',
    },
    apply: (into, value, flag) => {
      if (value.trim() === 'off' || value.trim() === '0') {
        into.lowSpeed = false;
        return;
      }
      const slash = value.indexOf('/');
      if (slash < 0) throw new UsageError(`${flag} takes BYTES/TIME, such as 16KiB/60s, or off`);
      into.lowSpeed = {
        bytes: parseSize(value.slice(0, slash), flag),
        ms: parseDuration(value.slice(slash + 1), flag),
      };
    },
  },
  'tls-verify': {
    spec: {
      type: 'string',
      choices: ['true', 'false'],
      implicit: 'true',
      description: 'verify registry TLS certificates (default true)',
    },
    apply: (into, value) => {
      into.tlsVerify = value !== 'false';
    },
  },
};

const SIDE_NAMES: Record<Side, string> = { src: 'source', dest: 'destination' };

/** --authfile, --creds, --cert-dir, --timeout, --low-speed, --tls-verify. */
export const TRANSPORT_OPTIONS: Record<string, OptionSpec> = Object.fromEntries(
  Object.entries(TABLE).map(([name, { spec }]) => [name, spec]),
);

/** --src-authfile ... --dest-tls-verify: each as the shared option, for its side only. */
export const SIDE_TRANSPORT_OPTIONS: Record<string, OptionSpec> = Object.fromEntries(
  (Object.keys(SIDE_NAMES) as Side[]).flatMap((side) =>
    Object.entries(TABLE).map(([name, { spec }]) => [
      `${side}-${name}`,
      {
        ...spec,
        description: `--${name} for the ${SIDE_NAMES[side]} only (takes precedence over --${name})`,
      },
    ]),
  ),
);

/**
 * The registry options the transport flags give, as `openSource`/`openDestination` take them;
 * with `side`, its --src-* or --dest-* flags take precedence over the shared ones.
 */
export function registryOptions(options: Options, side?: Side): RegistryOptions & OpenOptions {
  const result: RegistryOptions & OpenOptions = {};
  for (const [name, { apply }] of Object.entries(TABLE)) {
    const own = side === undefined ? undefined : `${side}-${name}`;
    const flag = own !== undefined && options[own] !== undefined ? own : name;
    const value = options[flag];
    if (typeof value === 'string') apply(result, value, `--${flag}`);
  }
  return result;
}
