/** The entry point of the Seal agent as PID 1 (the initrd's /init imports it). */
import { boot } from './boot.ts';

await boot();
