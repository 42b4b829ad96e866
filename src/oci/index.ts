export * from './digest.ts';
export * from './mediatypes.ts';
export * from './pinned.ts';
export * from './platform.ts';
export type * from './transport.ts';
export type * from './types.ts';
export * from './validate.ts';
export * from './verify.ts';
