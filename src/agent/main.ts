/** The entry point of the Seal agent as PID 1 (the initrd's /init imports it). */
import { boot } from './boot.ts';

// PID 1 must never exit (the kernel would panic): the event loop is kept alive for good.
setInterval(() => {}, 1 << 30);
await boot();
