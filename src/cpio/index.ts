export { treeToCpio } from './writer.ts';
