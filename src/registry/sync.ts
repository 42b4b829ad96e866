/**
 * `sync`: mirror a system and everything it pins and everything attached to it, incrementally.
 * Modules that define documents pinning images by digest (the system manifest) register a
 * resolver here, so the registry module stays generic.
 */
import type { ImageDestination, ImageSource } from '../oci/transport.ts';
import {
  type MirrorOptions,
  type MirrorResult,
  mirror,
  type PinnedResolver,
  pinnedInJson,
} from './mirror.ts';

const resolvers: PinnedResolver[] = [pinnedInJson];

/** Adds a resolver of images pinned inside a document type; every later sync follows them. */
export function registerPinnedResolver(resolver: PinnedResolver): void {
  if (!resolvers.includes(resolver)) resolvers.push(resolver);
}

/** Mirrors `src` into `dst` with every image of every index, every referrer and every pinned image. */
export function syncImage(
  src: ImageSource,
  dst: ImageDestination,
  options: Omit<MirrorOptions, 'all' | 'referrers'> = {},
): Promise<MirrorResult> {
  return mirror(src, dst, {
    ...options,
    all: true,
    referrers: true,
    pinned: [...resolvers, ...(options.pinned ?? [])],
  });
}
