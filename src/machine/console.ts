/**
 * A machine's serial console as the host shows it. The guest writes those bytes, so they are made
 * safe for a terminal before they reach one: escape sequences (CSI, OSC, the two-byte kinds, as
 * the firmware uses to clear the screen and colour text) are dropped, carriage returns removed,
 * and every other control or invisible formatting character shown as a visible escape (`\x07`),
 * so a guest cannot retitle, move or rewrite the host's terminal. Streaming: a sequence or a
 * UTF-8 character split between two chunks is handled, and nothing grows without bound.
 *
 * `followFile` reads a log as it grows (and from the start again when it is replaced, as at the
 * machine's next start) until told the writer is gone.
 */
import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import { escapeControls } from '../errors.ts';

const ESC = '\x1b';
/** Longest escape sequence kept waiting for its end; a longer one is shown, escaped. */
const MAX_SEQUENCE = 256;
/** C0 but newline and tab, DEL, C1, and the invisible formatting characters. */
const UNSAFE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]/g;

/**
 * Where the escape sequence starting at `text[at]` (an ESC) ends: the index after it, -1 when the
 * text ends first, or 0 when it is no sequence (a lone ESC).
 */
function sequenceEnd(text: string, at: number): number {
  const kind = text[at + 1];
  if (kind === undefined) return -1;
  if (kind === '[') {
    // CSI: parameter bytes 0x30-0x3F, intermediate bytes 0x20-0x2F, one final byte 0x40-0x7E.
    let i = at + 2;
    while (i < text.length && text.charCodeAt(i) >= 0x20 && text.charCodeAt(i) <= 0x3f) i++;
    if (i === text.length) return -1;
    const c = text.charCodeAt(i);
    return c >= 0x40 && c <= 0x7e ? i + 1 : 0;
  }
  if (kind === ']' || kind === 'P' || kind === '_' || kind === '^' || kind === 'X') {
    // OSC, DCS, APC, PM, SOS: a string up to BEL or ST (ESC \).
    for (let i = at + 2; i < text.length; i++) {
      if (text[i] === '\x07') return i + 1;
      if (text[i] === ESC) return i + 1 < text.length ? (text[i + 1] === '\\' ? i + 2 : 0) : -1;
    }
    return -1;
  }
  // ESC, intermediate bytes 0x20-0x2F, one final byte 0x30-0x7E (ESC c, ESC ( B, ESC 7...).
  let i = at + 1;
  while (i < text.length && text.charCodeAt(i) >= 0x20 && text.charCodeAt(i) <= 0x2f) i++;
  if (i === text.length) return -1;
  const c = text.charCodeAt(i);
  return c >= 0x30 && c <= 0x7e ? i + 1 : 0;
}

/** Console bytes in, terminal-safe text out, chunk by chunk. */
export class ConsoleText {
  #decoder = new StringDecoder('utf8');
  #pending = '';

  push(chunk: Uint8Array): string {
    return this.#filter(this.#pending + this.#decoder.write(Buffer.from(chunk)), false);
  }

  /** What is left at the end of the stream (an unfinished sequence is shown, escaped). */
  end(): string {
    return this.#filter(this.#pending + this.#decoder.end(), true);
  }

  #filter(text: string, final: boolean): string {
    this.#pending = '';
    let out = '';
    let from = 0;
    for (let at = text.indexOf(ESC); at >= 0; at = text.indexOf(ESC, from)) {
      out += text.slice(from, at);
      const end = sequenceEnd(text, at);
      if (end > 0) {
        from = end;
      } else if (end < 0 && !final && text.length - at <= MAX_SEQUENCE) {
        this.#pending = text.slice(at);
        from = text.length;
        break;
      } else {
        out += ESC; // shown escaped below
        from = at + 1;
      }
    }
    out += text.slice(from);
    return safeText(out);
  }
}

/** Carriage returns removed, other unsafe characters escaped. */
export function safeText(text: string): string {
  return text.replace(/\r/g, '').replace(UNSAFE, (c) => escapeControls(c));
}

export interface FollowOptions {
  /** Called with each new piece of the file. */
  onData: (chunk: Buffer) => void;
  /** Whether the writer is still there; once not, the rest is read and following ends. */
  alive: () => boolean;
  /** Ends following early. */
  signal?: AbortSignal;
  /** Start at the current end instead of the beginning. */
  fromEnd?: boolean;
  intervalMs?: number;
}

/** Reads `path` as it grows, as `tail -f` does, until the writer is gone or `signal` aborts. */
export async function followFile(path: string, options: FollowOptions): Promise<void> {
  const buffer = Buffer.alloc(1 << 16);
  let fd: number | undefined;
  let offset = 0;
  let first = true;
  const open = () => {
    try {
      fd = openSync(path, 'r');
      offset = first && options.fromEnd ? fstatSync(fd).size : 0;
    } catch {
      fd = undefined;
    }
    first = false;
  };
  const drain = () => {
    if (fd === undefined) return;
    for (;;) {
      const n = readSync(fd, buffer, 0, buffer.length, offset);
      if (n <= 0) return;
      offset += n;
      options.onData(Buffer.from(buffer.subarray(0, n)));
    }
  };
  /** The file at `path` is another one than the one open (the machine started again). */
  const replaced = () => {
    if (fd === undefined) return true;
    try {
      const now = statSync(path);
      const open = fstatSync(fd);
      return now.ino !== open.ino || now.dev !== open.dev || now.size < offset;
    } catch {
      return false;
    }
  };
  try {
    open();
    for (;;) {
      const alive = options.alive();
      drain();
      if (replaced()) {
        if (fd !== undefined) closeSync(fd);
        open();
        drain();
      }
      if (!alive || options.signal?.aborted) return;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          options.signal?.removeEventListener('abort', done);
          resolve();
        };
        const timer = setTimeout(done, options.intervalMs ?? 200);
        options.signal?.addEventListener('abort', done, { once: true });
      });
    }
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
