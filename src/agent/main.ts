/**
 * The entry point of the Seal agent as PID 1. `seal initrd build` bundles the agent from here and
 * makes a V8 startup snapshot of it: every module already evaluated, so that Node.js starts with
 * the agent loaded (the initrd's /init names the snapshot) and runs boot() at once.
 *
 * Whatever a module does when it is evaluated happens on the build host and is kept in the
 * snapshot: modules must read, measure and load nothing then (addons, files, the environment,
 * random values) but do it when first used.
 */
import { startupSnapshot } from 'node:v8';
import { boot } from './boot.ts';

startupSnapshot.setDeserializeMainFunction(() => {
  // PID 1 must never exit (the kernel would panic): the event loop is kept alive for good.
  setInterval(() => {}, 1 << 30);
  void boot();
});
