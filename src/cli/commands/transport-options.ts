/**
 * The options of every command that may reach a registry, spelt as skopeo spells them:
 * --authfile, --creds, --cert-dir, --tls-verify, and for commands with a source and a
 * destination, --src-* and --dest-* variants that take precedence over the shared option on
 * their side. Specs and parsing all come from the one table below.
 */
import { UsageError } from '../../errors.ts';
import type { RegistryOptions } from '../../registry/index.ts';
import type { OpenOptions } from '../../store/index.ts';
import type { OptionSpec } from '../command.ts';

type Options = Record<string, string | boolean | string[] | undefined>;

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

/** --authfile, --creds, --cert-dir, --tls-verify. */
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
