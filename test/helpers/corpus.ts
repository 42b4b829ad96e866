import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { writeLayout } from './layout.ts';

/** The real Debian minimal root filesystem (built once by scripts/corpus.sh, then cached). */
export function corpusPath(): string {
  const script = fileURLToPath(new URL('../../scripts/corpus.sh', import.meta.url));
  return execFileSync('bash', [script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

/** An OCI layout at `dir` whose image `tag` is that root filesystem as one (gzipped tar) layer. */
export function writeDebianLayout(dir: string, tag = 'debian'): void {
  const base = execFileSync('tar', ['-C', corpusPath(), '--numeric-owner', '--sort=name', '-cf', '-', '.'], {
    maxBuffer: 1 << 30,
  });
  writeLayout(dir, [base], tag);
}
