/**
 * `docker://` as an ImageSource / ImageDestination, so the store's copy works between a
 * registry and any other transport. Blobs seen in one repository are remembered so that an
 * upload to another repository of the same registry becomes a cross-repository mount.
 */
import { digestOf } from '../oci/digest.ts';
import type { ImageDestination, ImageSource } from '../oci/transport.ts';
import type { Descriptor } from '../oci/types.ts';
import { isManifestType } from '../oci/validate.ts';
import { RegistryClient, type RegistryOptions } from './client.ts';
import { RegistryError } from './errors.ts';
import { formatRegistryReference, parseRegistryReference, type RegistryReference } from './reference.ts';

/** Repositories (`registry/repo`) each blob digest is known to live in, for mounts. */
const blobHomes = new Map<string, Set<string>>();

function rememberHome(digest: string, registry: string, repo: string): void {
  let homes = blobHomes.get(digest);
  if (!homes) blobHomes.set(digest, (homes = new Set()));
  homes.add(`${registry}/${repo}`);
}

function homesOn(digest: string, registry: string): string[] {
  const prefix = `${registry}/`;
  return [...(blobHomes.get(digest) ?? [])]
    .filter((h) => h.startsWith(prefix))
    .map((h) => h.slice(prefix.length));
}

function toReference(ref: string | RegistryReference): RegistryReference {
  return typeof ref === 'string' ? parseRegistryReference(ref) : ref;
}

function checkManifest(bytes: Uint8Array, desc: Descriptor, subject: string): void {
  if (
    bytes.length !== desc.size ||
    digestOf(bytes, desc.digest.startsWith('sha512:') ? 'sha512' : 'sha256') !== desc.digest
  ) {
    throw new RegistryError(
      'DIGEST_MISMATCH',
      `manifest from ${subject} does not match ${desc.digest} (${desc.size} bytes)`,
      { subject },
    );
  }
}

export class RegistrySource implements ImageSource {
  readonly name: string;
  readonly reference: RegistryReference;
  readonly client: RegistryClient;
  #manifests = new Map<string, Uint8Array>();

  constructor(ref: string | RegistryReference, options: RegistryOptions = {}) {
    this.reference = toReference(ref);
    this.name = `docker://${formatRegistryReference(this.reference)}`;
    this.client = new RegistryClient(this.reference.registry, options);
  }

  async resolve(): Promise<Descriptor> {
    const { repository, tag, digest } = this.reference;
    const found = await this.client.getManifest(repository, (digest ?? tag) as string);
    this.#manifests.set(found.descriptor.digest, found.bytes);
    return found.descriptor;
  }

  async getManifest(desc: Descriptor): Promise<Uint8Array> {
    const bytes =
      this.#manifests.get(desc.digest) ??
      (await this.client.getManifest(this.reference.repository, desc.digest)).bytes;
    checkManifest(bytes, desc, this.name);
    return bytes;
  }

  getBlob(desc: Descriptor): AsyncIterable<Uint8Array> {
    rememberHome(desc.digest, this.reference.registry, this.reference.repository);
    return this.client.getBlob(this.reference.repository, desc);
  }

  referrers(desc: Descriptor, artifactType?: string): Promise<Descriptor[]> {
    return this.client.referrers(this.reference.repository, desc.digest, artifactType);
  }

  listTags(): Promise<string[]> {
    return this.client.listTags(this.reference.repository);
  }

  async close(): Promise<void> {
    this.client.close();
  }
}

export class RegistryDestination implements ImageDestination {
  readonly name: string;
  readonly reference: RegistryReference;
  readonly client: RegistryClient;
  #tagged = false;
  /** Blobs hasBlob just found missing. */
  #absent = new Set<string>();
  #lastRoot: { desc: Descriptor; bytes: Uint8Array } | undefined;

  constructor(ref: string | RegistryReference, options: RegistryOptions = {}) {
    this.reference = toReference(ref);
    this.name = `docker://${formatRegistryReference(this.reference)}`;
    this.client = new RegistryClient(this.reference.registry, options);
  }

  /** Manifests are looked up as manifests: registries do not serve them as blobs. */
  async hasBlob(desc: Descriptor): Promise<boolean> {
    const repo = this.reference.repository;
    if (isManifestType(desc.mediaType))
      return (await this.client.headManifest(repo, desc.digest)) !== undefined;
    const found = await this.client.hasBlob(repo, desc.digest);
    if (!found) this.#absent.add(desc.digest);
    return found;
  }

  async putBlob(desc: Descriptor, data: AsyncIterable<Uint8Array>): Promise<void> {
    const { registry, repository } = this.reference;
    await this.client.putBlob(
      repository,
      desc,
      data,
      this.client.options.mount === false ? [] : homesOn(desc.digest, registry),
      // A copier asks hasBlob first: the client need not ask the registry again.
      { knownAbsent: this.#absent.delete(desc.digest) },
    );
    rememberHome(desc.digest, registry, repository);
  }

  async putManifest(desc: Descriptor, bytes: Uint8Array, tag?: string): Promise<void> {
    checkManifest(bytes, desc, this.name);
    const repo = this.reference.repository;
    const { subjectHandled } = await this.client.putManifest(repo, tag ?? desc.digest, bytes, desc.mediaType);
    let doc: {
      subject?: Descriptor;
      artifactType?: string;
      config?: Descriptor;
      annotations?: Record<string, string>;
    };
    try {
      doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
    } catch {
      doc = {};
    }
    if (tag) this.#tagged = true;
    if (doc.subject) {
      if (!subjectHandled) {
        const artifactType = doc.artifactType ?? doc.config?.mediaType;
        await this.client.addReferrer(repo, doc.subject.digest, {
          mediaType: desc.mediaType,
          digest: desc.digest,
          size: desc.size,
          ...(artifactType ? { artifactType } : {}),
          ...(doc.annotations ? { annotations: doc.annotations } : {}),
        });
      }
    } else {
      this.#lastRoot = { desc, bytes };
    }
  }

  /** Tags the image with the reference's tag when the copier did not name one (the last manifest without a subject is the root). */
  async commit(): Promise<void> {
    const { tag, repository } = this.reference;
    if (tag && !this.#tagged && this.#lastRoot) {
      await this.client.putManifest(repository, tag, this.#lastRoot.bytes, this.#lastRoot.desc.mediaType);
      this.#tagged = true;
    }
  }

  async close(): Promise<void> {
    this.client.close();
  }
}

export async function openRegistrySource(
  ref: string | RegistryReference,
  options: RegistryOptions = {},
): Promise<RegistrySource> {
  return new RegistrySource(ref, options);
}

export async function openRegistryDestination(
  ref: string | RegistryReference,
  options: RegistryOptions = {},
): Promise<RegistryDestination> {
  return new RegistryDestination(ref, options);
}
