/**
 * The project's Node-API addons (native/*.c, built into build/Release by scripts/setup.sh).
 * Loading can fail where no compiler was available at install time or a shared library is
 * missing; callers get the reason, to fall back or to say why a feature is unavailable.
 */
import { createRequire } from 'node:module';

export function loadAddon<T>(name: string): T | Error {
  try {
    return createRequire(import.meta.url)(`../../build/Release/${name}.node`) as T;
  } catch (error) {
    return error instanceof Error ? error : new Error(String(error));
  }
}
