/** seal copy, ls-tags, referrers, sync, login, logout. */
import { readFileSync } from 'node:fs';
import { UsageError } from '../../errors.ts';
import type { ImageDestination, ImageSource } from '../../oci/transport.ts';
import type { RegistryOptions } from '../../registry/index.ts';
import { openDestination, openSource, destinationTag as storeDestinationTag } from '../../store/index.ts';
import type { Command, CommandContext, OptionSpec } from '../command.ts';
import {
  registryOptions,
  SIDE_TRANSPORT_OPTIONS,
  type Side,
  TRANSPORT_OPTIONS,
} from './transport-options.ts';

type Options = Record<string, string | boolean | string[] | undefined>;

/** The transport options with the registry commands' own: chunked uploads, parallel transfers. */
const REGISTRY_OPTIONS: Record<string, OptionSpec> = {
  ...TRANSPORT_OPTIONS,
  'chunk-size': { type: 'string', value: 'BYTES', description: 'upload blobs larger than this in chunks' },
  jobs: { type: 'string', value: 'N', default: '4', description: 'parallel blob transfers' },
};

/** For copy and sync: the shared options, and each side's own. */
const TRANSFER_OPTIONS: Record<string, OptionSpec> = { ...REGISTRY_OPTIONS, ...SIDE_TRANSPORT_OPTIONS };

/** registryOptions with --chunk-size. */
function clientOptions(options: Options, side?: Side): RegistryOptions {
  const result = registryOptions(options, side);
  if (typeof options['chunk-size'] === 'string') {
    const n = Number(options['chunk-size']);
    if (!Number.isSafeInteger(n) || n <= 0)
      throw new UsageError('--chunk-size takes a positive number of bytes');
    result.chunkSize = n;
  }
  return result;
}

function jobs(options: Options): number {
  const n = Number(options.jobs ?? 4);
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError('--jobs takes a positive integer');
  return n;
}

const isRegistry = (ref: string) => ref.startsWith('docker://');

const openSourceFor = (ref: string, options: RegistryOptions): Promise<ImageSource> =>
  openSource(ref, { ...options });
const openDestinationFor = (ref: string, options: RegistryOptions): Promise<ImageDestination> =>
  openDestination(ref, { ...options });

/** The tag a destination reference names, if any. */
async function destinationTag(ref: string): Promise<string | undefined> {
  if (isRegistry(ref)) return (await import('../../registry/index.ts')).parseRegistryReference(ref).tag;
  return storeDestinationTag(ref);
}

async function transfer(
  ctx: CommandContext,
  positionals: string[],
  options: Options,
  mode: 'copy' | 'sync',
): Promise<number> {
  const [srcRef, dstRef] = positionals as [string, string];
  const { mirror, syncImage } = await import('../../registry/index.ts');
  const src = await openSourceFor(srcRef, clientOptions(options, 'src'));
  try {
    const dst = await openDestinationFor(dstRef, clientOptions(options, 'dest'));
    try {
      const progress = ctx.progress(mode === 'copy' ? 'copying' : 'syncing');
      const common = {
        tag: await destinationTag(dstRef),
        concurrency: jobs(options),
        onBytes: (n: number) => progress.tick(n),
      };
      const result =
        mode === 'copy'
          ? await mirror(src, dst, {
              ...common,
              all: options.all === true,
              referrers: options.referrers === true,
            })
          : await syncImage(src, dst, common);
      progress.done();
      ctx.result(result);
      ctx.print(
        `${result.root.digest}: ${result.manifests.copied} manifests and ${result.blobs.copied} blobs copied (${result.blobs.bytes} bytes), ${result.manifests.skipped + result.blobs.skipped} already there`,
      );
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
  return 0;
}

function registryHost(text: string): string {
  return text
    .replace(/^docker:\/\//, '')
    .replace(/^https?:\/\//, '')
    .replace(/\/.*$/, '');
}

export const registryCommands: Command[] = [
  {
    path: ['copy'],
    summary: 'Copy an image between any two transports, keeping its digests',
    args: 'SRC DEST',
    arity: [2, 2],
    details:
      'References: docker://HOST/REPO[:TAG|@DIGEST], oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE, dir:PATH, NAME[:TAG].',
    options: {
      all: { type: 'boolean', description: 'copy every image of an index, not only this platform' },
      referrers: { type: 'boolean', description: 'also copy referrers (signatures, SBOMs...), recursively' },
      ...TRANSFER_OPTIONS,
    },
    run: (ctx, positionals, options) => transfer(ctx, positionals, options, 'copy'),
  },
  {
    path: ['sync'],
    summary: 'Mirror a system (or any image) with everything it pins and everything attached, incrementally',
    args: 'SRC DEST',
    arity: [2, 2],
    options: TRANSFER_OPTIONS,
    run: (ctx, positionals, options) => transfer(ctx, positionals, options, 'sync'),
  },
  {
    path: ['ls-tags'],
    summary: 'List the tags of a registry repository',
    args: 'docker://HOST/REPO',
    arity: [1, 1],
    options: REGISTRY_OPTIONS,
    async run(ctx, [ref], options) {
      const { openRegistrySource } = await import('../../registry/index.ts');
      const src = await openRegistrySource(ref as string, clientOptions(options));
      try {
        const tags = await src.listTags();
        ctx.result({ repository: `${src.reference.registry}/${src.reference.repository}`, tags });
        for (const tag of tags) ctx.print(tag);
      } finally {
        await src.close();
      }
      return 0;
    },
  },
  {
    path: ['referrers'],
    summary: 'List the manifests attached to an image (its referrers)',
    args: 'REF',
    arity: [1, 1],
    options: {
      'artifact-type': { type: 'string', value: 'TYPE', description: 'only referrers of this artifact type' },
      ...REGISTRY_OPTIONS,
    },
    async run(ctx, [ref], options) {
      const src = await openSourceFor(ref as string, clientOptions(options));
      try {
        if (!src.referrers) throw new UsageError(`${src.name} cannot list referrers`);
        const subject = await src.resolve();
        const artifactType =
          typeof options['artifact-type'] === 'string' ? options['artifact-type'] : undefined;
        const found = await src.referrers(subject, artifactType);
        ctx.result({ subject, referrers: found });
        for (const d of found) ctx.print(`${d.digest} ${d.artifactType ?? '-'} ${d.mediaType} ${d.size}`);
      } finally {
        await src.close();
      }
      return 0;
    },
  },
  {
    path: ['login'],
    summary: 'Check credentials against a registry and store them',
    args: 'HOST',
    arity: [1, 1],
    options: {
      username: { type: 'string', short: 'u', value: 'USER', description: 'user name' },
      password: {
        type: 'string',
        short: 'p',
        value: 'PASS',
        description: 'password (prefer --password-stdin)',
      },
      'password-stdin': { type: 'boolean', description: 'read the password from standard input' },
      ...REGISTRY_OPTIONS,
    },
    async run(ctx, [host], options) {
      const { RegistryClient, saveCredentials } = await import('../../registry/index.ts');
      const username = options.username;
      if (typeof username !== 'string') throw new UsageError('login needs --username');
      let password = typeof options.password === 'string' ? options.password : undefined;
      if (options['password-stdin']) password = readFileSync(0, 'utf8').replace(/\r?\n$/, '');
      if (password === undefined) throw new UsageError('login needs --password or --password-stdin');
      const registry = registryHost(host as string);
      const client = new RegistryClient(registry, {
        ...clientOptions(options),
        credentials: { username, password },
      });
      try {
        await client.ping();
      } finally {
        client.close();
      }
      const where = await saveCredentials(
        registry,
        { username, password },
        typeof options.authfile === 'string' ? options.authfile : undefined,
      );
      ctx.result({ registry, stored: where });
      ctx.print(`Login succeeded; credentials for ${registry} stored in ${where}`);
      return 0;
    },
  },
  {
    path: ['logout'],
    summary: 'Remove stored credentials of a registry',
    args: 'HOST',
    arity: [1, 1],
    options: { authfile: TRANSPORT_OPTIONS.authfile as OptionSpec },
    async run(ctx, [host], options) {
      const { removeCredentials } = await import('../../registry/index.ts');
      const registry = registryHost(host as string);
      const removed = await removeCredentials(
        registry,
        typeof options.authfile === 'string' ? options.authfile : undefined,
      );
      ctx.result({ registry, removed });
      ctx.print(removed ? `Removed credentials for ${registry}` : `No credentials stored for ${registry}`);
      return removed ? 0 : 1;
    },
  },
];
