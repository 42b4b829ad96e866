import { parentPort } from 'node:worker_threads';

type Fn = (...args: unknown[]) => unknown;
const modules = new Map<string, Record<string, unknown>>();

parentPort!.on('message', async (msg: { id: number; module: string; fn: string; args: unknown[] }) => {
  try {
    let mod = modules.get(msg.module);
    if (!mod) {
      mod = (await import(msg.module)) as Record<string, unknown>;
      modules.set(msg.module, mod);
    }
    const fn = mod[msg.fn];
    if (typeof fn !== 'function') throw new Error(`${msg.module} has no function ${msg.fn}`);
    const value = await (fn as Fn)(...msg.args);
    parentPort!.postMessage({ id: msg.id, ok: true, value });
  } catch (error) {
    parentPort!.postMessage({ id: msg.id, ok: false, error });
  }
});
