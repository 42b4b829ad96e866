/**
 * The OCI distribution-spec client for one registry host: manifests, blobs (resumed downloads,
 * monolithic and chunked uploads, cross-repository mounts), tags and referrers, with retries on
 * connection failures, 429, 5xx and stalls, authentication on demand, and transfer limits.
 *
 * Credentials (Basic, or a Bearer token got with them) go only to the registry's own origin —
 * scheme, host and port — whatever URL a server hands over: an upload `Location` or a redirect
 * to another origin is followed without them, a 401 from another origin is a failure whose
 * challenge is not followed, and `Link` pagination to another origin is refused.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { digestOf, isDigest, parseDigest } from '../oci/digest.ts';
import { MediaType } from '../oci/mediatypes.ts';
import type { Descriptor, Index } from '../oci/types.ts';
import { verifiedStream } from '../oci/verify.ts';
import { Authenticator } from './auth.ts';
import { type Credentials, loadCredentials } from './credentials.ts';
import {
  isRetryable,
  isTimeout,
  printable,
  quoted,
  RegistryError,
  type RegistryErrorCode,
} from './errors.ts';
import {
  defaultCertDir,
  type HttpResponse,
  HttpTransport,
  header,
  readBody,
  type TlsOptions,
} from './http.ts';
import { deadlineError, type LowSpeed, now } from './limits.ts';
import { apiHost, isLoopback } from './reference.ts';

export interface RegistryOptions extends TlsOptions {
  /** Credentials file (default: `REGISTRY_AUTH_FILE`, then Docker's `config.json`). */
  authFile?: string;
  /** Explicit credentials, overriding the file. */
  credentials?: Credentials;
  /** Speak plain HTTP. Loopback hosts get it without asking when they do not answer in TLS. */
  plainHttp?: boolean;
  /** Attempts per request on connection errors, 429 and 5xx (default 5). */
  retries?: number;
  /** First backoff delay, doubled on each retry (default 250 ms). */
  retryDelayMs?: number;
  /** Upload blobs larger than this in chunks of this size (default: monolithic uploads). */
  chunkSize?: number;
  /** Try cross-repository mounts from repositories known to hold a blob (default true). */
  mount?: boolean;
  /**
   * Gives up on a request that is not done after this long, its body and its retries included
   * (a blob download with all its resumes counts as one); default: no deadline.
   */
  timeoutMs?: number | undefined;
  /**
   * Fails an exchange when fewer than `bytes` move within `ms` of waiting on the server
   * (default DEFAULT_LOW_SPEED, 16 KiB per minute); false: no minimum.
   */
  lowSpeed?: LowSpeed | false | undefined;
}

export const MANIFEST_ACCEPT = [
  MediaType.ImageManifest,
  MediaType.ImageIndex,
  MediaType.DockerManifest,
  MediaType.DockerManifestList,
].join(', ');

const MANIFEST_LIMIT = 4 << 20;
const MAX_RETRY_AFTER_MS = 60_000;

interface CallOptions {
  scopes: string[];
  headers?: Record<string, string>;
  body?: Uint8Array | AsyncIterable<Uint8Array>;
  /** Statuses that are answers, not failures. */
  ok: number[];
  /** `now()` by which the call must be done (default: the `timeoutMs` from now). */
  deadline?: number | undefined;
}

export interface ManifestResponse {
  descriptor: Descriptor;
  bytes: Uint8Array;
}

const pull = (repo: string) => `repository:${repo}:pull`;
const push = (repo: string) => `repository:${repo}:pull,push`;

/** The tag under which a registry without the referrers API keeps the referrers of `digest`. */
export function referrersTag(digest: string): string {
  const { algorithm, hex } = parseDigest(digest);
  return `${algorithm}-${hex}`.slice(0, 128);
}

function mediaTypeOf(contentType: string | undefined, bytes: Uint8Array): string {
  const fromHeader = contentType?.split(';')[0]?.trim();
  if (fromHeader && fromHeader !== 'application/json' && fromHeader !== 'application/octet-stream')
    return fromHeader;
  try {
    const doc = JSON.parse(Buffer.from(bytes).toString('utf8')) as {
      mediaType?: string;
      manifests?: unknown;
    };
    if (typeof doc.mediaType === 'string') return doc.mediaType;
    return Array.isArray(doc.manifests) ? MediaType.ImageIndex : MediaType.ImageManifest;
  } catch {
    return fromHeader ?? MediaType.ImageManifest;
  }
}

export class RegistryClient {
  readonly registry: string;
  readonly options: RegistryOptions;
  #base: URL;
  /** Settles once it is known whether the registry speaks TLS (asked of loopback hosts only). */
  readonly #scheme: Promise<void>;
  readonly #transport: HttpTransport;
  readonly #auth: Authenticator;
  readonly #subjectLocks = new Map<string, Promise<void>>();

  constructor(registry: string, options: RegistryOptions = {}) {
    this.registry = registry;
    this.options = options;
    this.#base = new URL(`${options.plainHttp ? 'http' : 'https'}://${apiHost(registry)}`);
    // Without --cert-dir, the per-registry directory of containers tools (certs.d/HOST) applies.
    this.#transport = new HttpTransport({
      ...options,
      certDir: options.certDir ?? defaultCertDir(apiHost(registry)),
    });
    // A loopback registry is asked at once, so the answer is there by the first request.
    if (!options.plainHttp && isLoopback(registry)) {
      const plain = new URL(`http://${this.#base.host}`);
      this.#scheme = this.#transport.speaksPlainHttp(plain).then((yes) => {
        if (yes) this.#base = plain;
      });
    } else {
      this.#scheme = Promise.resolve();
    }
    let cached: Promise<Credentials | undefined> | undefined;
    this.#auth = new Authenticator(this.#transport, () => {
      cached ??= options.credentials
        ? Promise.resolve(options.credentials)
        : loadCredentials(registry, options.authFile);
      return cached;
    });
  }

  close(): void {
    this.#transport.close();
  }

  #url(path: string): URL {
    return new URL(path, this.#base);
  }

  /** When an operation starting now must be done by, if there is a deadline. */
  #deadline(): number | undefined {
    const ms = this.options.timeoutMs;
    return ms !== undefined && ms > 0 ? now() + ms : undefined;
  }

  /** Whether a (settled) URL is on the registry's own origin: scheme, host and port. */
  #own(url: URL): boolean {
    return url.origin === this.#base.origin;
  }

  /**
   * A registry on loopback usually speaks plain HTTP, but may have TLS: only a plain HTTP
   * answer moves it to http (otherwise TLS, and a certificate problem stays an error). URLs made
   * before that was known are moved along.
   */
  async #settled(url: URL): Promise<URL> {
    await this.#scheme;
    if (this.#base.protocol === 'http:' && url.protocol === 'https:' && url.host === this.#base.host) {
      const moved = new URL(url);
      moved.protocol = 'http:';
      return moved;
    }
    return url;
  }

  /**
   * One request with authentication, retries and backoff; statuses outside `ok` become typed
   * errors. `Authorization` is attached only when `target` is on the registry's own origin, and
   * a 401 is taken as a challenge only when the registry's own origin answered it.
   */
  async #call(method: string, target: URL, options: CallOptions): Promise<HttpResponse> {
    const url = await this.#settled(target);
    const own = this.#own(url);
    const deadline = options.deadline ?? this.#deadline();
    const attempts = Math.max(1, this.options.retries ?? 5);
    const replayable = options.body === undefined || options.body instanceof Uint8Array;
    let reauthenticated = false;
    let stalled = false;
    for (let attempt = 1; ; attempt++) {
      const headers: Record<string, string> = { 'user-agent': 'seal', ...options.headers };
      if (own) {
        const authorization = await this.#auth.header(options.scopes, deadline);
        if (authorization) headers.authorization = authorization;
      }
      let res: HttpResponse;
      try {
        res = await this.#transport.request({ method, url, headers, body: options.body, deadline });
      } catch (error) {
        // TLS and protocol failures will not go away by asking again; a stall gets one fresh try.
        const again = isRetryable(error) || (isTimeout(error) && !stalled && !expired(deadline));
        if (!replayable || attempt >= attempts || !again) throw error;
        if (isTimeout(error)) stalled = true;
        await this.#backoff(attempt, undefined, deadline, `${method} ${url}`);
        continue;
      }
      if (options.ok.includes(res.status)) return res;
      if (res.status === 401 && (!own || !this.#own(res.url))) {
        throw await this.#failure(
          res,
          method,
          url,
          `answered by ${res.url.origin}, not by the registry: its challenge is not followed`,
        );
      }
      if (res.status === 401 && !reauthenticated && replayable) {
        reauthenticated = true;
        res.body.resume();
        if (this.#auth.onUnauthorized(header(res, 'www-authenticate'), options.scopes, this.#base)) {
          attempt--;
          continue;
        }
        throw await this.#failure(res, method, url);
      }
      const transient = res.status === 429 || res.status >= 500;
      if (transient && replayable && attempt < attempts) {
        res.body.resume();
        await this.#backoff(attempt, header(res, 'retry-after'), deadline, `${method} ${url}`);
        continue;
      }
      throw await this.#failure(res, method, url);
    }
  }

  /** Waits before a retry; fails at once with TIMEOUT if the wait would outlast the deadline. */
  async #backoff(
    attempt: number,
    retryAfter?: string,
    deadline?: number,
    what = this.registry,
  ): Promise<void> {
    let delay = (this.options.retryDelayMs ?? 250) * 2 ** (attempt - 1);
    if (retryAfter) {
      const seconds = Number(retryAfter);
      const at = Date.parse(retryAfter);
      if (Number.isFinite(seconds)) delay = seconds * 1000;
      else if (Number.isFinite(at)) delay = at - Date.now();
    }
    delay = Math.min(MAX_RETRY_AFTER_MS, Math.max(0, delay));
    if (deadline !== undefined && now() + delay >= deadline) throw deadlineError(what);
    await sleep(delay);
  }

  async #failure(res: HttpResponse, method: string, url: URL, note?: string): Promise<RegistryError> {
    let detail = '';
    try {
      const body = await readBody(res, 64 << 10);
      const parsed = JSON.parse(body.toString('utf8')) as { errors?: { code?: string; message?: string }[] };
      detail = (parsed.errors ?? [])
        .map((e) => `${e.code ?? ''}${e.message ? `: ${e.message}` : ''}`)
        .join('; ');
    } catch {
      res.body.destroy();
    }
    const code: RegistryErrorCode =
      res.status === 401
        ? 'UNAUTHORIZED'
        : res.status === 403
          ? 'DENIED'
          : res.status === 404
            ? 'NOT_FOUND'
            : res.status === 429
              ? 'RATE_LIMITED'
              : res.status >= 500
                ? 'SERVER'
                : 'PROTOCOL';
    return new RegistryError(
      code,
      `${method} ${url.pathname}${url.search} on ${this.registry}: ${res.status}${note ? ` ${note}` : ''}${detail ? ` (${printable(detail)})` : ''}`,
      {
        subject: `${this.registry}${url.pathname}`,
        status: res.status,
      },
    );
  }

  /** Checks that the registry speaks the distribution API and that we may talk to it. */
  async ping(): Promise<void> {
    const res = await this.#call('GET', this.#url('/v2/'), { scopes: [], ok: [200] });
    res.body.resume();
  }

  async getManifest(repo: string, reference: string): Promise<ManifestResponse> {
    const url = this.#url(`/v2/${repo}/manifests/${reference}`);
    const res = await this.#call('GET', url, {
      scopes: [pull(repo)],
      headers: { accept: MANIFEST_ACCEPT },
      ok: [200],
    });
    const bytes = await readBody(res, MANIFEST_LIMIT);
    const byDigest = reference.includes(':');
    const algorithm = byDigest ? parseDigest(reference).algorithm : 'sha256';
    const digest = digestOf(bytes, algorithm);
    const claimed = header(res, 'docker-content-digest');
    const expected = byDigest ? reference : claimed?.startsWith(`${algorithm}:`) ? claimed : undefined;
    if (expected && digest !== expected) {
      throw new RegistryError(
        'DIGEST_MISMATCH',
        `manifest ${repo}:${reference} from ${this.registry} has digest ${digest}, expected ${expected}`,
        {
          subject: `${this.registry}/${repo}@${expected}`,
        },
      );
    }
    return {
      bytes,
      descriptor: { mediaType: mediaTypeOf(header(res, 'content-type'), bytes), digest, size: bytes.length },
    };
  }

  /** The descriptor of a manifest, or undefined if the registry does not have it. */
  async headManifest(repo: string, reference: string): Promise<Descriptor | undefined> {
    const url = this.#url(`/v2/${repo}/manifests/${reference}`);
    const res = await this.#call('HEAD', url, {
      scopes: [pull(repo)],
      headers: { accept: MANIFEST_ACCEPT },
      ok: [200, 404],
    });
    res.body.resume();
    if (res.status === 404) return undefined;
    const digest = header(res, 'docker-content-digest');
    const size = Number(header(res, 'content-length'));
    const mediaType = header(res, 'content-type')?.split(';')[0]?.trim();
    if (!digest || !Number.isSafeInteger(size) || !mediaType) {
      // Some registries omit these on HEAD: fall back to reading the manifest.
      return (await this.getManifest(repo, reference)).descriptor;
    }
    return { mediaType, digest, size };
  }

  /** Stores a manifest with its exact bytes; returns whether the registry processed its `subject`. */
  async putManifest(
    repo: string,
    reference: string,
    bytes: Uint8Array,
    mediaType: string,
  ): Promise<{ subjectHandled: boolean }> {
    const url = this.#url(`/v2/${repo}/manifests/${reference}`);
    const res = await this.#call('PUT', url, {
      scopes: [push(repo)],
      headers: { 'content-type': mediaType, 'content-length': String(bytes.length) },
      body: bytes,
      ok: [200, 201, 202],
    });
    res.body.resume();
    return { subjectHandled: header(res, 'oci-subject') !== undefined };
  }

  async deleteManifest(repo: string, reference: string): Promise<void> {
    const res = await this.#call('DELETE', this.#url(`/v2/${repo}/manifests/${reference}`), {
      scopes: [push(repo)],
      ok: [202, 200],
    });
    res.body.resume();
  }

  async hasBlob(repo: string, digest: string): Promise<boolean> {
    const res = await this.#call('HEAD', this.#url(`/v2/${repo}/blobs/${digest}`), {
      scopes: [pull(repo)],
      ok: [200, 404],
    });
    res.body.resume();
    return res.status === 200;
  }

  /**
   * Streams a blob, verifying size and digest; an interrupted download is resumed with `Range`
   * from the last byte received. The stream throws before ending if the content is wrong, and
   * says so (verifiedStream), so that a store writing it does not hash it again.
   */
  getBlob(repo: string, desc: Descriptor): AsyncGenerator<Uint8Array> {
    const subject = `${this.registry}/${repo}@${desc.digest}`;
    return verifiedStream(
      this.#download(repo, desc, subject),
      desc,
      `blob ${desc.digest} from ${this.registry}`,
      (failure, message) =>
        new RegistryError(failure === 'size' ? 'SIZE_MISMATCH' : 'DIGEST_MISMATCH', message, { subject }),
    );
  }

  /**
   * The bytes of a blob, resumed where a connection broke or stalled; getBlob's stream checks
   * them. The whole download, resumes included, keeps within one deadline.
   */
  async *#download(repo: string, desc: Descriptor, subject: string): AsyncGenerator<Uint8Array> {
    const url = this.#url(`/v2/${repo}/blobs/${desc.digest}`);
    const attempts = Math.max(1, this.options.retries ?? 5);
    const deadline = this.#deadline();
    let received = 0;
    let stalls = 0;
    let lastError: unknown;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      const offset = received;
      if (attempt > 1) await this.#backoff(attempt - 1, undefined, deadline, `GET ${url}`);
      const res = await this.#call('GET', url, {
        scopes: [pull(repo)],
        headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
        ok: [200, 206],
        deadline,
      });
      // A server that ignores Range sends everything again: skip what we already have.
      let skip = 0;
      if (offset > 0 && res.status === 200) skip = offset;
      if (res.status === 206 && !header(res, 'content-range')?.startsWith(`bytes ${offset}-`)) {
        res.body.destroy();
        throw new RegistryError(
          'PROTOCOL',
          `${this.registry} answered a range request for ${desc.digest} with the wrong range`,
          { subject },
        );
      }
      try {
        for await (const raw of res.body) {
          let chunk = raw;
          if (skip > 0) {
            const n = Math.min(skip, chunk.length);
            skip -= n;
            chunk = chunk.subarray(n);
            if (chunk.length === 0) continue;
          }
          received += chunk.length;
          yield chunk;
        }
      } catch (error) {
        lastError = error;
        // A stalled body is resumed once on a fresh connection; a second stall ends the download.
        if (isTimeout(error) && (++stalls > 1 || expired(deadline))) break;
        continue;
      } finally {
        res.body.destroy();
      }
      if (received < desc.size) {
        lastError = new Error(`body ended after ${received} of ${desc.size} bytes`);
        continue;
      }
      return;
    }
    // A stall stays a TIMEOUT; anything else that broke the connection is a NETWORK failure.
    throw new RegistryError(
      isTimeout(lastError) ? 'TIMEOUT' : 'NETWORK',
      `download of ${desc.digest} from ${this.registry} failed: ${(lastError as Error)?.message}`,
      {
        subject,
        cause: lastError,
      },
    );
  }

  /**
   * Uploads a blob unless the repository has it (checked first unless `knownAbsent`): tries
   * cross-repository mounts from `mountFrom` first, then a monolithic PUT, or PATCH chunks when it is larger than `chunkSize`.
   * The data is verified on the way; a failed upload is cancelled so nothing partial remains.
   */
  async putBlob(
    repo: string,
    desc: Descriptor,
    data: AsyncIterable<Uint8Array>,
    mountFrom: string[] = [],
    options: { knownAbsent?: boolean } = {},
  ): Promise<'exists' | 'mounted' | 'uploaded'> {
    // `knownAbsent`: the caller has just asked, and one round trip per blob is enough.
    if (!options.knownAbsent && (await this.hasBlob(repo, desc.digest))) return 'exists';
    let location: URL | undefined;
    let minChunk = 0;
    for (const from of mountFrom) {
      if (from === repo) continue;
      const url = this.#url(`/v2/${repo}/blobs/uploads/`);
      url.searchParams.set('mount', desc.digest);
      url.searchParams.set('from', from);
      const res = await this.#call('POST', url, {
        scopes: [push(repo), pull(from)],
        headers: { 'content-length': '0' },
        ok: [201, 202],
      });
      res.body.resume();
      if (res.status === 201) return 'mounted';
      location = this.#location(res);
      minChunk = Number(header(res, 'oci-chunk-min-length') ?? 0);
      break;
    }
    if (!location) {
      const res = await this.#call('POST', this.#url(`/v2/${repo}/blobs/uploads/`), {
        scopes: [push(repo)],
        headers: { 'content-length': '0' },
        ok: [202],
      });
      res.body.resume();
      location = this.#location(res);
      minChunk = Number(header(res, 'oci-chunk-min-length') ?? 0);
    }
    const subject = `${this.registry}/${repo}@${desc.digest}`;
    const verified = verifiedStream(
      data,
      desc,
      `blob ${subject}`,
      (failure, message) =>
        new RegistryError(failure === 'size' ? 'SIZE_MISMATCH' : 'DIGEST_MISMATCH', message, { subject }),
    );
    try {
      const chunkSize = this.options.chunkSize;
      if (chunkSize && desc.size > chunkSize) {
        location = await this.#uploadChunks(repo, location, verified, Math.max(chunkSize, minChunk || 0));
        const done = new URL(location);
        done.searchParams.set('digest', desc.digest);
        const res = await this.#call('PUT', done, {
          scopes: [push(repo)],
          headers: { 'content-length': '0' },
          ok: [201],
        });
        res.body.resume();
      } else {
        const done = new URL(location);
        done.searchParams.set('digest', desc.digest);
        const res = await this.#call('PUT', done, {
          scopes: [push(repo)],
          headers: { 'content-type': 'application/octet-stream', 'content-length': String(desc.size) },
          body: verified,
          ok: [201],
        });
        res.body.resume();
      }
    } catch (error) {
      await this.#call('DELETE', location, { scopes: [push(repo)], ok: [204, 202, 200, 404] }).then(
        (r) => r.body.resume(),
        () => {},
      );
      throw error;
    }
    return 'uploaded';
  }

  /**
   * The upload URL a response names. It may be on another origin (a storage service): the
   * upload goes there without credentials. From an HTTPS registry it must be HTTPS: the blob
   * is not sent in the clear.
   */
  #location(res: HttpResponse): URL {
    const location = header(res, 'location');
    if (!location)
      throw new RegistryError('PROTOCOL', `${this.registry} started an upload without a Location`, {
        subject: this.registry,
      });
    const url = resolveUrl(location, res.url);
    if (this.#base.protocol === 'https:' && url.protocol === 'http:') {
      throw new RegistryError(
        'PROTOCOL',
        `${this.registry} (HTTPS) sent an upload Location in plain HTTP, ${quoted(location)}: refusing to upload in the clear`,
        { subject: String(res.url) },
      );
    }
    return url;
  }

  /**
   * The next page a `Link: <...>; rel="next"` names: only on the registry's own origin, since a
   * page is sent credentials and its answer is taken as the registry's.
   */
  async #nextPage(res: HttpResponse, what: string): Promise<URL | undefined> {
    const link = nextLink(header(res, 'link'), res.url);
    if (!link) return undefined;
    const next = await this.#settled(link);
    if (!this.#own(next)) {
      throw new RegistryError(
        'PROTOCOL',
        `${what} on ${this.registry} continues on another origin, ${next.origin}: refused`,
        { subject: String(next) },
      );
    }
    return next;
  }

  /** PATCHes `data` in chunks, always following the newest `Location`; returns the final one. */
  async #uploadChunks(
    repo: string,
    start: URL,
    data: AsyncIterable<Uint8Array>,
    chunkSize: number,
  ): Promise<URL> {
    let location = start;
    let offset = 0;
    const send = async (chunk: Buffer) => {
      const res = await this.#call('PATCH', location, {
        scopes: [push(repo)],
        headers: {
          'content-type': 'application/octet-stream',
          'content-length': String(chunk.length),
          'content-range': `${offset}-${offset + chunk.length - 1}`,
        },
        body: chunk,
        ok: [202],
      });
      res.body.resume();
      location = this.#location(res);
      offset += chunk.length;
    };
    let pending: Buffer[] = [];
    let pendingSize = 0;
    for await (const piece of data) {
      pending.push(Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength));
      pendingSize += piece.length;
      while (pendingSize >= chunkSize) {
        const all = Buffer.concat(pending);
        await send(all.subarray(0, chunkSize));
        pending = [all.subarray(chunkSize)];
        pendingSize = all.length - chunkSize;
      }
    }
    if (pendingSize > 0) await send(Buffer.concat(pending));
    return location;
  }

  /** All tags of a repository, following `Link` pagination, sorted. */
  async listTags(repo: string): Promise<string[]> {
    const tags = new Set<string>();
    let url: URL | undefined = this.#url(`/v2/${repo}/tags/list?n=1000`);
    for (let page = 0; url && page < 10_000; page++) {
      const res = await this.#call('GET', url, { scopes: [pull(repo)], ok: [200] });
      const body = parseJson<{ tags?: unknown }>(await readBody(res), 'tag list', `${this.registry}/${repo}`);
      if (body.tags != null && !(Array.isArray(body.tags) && body.tags.every((t) => typeof t === 'string'))) {
        throw new RegistryError('PROTOCOL', `tag list of ${this.registry}/${repo} is malformed`, {
          subject: `${this.registry}/${repo}`,
        });
      }
      for (const tag of (body.tags ?? []) as string[]) tags.add(tag);
      url = await this.#nextPage(res, `tag list of ${repo}`);
    }
    return [...tags].sort();
  }

  /**
   * Descriptors of the manifests whose `subject` is `digest`: the referrers API, or the
   * `sha256-<hex>` tag fallback when the registry does not have it.
   */
  async referrers(repo: string, digest: string, artifactType?: string): Promise<Descriptor[]> {
    const url = this.#url(`/v2/${repo}/referrers/${digest}`);
    if (artifactType) url.searchParams.set('artifactType', artifactType);
    const res = await this.#call('GET', url, {
      scopes: [pull(repo)],
      headers: { accept: MediaType.ImageIndex },
      ok: [200, 404],
    });
    let found: Descriptor[];
    const contentType = header(res, 'content-type') ?? '';
    if (res.status === 200 && contentType.startsWith(MediaType.ImageIndex)) {
      found = [];
      let page: HttpResponse | undefined = res;
      while (page) {
        found.push(...referrerList(await readBody(page), `${this.registry}/${repo}@${digest}`));
        const next = await this.#nextPage(page, `referrers of ${repo}@${digest}`);
        page = next
          ? await this.#call('GET', next, {
              scopes: [pull(repo)],
              headers: { accept: MediaType.ImageIndex },
              ok: [200],
            })
          : undefined;
      }
    } else {
      res.body.resume();
      found = (await this.#fallbackIndex(repo, digest))?.manifests ?? [];
    }
    return artifactType ? found.filter((d) => d.artifactType === artifactType) : found;
  }

  async #fallbackIndex(repo: string, digest: string): Promise<Index | undefined> {
    try {
      const { bytes } = await this.getManifest(repo, referrersTag(digest));
      const subject = `${this.registry}/${repo}:${referrersTag(digest)}`;
      return {
        ...parseJson<Index>(bytes, 'referrers index', subject),
        manifests: referrerList(bytes, subject),
      };
    } catch (error) {
      if (error instanceof RegistryError && error.code === 'NOT_FOUND') return undefined;
      throw error;
    }
  }

  /** Adds `referrer` to the fallback index of `subject` (for registries without the referrers API). */
  async addReferrer(repo: string, subject: string, referrer: Descriptor): Promise<void> {
    const key = `${repo}@${subject}`;
    const previous = this.#subjectLocks.get(key) ?? Promise.resolve();
    const next = previous.then(async () => {
      const index: Index = (await this.#fallbackIndex(repo, subject)) ?? {
        schemaVersion: 2,
        mediaType: MediaType.ImageIndex,
        manifests: [],
      };
      if (index.manifests.some((d) => d.digest === referrer.digest)) return;
      index.manifests.push(referrer);
      const bytes = Buffer.from(JSON.stringify(index));
      await this.putManifest(repo, referrersTag(subject), bytes, MediaType.ImageIndex);
    });
    this.#subjectLocks.set(
      key,
      next.catch(() => {}),
    );
    await next;
  }
}

const expired = (deadline: number | undefined) => deadline !== undefined && now() >= deadline;

/** Parses a JSON object from a registry, turning garbage into a typed error. */
function parseJson<T>(bytes: Uint8Array, what: string, subject: string): T {
  try {
    const value = JSON.parse(Buffer.from(bytes).toString('utf8')) as unknown;
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      throw new Error('not a JSON object');
    return value as T;
  } catch (cause) {
    throw new RegistryError('PROTOCOL', `${what} from ${subject} is not a valid JSON object`, {
      subject,
      cause,
    });
  }
}

/** The descriptors of a referrers index, each checked to be a descriptor. */
function referrerList(bytes: Uint8Array, subject: string): Descriptor[] {
  const index = parseJson<{ manifests?: unknown }>(bytes, 'referrers index', subject);
  const list = index.manifests ?? [];
  const valid = (d: unknown): d is Descriptor => {
    const o = d as Descriptor;
    return (
      typeof o === 'object' &&
      o !== null &&
      typeof o.mediaType === 'string' &&
      typeof o.digest === 'string' &&
      isDigest(o.digest) &&
      Number.isSafeInteger(o.size) &&
      o.size >= 0
    );
  };
  if (!Array.isArray(list) || !list.every(valid)) {
    throw new RegistryError('PROTOCOL', `referrers index of ${subject} has malformed descriptors`, {
      subject,
    });
  }
  return list;
}

/** Parses `Link: <url>; rel="next"`. */
function nextLink(link: string | undefined, base: URL): URL | undefined {
  const m = link && /<([^>]+)>\s*;\s*rel="?next"?/.exec(link);
  return m ? resolveUrl(m[1] as string, base) : undefined;
}

/** A URL a server handed us (Location, Link), relative to the answering one. */
function resolveUrl(text: string, base: URL): URL {
  try {
    const url = new URL(text, base);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('not http(s)');
    return url;
  } catch (cause) {
    throw new RegistryError('PROTOCOL', `${base.host} sent an unusable URL ${quoted(text)}`, {
      subject: String(base),
      cause,
    });
  }
}
