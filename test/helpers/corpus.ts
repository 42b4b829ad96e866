import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The real Debian minimal root filesystem (built once by scripts/corpus.sh, then cached). */
export function corpusPath(): string {
  const script = fileURLToPath(new URL('../../scripts/corpus.sh', import.meta.url));
  return execFileSync('bash', [script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}
