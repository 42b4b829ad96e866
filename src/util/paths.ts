/**
 * Where the project's own files are, for worker modules and files read beside the code. Every
 * path is resolved from this module in src/util/, so that it also holds for the device agent's
 * bundle, which is placed in src/util/ inside the initrd (see agent/initrd.ts).
 */

/** A module of the project's sources, e.g. `verity/hashing.ts`. */
export function sourceUrl(path: string): URL {
  return new URL(`../${path}`, import.meta.url);
}

/** A file of the project itself, e.g. `package.json`. */
export function projectUrl(path: string): URL {
  return new URL(`../../${path}`, import.meta.url);
}
