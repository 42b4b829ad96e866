/**
 * An OCI image layout on disk: `oci-layout`, `index.json`, `blobs/<alg>/<hex>`. Blobs are
 * written streamed and verified under a temporary name, then renamed into place, so a bad or
 * interrupted write leaves nothing; index.json is replaced atomically under a lock file.
 */
import { closeSync, constants, createReadStream, lstatSync } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DigestError, Digester, digestOf, parseDigest } from '../oci/digest.ts';
import { ANNOTATION_REF_NAME, MediaType } from '../oci/mediatypes.ts';
import { pinnedDescriptors } from '../oci/pinned.ts';
import type { Descriptor, Index } from '../oci/types.ts';
import { isIndexType, parseManifestOrIndex, validateIndex } from '../oci/validate.ts';
import { verifiedStream } from '../oci/verify.ts';
import { syncDirectory, temporaryNameFor, writeFileAtomic } from '../util/atomic.ts';
import { type ConfinedFile, openFileBeneath, readFileBeneath } from '../util/fsops.ts';
import { readFullySync } from '../util/read.ts';
import { writeFully } from '../util/write.ts';
import { StoreError } from './errors.ts';

const LAYOUT_FILE = '{"imageLayoutVersion":"1.0.0"}';
/** Incoming chunks (64 KiB from a socket) are written in batches of this size: far fewer calls. */
const WRITE_BATCH = 1 << 20;
/** Every so many bytes written, the disk is asked to catch up (a datasync in the background). */
const FLUSH_EVERY = 8 << 20;
/** index.json and other small documents are refused above this size. */
const DOCUMENT_LIMIT = 64 << 20;

export interface FsckReport {
  blobs: number;
  corrupt: string[];
  missing: string[];
}

export class LayoutStore {
  readonly dir: string;
  #indexLock: Promise<void> = Promise.resolve();
  /** Blob directories with renames not yet made durable: synced before index.json names them. */
  #unsyncedDirs = new Set<string>();

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** Opens a layout; with `create`, makes an empty one if `dir` is missing or empty. */
  static async open(dir: string, options: { create?: boolean } = {}): Promise<LayoutStore> {
    const store = new LayoutStore(dir);
    let layout: string | undefined;
    try {
      layout = readFileBeneath(dir, 'oci-layout', 4096).toString('utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw store.#unreadable('oci-layout', error);
    }
    if (layout === undefined) {
      const entries = await readdir(dir).catch(() => undefined);
      if (!options.create || (entries && entries.length > 0)) {
        throw new StoreError(
          'STORE_NOT_A_LAYOUT',
          entries === undefined ? `no OCI image layout at ${dir}` : `${dir} is not an OCI image layout`,
          { subject: dir },
        );
      }
      await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
      await writeFileAtomic(
        join(dir, 'index.json'),
        `${JSON.stringify({ schemaVersion: 2, manifests: [] })}\n`,
      );
      await writeFileAtomic(join(dir, 'oci-layout'), LAYOUT_FILE);
      return store;
    }
    try {
      if (JSON.parse(layout).imageLayoutVersion !== '1.0.0') throw new Error('unsupported version');
    } catch {
      throw new StoreError('STORE_NOT_A_LAYOUT', `${dir}/oci-layout is not a supported image layout`, {
        subject: dir,
      });
    }
    store.#realDirectory('blobs');
    return store;
  }

  /**
   * The typed error for a path of the layout that could not be read (as openFileBeneath reports
   * it): missing, or not a plain file inside the layout.
   */
  #unreadable(rel: string, error: unknown, what = rel): Error {
    const code = (error as NodeJS.ErrnoException).code;
    const subject = join(this.dir, rel);
    switch (code) {
      case 'ENOENT':
        return new StoreError('STORE_NOT_FOUND', `${what} is not in ${this.dir}`, { subject });
      case 'ELOOP':
      case 'EXDEV':
      case 'ENOTDIR':
        return new StoreError('STORE_UNSAFE_PATH', `${what} in ${this.dir} is reached through a symlink`, {
          subject,
        });
      case 'ENOTREG':
        return new StoreError('STORE_UNSAFE_PATH', `${what} in ${this.dir} is not a regular file`, {
          subject,
        });
      case 'EFBIG':
        return new StoreError('STORE_INVALID_DOCUMENT', `${what} in ${this.dir} is too large to read`, {
          subject,
        });
      default:
        return error instanceof Error ? error : new Error(String(error));
    }
  }

  /** Refuses a directory of the layout that is a symlink or not a directory (absent is fine). */
  #realDirectory(rel: string): void {
    let st: ReturnType<typeof lstatSync> | undefined;
    try {
      st = lstatSync(join(this.dir, rel));
    } catch {
      return;
    }
    if (!st.isDirectory()) {
      throw new StoreError('STORE_UNSAFE_PATH', `${join(this.dir, rel)} is not a directory of the layout`, {
        subject: join(this.dir, rel),
      });
    }
  }

  /** Opens a blob: a regular file at its place in the layout, reached without symlinks. */
  #openBlob(digest: string): ConfinedFile {
    const { algorithm, hex } = parseDigest(digest);
    const rel = `blobs/${algorithm}/${hex}`;
    try {
      return openFileBeneath(this.dir, rel);
    } catch (error) {
      throw this.#unreadable(rel, error, `blob ${digest}`);
    }
  }

  blobPath(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.dir, 'blobs', algorithm, hex);
  }

  /** Whether the blob is present as a regular file (a symlink or a FIFO in its place is not a blob). */
  async hasBlob(digest: string): Promise<boolean> {
    try {
      closeSync(this.#openBlob(digest).fd);
      return true;
    } catch (error) {
      if (error instanceof StoreError) return false;
      throw error;
    }
  }

  /**
   * Stores a blob streamed from `data`. With `expected`, the size and digest must match or
   * nothing is stored; without, the digest is computed. Returns the digest and size.
   * Chunks are written in batches while the next ones arrive, and the disk is asked to write
   * early so that the fsync before the rename has little left: the blob is durable before it
   * is visible under its name.
   */
  async putBlob(
    data: AsyncIterable<Uint8Array>,
    expected?: { digest: string; size?: number },
  ): Promise<{ digest: string; size: number }> {
    const algorithm = expected ? parseDigest(expected.digest).algorithm : 'sha256';
    const dir = join(this.dir, 'blobs', algorithm);
    await mkdir(dir, { recursive: true });
    this.#realDirectory(`blobs/${algorithm}`);
    // With a whole descriptor the stream is checked on the way (and not hashed a second time if
    // it already verifies itself); with a digest alone it is hashed and compared at the end.
    const known = expected?.size !== undefined ? { digest: expected.digest, size: expected.size } : undefined;
    const source = known ? verifiedStream(data, known, `blob ${known.digest}`) : data;
    const digester = known ? undefined : new Digester(algorithm);
    const temp = temporaryNameFor(join(dir, 'incoming'));
    const handle = await open(temp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o644);
    let writing: Promise<void> = Promise.resolve();
    let flushing: Promise<void> = Promise.resolve();
    try {
      let size = 0;
      let batch: Uint8Array[] = [];
      let batchSize = 0;
      let position = 0;
      let flushedAt = 0;
      const writeBatch = async () => {
        await writing;
        const chunks = batch;
        const at = position;
        position += batchSize;
        batch = [];
        batchSize = 0;
        writing = writeFully(handle, chunks, at);
        writing.catch(() => {}); // awaited below; must not count as unhandled meanwhile
        if (position - flushedAt >= FLUSH_EVERY) {
          flushedAt = position;
          const written = writing;
          flushing = Promise.all([flushing, written]).then(() => handle.datasync());
          flushing.catch(() => {});
        }
      };
      for await (const chunk of source) {
        size += chunk.length;
        digester?.update(chunk);
        batch.push(chunk);
        batchSize += chunk.length;
        if (batchSize >= WRITE_BATCH) await writeBatch();
      }
      if (batchSize > 0) await writeBatch();
      await writing;
      const digest = digester ? digester.digest() : (known as { digest: string }).digest;
      if (expected && digest !== expected.digest) {
        throw new DigestError('DIGEST_MISMATCH', `blob has digest ${digest}, expected ${expected.digest}`, {
          subject: expected.digest,
        });
      }
      await flushing;
      await handle.sync();
      await handle.close();
      await rename(temp, this.blobPath(digest));
      this.#unsyncedDirs.add(dir);
      return { digest, size };
    } catch (error) {
      await writing.catch(() => {});
      await flushing.catch(() => {});
      await handle.close().catch(() => {});
      await rm(temp, { force: true });
      throw error;
    }
  }

  async putBytes(bytes: Uint8Array, mediaType: string): Promise<Descriptor> {
    const digest = digestOf(bytes);
    if (!(await this.hasBlob(digest))) {
      await this.putBlob(
        (async function* () {
          yield bytes;
        })(),
        { digest, size: bytes.length },
      );
    }
    return { mediaType, digest, size: bytes.length };
  }

  /** Streams a blob, verified against the descriptor as it is read. */
  getBlob(desc: { digest: string; size: number }): AsyncIterable<Uint8Array> {
    const open = () => this.#openBlob(desc.digest);
    return verifiedStream(
      (async function* () {
        const { fd } = open();
        yield* createReadStream('', { fd, highWaterMark: 1 << 20 });
      })(),
      desc,
      `blob ${desc.digest} in ${this.dir}`,
    );
  }

  /**
   * A whole blob, verified. It is read with one synchronous call: these are documents (manifests,
   * configs, indexes), and a stream's thread-pool round trips would cost more than the bytes.
   * One byte more than declared is asked for, so that a longer file is caught.
   */
  async readBlob(desc: { digest: string; size: number }, limit = 64 << 20): Promise<Buffer> {
    if (desc.size > limit)
      throw new StoreError('STORE_INVALID_DOCUMENT', `blob ${desc.digest} is too large to read`);
    const { fd } = this.#openBlob(desc.digest);
    let bytes: Buffer;
    try {
      const buffer = Buffer.allocUnsafe(desc.size + 1);
      bytes = buffer.subarray(0, readFullySync(fd, buffer, 0));
    } finally {
      closeSync(fd);
    }
    // Size and digest both: a descriptor may declare the wrong size for the right bytes.
    const whole = verifiedStream(
      (async function* () {
        yield bytes;
      })(),
      desc,
      `blob ${desc.digest} in ${this.dir}`,
    );
    for await (const _ of whole) void _;
    return bytes;
  }

  async index(): Promise<Index> {
    const path = join(this.dir, 'index.json');
    let text: string;
    try {
      text = readFileBeneath(this.dir, 'index.json', DOCUMENT_LIMIT).toString('utf8');
    } catch (error) {
      throw this.#unreadable('index.json', error);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new StoreError('STORE_INVALID_DOCUMENT', `${path} is not valid JSON`, { subject: path });
    }
    return validateIndex(parsed, path);
  }

  /** Runs `change` on index.json under an in-process queue and a lock file, then writes it atomically. */
  async updateIndex(change: (index: Index) => void): Promise<void> {
    const run = this.#indexLock.then(async () => {
      const lock = join(this.dir, 'index.json.lock');
      let handle: Awaited<ReturnType<typeof open>> | undefined;
      for (let attempt = 0; !handle; attempt++) {
        try {
          handle = await open(lock, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o644);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 200) {
            throw new StoreError('STORE_LOCKED', `${this.dir} is locked by another writer (${lock})`, {
              subject: lock,
            });
          }
          await new Promise((r) => setTimeout(r, 25));
        }
      }
      try {
        const index = await this.index();
        change(index);
        for (const dir of this.#unsyncedDirs) {
          this.#unsyncedDirs.delete(dir);
          await syncDirectory(dir);
        }
        await writeFileAtomic(join(this.dir, 'index.json'), `${JSON.stringify(index)}\n`);
      } finally {
        await handle.close();
        await rm(lock, { force: true });
      }
    });
    this.#indexLock = run.catch(() => {});
    return run;
  }

  /** Adds a manifest to index.json, optionally named; a name moves from any previous manifest. */
  async tag(desc: Descriptor, name?: string): Promise<void> {
    await this.updateIndex((index) => {
      const entry: Descriptor = { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
      if (desc.artifactType) entry.artifactType = desc.artifactType;
      if (desc.platform) entry.platform = desc.platform;
      if (name !== undefined) entry.annotations = { [ANNOTATION_REF_NAME]: name };
      index.manifests = index.manifests.filter(
        (m) =>
          !(name !== undefined && m.annotations?.[ANNOTATION_REF_NAME] === name) &&
          !(m.digest === desc.digest && !m.annotations?.[ANNOTATION_REF_NAME]),
      );
      if (name === undefined && index.manifests.some((m) => m.digest === desc.digest)) return;
      index.manifests.push(entry);
    });
  }

  async untag(name: string): Promise<void> {
    let found = false;
    await this.updateIndex((index) => {
      const before = index.manifests.length;
      index.manifests = index.manifests.filter((m) => m.annotations?.[ANNOTATION_REF_NAME] !== name);
      found = index.manifests.length < before;
    });
    if (!found)
      throw new StoreError('STORE_NOT_FOUND', `no image named ${name} in ${this.dir}`, { subject: name });
  }

  /** The descriptor a name (or a digest) refers to. */
  async resolve(nameOrDigest?: string): Promise<Descriptor> {
    const { manifests } = await this.index();
    let found: Descriptor | undefined;
    if (nameOrDigest === undefined) {
      if (manifests.length !== 1) {
        throw new StoreError('STORE_NOT_FOUND', `${this.dir} holds ${manifests.length} images: name one`, {
          subject: this.dir,
        });
      }
      found = manifests[0];
    } else if (nameOrDigest.includes(':') && /^sha(256|512):/.test(nameOrDigest)) {
      found = manifests.find((m) => m.digest === nameOrDigest);
      if (!found && (await this.hasBlob(nameOrDigest))) {
        const { algorithm, hex } = parseDigest(nameOrDigest);
        let bytes: Buffer;
        try {
          bytes = readFileBeneath(this.dir, `blobs/${algorithm}/${hex}`, 16 << 20);
        } catch (error) {
          throw this.#unreadable(`blobs/${algorithm}/${hex}`, error, `blob ${nameOrDigest}`);
        }
        const doc = parseManifestOrIndex(bytes, nameOrDigest);
        const mediaType =
          doc.mediaType ?? ('manifests' in doc ? MediaType.ImageIndex : MediaType.ImageManifest);
        found = { mediaType, digest: nameOrDigest, size: bytes.length };
      }
    } else {
      found = manifests.find((m) => m.annotations?.[ANNOTATION_REF_NAME] === nameOrDigest);
    }
    if (!found)
      throw new StoreError('STORE_NOT_FOUND', `no image ${nameOrDigest} in ${this.dir}`, {
        subject: nameOrDigest,
      });
    return { ...found, mediaType: found.mediaType ?? MediaType.ImageManifest };
  }

  async list(): Promise<{ name: string | undefined; descriptor: Descriptor }[]> {
    const { manifests } = await this.index();
    return manifests.map((m) => ({ name: m.annotations?.[ANNOTATION_REF_NAME], descriptor: m }));
  }

  /** Every blob digest reachable from index.json (manifests, indexes, configs, layers, pinned images). */
  async reachable(strict = true): Promise<Set<string>> {
    return this.#closure((await this.index()).manifests, strict);
  }

  /** Every blob digest reachable from `roots`, added to `seen`. */
  async #closure(roots: Descriptor[], strict: boolean, seen = new Set<string>()): Promise<Set<string>> {
    const visit = async (desc: Descriptor) => {
      if (seen.has(desc.digest)) return;
      seen.add(desc.digest);
      if (!(await this.hasBlob(desc.digest))) return;
      const isDoc =
        isIndexType(desc.mediaType) ||
        desc.mediaType === MediaType.ImageManifest ||
        desc.mediaType === MediaType.DockerManifest ||
        desc.mediaType === undefined;
      if (!isDoc || desc.size > 16 << 20) return;
      let doc: ReturnType<typeof parseManifestOrIndex>;
      try {
        doc = parseManifestOrIndex(await this.readBlob(desc), desc.digest);
      } catch (error) {
        // fsck reports a corrupt document; gc must not guess what it referenced.
        if (strict) throw error;
        return;
      }
      if ('manifests' in doc) for (const m of doc.manifests) await visit(m);
      else {
        seen.add(doc.config.digest);
        for (const l of doc.layers) seen.add(l.digest);
        // Images a system manifest pins are kept with it.
        for (const p of await pinnedDescriptors(doc, (d) => this.readBlob(d))) await visit(p);
      }
    };
    for (const m of roots) await visit(m);
    return seen;
  }

  /**
   * What gc keeps (`kept`: every blob reachable from index.json once `orphans` are gone) and the
   * untagged entries attached to a manifest (signatures, SBOMs, composefs metadata) that nothing
   * else keeps (`orphans`): a referrer lives as long as its subject does.
   */
  async #liveBlobs(): Promise<{ kept: Set<string>; orphans: Set<string> }> {
    const entries = (await this.index()).manifests;
    const tagged = (m: Descriptor) => m.annotations?.[ANNOTATION_REF_NAME] !== undefined;
    const subjects = new Map<string, string>();
    for (const m of entries) {
      if (tagged(m) || m.size > 4 << 20 || !(await this.hasBlob(m.digest))) continue;
      const doc = parseManifestOrIndex(await this.readBlob(m), m.digest);
      if (doc.subject) subjects.set(m.digest, doc.subject.digest);
    }
    const kept = await this.#closure(
      entries.filter((m) => tagged(m) || !subjects.has(m.digest)),
      true,
    );
    // Referrers of kept manifests are kept, and so are theirs (a signature of an SBOM).
    for (let grew = true; grew; ) {
      grew = false;
      for (const [digest, subject] of subjects) {
        if (!kept.has(subject)) continue;
        subjects.delete(digest);
        await this.#closure(
          entries.filter((m) => m.digest === digest),
          true,
          kept,
        );
        grew = true;
      }
    }
    return { kept, orphans: new Set(subjects.keys()) };
  }

  /** Every blob file's digest; the blob directories must be real directories of the layout. */
  async *#allBlobs(): AsyncGenerator<string> {
    this.#realDirectory('blobs');
    for (const algorithm of await readdir(join(this.dir, 'blobs')).catch(() => [] as string[])) {
      this.#realDirectory(`blobs/${algorithm}`);
      for (const hex of await readdir(join(this.dir, 'blobs', algorithm))) {
        if (hex.startsWith('.')) continue;
        yield `${algorithm}:${hex}`;
      }
    }
  }

  /**
   * Removes blobs no image in index.json references, the referrers of manifests no longer kept
   * (from index.json too), and leftover temporary files.
   */
  async gc(): Promise<{ removed: string[]; freed: number }> {
    const { kept: keep, orphans } = await this.#liveBlobs();
    if (orphans.size > 0) {
      await this.updateIndex((index) => {
        index.manifests = index.manifests.filter(
          (m) => !orphans.has(m.digest) || m.annotations?.[ANNOTATION_REF_NAME] !== undefined,
        );
      });
    }
    const removed: string[] = [];
    let freed = 0;
    for await (const digest of this.#allBlobs()) {
      if (keep.has(digest)) continue;
      const path = this.blobPath(digest);
      freed += (await lstat(path)).size;
      await rm(path);
      removed.push(digest);
    }
    for (const algorithm of await readdir(join(this.dir, 'blobs')).catch(() => [] as string[])) {
      for (const name of await readdir(join(this.dir, 'blobs', algorithm))) {
        if (name.startsWith('.') && name.includes('.tmp-'))
          await rm(join(this.dir, 'blobs', algorithm, name), { force: true });
      }
    }
    return { removed, freed };
  }

  /** Re-verifies every blob against its name, and that every referenced blob is present. */
  async fsck(onBlob?: (digest: string) => void): Promise<FsckReport> {
    const report: FsckReport = { blobs: 0, corrupt: [], missing: [] };
    for await (const digest of this.#allBlobs()) {
      report.blobs++;
      onBlob?.(digest);
      try {
        parseDigest(digest);
        const size = (await lstat(this.blobPath(digest))).size;
        for await (const _ of this.getBlob({ digest, size })) void _;
      } catch {
        report.corrupt.push(digest);
      }
    }
    for (const digest of await this.reachable(false))
      if (!(await this.hasBlob(digest))) report.missing.push(digest);
    return report;
  }
}
