export * from './content.ts';
export * from './model.ts';
