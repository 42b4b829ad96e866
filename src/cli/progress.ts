/** A one-line progress bar on stderr, drawn only on a TTY; otherwise every method is a no-op. */
export interface Progress {
  /** Advances by `delta` units (bytes, entries...). */
  tick(delta: number): void;
  setTotal(total: number): void;
  done(): void;
}

const noop: Progress = { tick() {}, setTotal() {}, done() {} };

export function createProgress(label: string, total: number | undefined, enabled: boolean): Progress {
  const stream = process.stderr;
  if (!enabled || !stream.isTTY) return noop;
  let current = 0;
  let max = total;
  let lastDraw = 0;
  const draw = (force = false) => {
    const now = Date.now();
    if (!force && now - lastDraw < 100) return;
    lastDraw = now;
    const width = Math.max(10, Math.min(40, (stream.columns ?? 80) - label.length - 30));
    let text: string;
    if (max && max > 0) {
      const ratio = Math.min(1, current / max);
      const filled = Math.round(ratio * width);
      text = `${label} [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${(ratio * 100).toFixed(0)}%`;
    } else {
      text = `${label} ${formatCount(current)}`;
    }
    stream.write(`\r\x1b[2K${text}`);
  };
  return {
    tick(delta) {
      current += delta;
      draw();
    },
    setTotal(t) {
      max = t;
      draw();
    },
    done() {
      draw(true);
      stream.write('\r\x1b[2K');
    },
  };
}

function formatCount(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  return String(n);
}
