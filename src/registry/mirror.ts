/**
 * Copying an image graph between any two transports: manifests, indexes, their blobs, images
 * pinned inside artifacts and, optionally, everything attached as referrers. Whatever the
 * destination already has is skipped, which makes a repeated mirror incremental.
 */
import { isDigest } from '../oci/digest.ts';
import { pinnedDescriptors } from '../oci/pinned.ts';
import { hostArchitecture } from '../oci/platform.ts';
import type { ImageDestination, ImageSource } from '../oci/transport.ts';
import type { Descriptor, Index, Manifest } from '../oci/types.ts';
import { isManifestType } from '../oci/validate.ts';
import { markVerified, verifiedDigest } from '../oci/verify.ts';
import { readBounded } from '../util/read.ts';
import { isRetryable, RegistryError } from './errors.ts';

export interface MirrorEvent {
  kind: 'manifest' | 'blob';
  descriptor: Descriptor;
  action: 'copied' | 'skipped';
}

/** Finds the images a document pins by digest (a system manifest's images, say). */
export type PinnedResolver = (
  desc: Descriptor,
  doc: Manifest | Index,
  readBlob: (desc: Descriptor) => Promise<Uint8Array>,
) => Promise<Descriptor[]> | Descriptor[];

export interface MirrorOptions {
  /** What to copy (default: what the source reference names). */
  root?: Descriptor;
  /** Tag of the root at the destination. */
  tag?: string;
  /** Copy every image of an index (default: only the one for this platform, as skopeo does). */
  all?: boolean;
  /** Copy referrers (signatures, SBOMs, composefs metadata) of every manifest copied, recursively. */
  referrers?: boolean;
  /** Extra images to follow; `sync` uses `pinnedInJson` plus the manifest module's hook. */
  pinned?: PinnedResolver[];
  /** Parallel blob transfers (default 4). */
  concurrency?: number;
  /** Whole-blob transfer attempts on transient failures (default 3). */
  attempts?: number;
  onEvent?: (event: MirrorEvent) => void;
  onBytes?: (delta: number) => void;
}

export interface MirrorResult {
  root: Descriptor;
  manifests: { copied: number; skipped: number };
  blobs: { copied: number; skipped: number; bytes: number };
}

/** Runs at most `n` tasks at once. */
function limiter(n: number): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async (task) => {
    if (active >= n) await new Promise<void>((resolve) => waiting.push(resolve));
    active++;
    try {
      return await task();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };
}

const collect = (stream: AsyncIterable<Uint8Array>, limit: number, subject: string) =>
  readBounded(
    stream,
    limit,
    () => new RegistryError('TOO_LARGE', `${subject} is larger than ${limit} bytes`, { subject }),
  );

function parseDocument(bytes: Uint8Array, subject: string): Manifest | Index {
  try {
    const doc = JSON.parse(Buffer.from(bytes).toString('utf8')) as Manifest | Index;
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new Error('not an object');
    return doc;
  } catch (cause) {
    throw new RegistryError('PROTOCOL', `manifest ${subject} is not valid JSON`, { subject, cause });
  }
}

export async function mirror(
  src: ImageSource,
  dst: ImageDestination,
  options: MirrorOptions = {},
): Promise<MirrorResult> {
  const result: MirrorResult = {
    root: undefined as unknown as Descriptor,
    manifests: { copied: 0, skipped: 0 },
    blobs: { copied: 0, skipped: 0, bytes: 0 },
  };
  const limit = limiter(options.concurrency ?? 4);
  const attempts = options.attempts ?? 3;
  const visited = new Map<string, Promise<void>>();
  const blobs = new Map<string, Promise<void>>();

  const readBlob = (desc: Descriptor) => collect(src.getBlob(desc), 16 << 20, `${src.name}@${desc.digest}`);

  const copyBlob = (desc: Descriptor): Promise<void> => {
    let job = blobs.get(desc.digest);
    if (!job) {
      job = limit(async () => {
        if (await dst.hasBlob(desc)) {
          result.blobs.skipped++;
          options.onEvent?.({ kind: 'blob', descriptor: desc, action: 'skipped' });
          return;
        }
        for (let attempt = 1; ; attempt++) {
          let sent = 0;
          try {
            await dst.putBlob(
              desc,
              counted(src.getBlob(desc), (n) => {
                sent += n;
                options.onBytes?.(n);
              }),
            );
            break;
          } catch (error) {
            options.onBytes?.(-sent);
            if (attempt >= attempts || !isRetryable(error)) throw error;
          }
        }
        result.blobs.copied++;
        result.blobs.bytes += desc.size;
        options.onEvent?.({ kind: 'blob', descriptor: desc, action: 'copied' });
      });
      blobs.set(desc.digest, job);
    }
    return job;
  };

  const copyManifest = (desc: Descriptor, tag?: string): Promise<void> => {
    let job = visited.get(desc.digest);
    if (!job) {
      job = (async () => {
        const present = !tag && (await dst.hasBlob(desc));
        if (present) {
          result.manifests.skipped++;
          options.onEvent?.({ kind: 'manifest', descriptor: desc, action: 'skipped' });
        } else {
          const bytes = await src.getManifest(desc);
          const doc = parseDocument(bytes, `${src.name}@${desc.digest}`);
          // Everything is checked before any transfer starts, so a bad entry leaves nothing running.
          const subject = `${src.name}@${desc.digest}`;
          const found: Descriptor[] = [];
          if ('manifests' in doc) found.push(...asList(doc.manifests, desc));
          if ('config' in doc && doc.config !== undefined) found.push(doc.config);
          if ('layers' in doc) found.push(...asList(doc.layers, desc));
          const pinned: Descriptor[] = [];
          for (const resolver of options.pinned ?? []) pinned.push(...(await resolver(desc, doc, readBlob)));
          for (const d of [...found, ...pinned]) checkDescriptor(d, subject);
          // Largest first: the biggest transfer is the one that decides when the copy ends.
          const bySize = [...found].sort((a, b) => b.size - a.size);
          const children = [
            ...bySize.map((d) => (isManifestType(d.mediaType) ? copyManifest(d) : copyBlob(d))),
            ...pinned.map((d) => copyManifest(d)),
          ];
          await settleAll(children);
          await dst.putManifest(desc, bytes, tag);
          result.manifests.copied++;
          options.onEvent?.({ kind: 'manifest', descriptor: desc, action: 'copied' });
        }
        if (options.referrers && src.referrers) {
          const attached = await src.referrers(desc);
          await settleAll(
            attached.map((r) => copyManifest({ mediaType: r.mediaType, digest: r.digest, size: r.size })),
          );
        }
      })();
      visited.set(desc.digest, job);
    }
    return job;
  };

  let root = options.root ?? (await src.resolve());
  if (
    !options.all &&
    (root.mediaType === 'application/vnd.oci.image.index.v1+json' ||
      root.mediaType === 'application/vnd.docker.distribution.manifest.list.v2+json')
  ) {
    const index = parseDocument(await src.getManifest(root), src.name) as Index;
    const wanted = hostArchitecture();
    const match = index.manifests.find(
      (m) => m.platform?.os === 'linux' && m.platform.architecture === wanted,
    );
    if (!match) {
      throw new RegistryError(
        'NOT_FOUND',
        `${src.name} has no image for linux/${wanted} (use --all to copy the whole index)`,
        { subject: src.name },
      );
    }
    root = { mediaType: match.mediaType, digest: match.digest, size: match.size };
  }
  result.root = { mediaType: root.mediaType, digest: root.digest, size: root.size };
  await copyManifest(result.root, options.tag);
  await dst.commit();
  return result;
}

function asList(value: unknown, desc: Descriptor): Descriptor[] {
  if (!Array.isArray(value))
    throw new RegistryError('PROTOCOL', `manifest ${desc.digest} has a malformed descriptor list`, {
      subject: desc.digest,
    });
  return value;
}

/** A descriptor read from a manifest must at least name a type, a digest and a size. */
function checkDescriptor(d: Descriptor, subject: string): void {
  if (
    typeof d !== 'object' ||
    d === null ||
    typeof d.mediaType !== 'string' ||
    !isDigest(d.digest) ||
    !Number.isSafeInteger(d.size) ||
    d.size < 0
  ) {
    throw new RegistryError(
      'PROTOCOL',
      `manifest ${subject} holds a malformed descriptor ${JSON.stringify(d)?.slice(0, 200)}`,
      { subject },
    );
  }
}

/** Waits for every task, then throws the first failure (so no transfer is left running). */
async function settleAll(tasks: Promise<void>[]): Promise<void> {
  const outcomes = await Promise.allSettled(tasks);
  const failed = outcomes.find((o) => o.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

/** Passes `stream` through, counting; a stream that verifies itself stays marked as such. */
function counted(stream: AsyncIterable<Uint8Array>, tick: (n: number) => void): AsyncIterable<Uint8Array> {
  const out = (async function* () {
    for await (const chunk of stream) {
      tick(chunk.length);
      yield chunk;
    }
  })();
  const digest = verifiedDigest(stream);
  return digest ? markVerified(out, digest) : out;
}

/**
 * The generic resolver of `sync`: small JSON blobs of an artifact (its config and layers) are
 * read and every object in them shaped like a manifest descriptor is followed.
 */
export const pinnedInJson: PinnedResolver = (_desc, doc, readBlob) => pinnedDescriptors(doc, readBlob);
