/**
 * The one interface every transport implements (layout store, archives, directories,
 * registries), so that copy works between any two — in the manner of go-containerregistry.
 */
import type { Descriptor } from './types.ts';

/** Where images are read from. */
export interface ImageSource {
  /** The reference as the user wrote it, for messages. */
  readonly name: string;
  /** The descriptor (manifest or index) the reference names. */
  resolve(): Promise<Descriptor>;
  /** The exact bytes of a manifest or index, verified against `desc.digest` and `desc.size`. */
  getManifest(desc: Descriptor): Promise<Uint8Array>;
  /**
   * Streams a blob. The stream verifies size and digest as it goes and throws a typed error
   * before its end if either is wrong, so a consumer never accepts bad bytes.
   */
  getBlob(desc: Descriptor): AsyncIterable<Uint8Array>;
  /**
   * The local file that holds a blob, for transports that keep blobs as files (OCI layouts), so
   * that large blobs can be read in place instead of copied; undefined when there is none. Its
   * bytes are NOT verified: whoever reads the file checks the digest and size.
   */
  blobFile?(desc: Descriptor): string | undefined;
  /** Descriptors of manifests whose `subject` is `desc` (referrers), optionally by artifactType. */
  referrers?(desc: Descriptor, artifactType?: string): Promise<Descriptor[]>;
  close(): Promise<void>;
}

/** Where images are written to. */
export interface ImageDestination {
  readonly name: string;
  hasBlob(desc: Descriptor): Promise<boolean>;
  /** Stores a blob streamed from `data`; verified against `desc` and written atomically. */
  putBlob(desc: Descriptor, data: AsyncIterable<Uint8Array>): Promise<void>;
  /** Stores a manifest or index with its exact bytes; `tag` names it if given. */
  putManifest(desc: Descriptor, bytes: Uint8Array, tag?: string): Promise<void>;
  /** Makes everything written visible (archives are finished here). */
  commit(): Promise<void>;
  close(): Promise<void>;
}
