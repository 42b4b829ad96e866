/** Exact-size reads over an async stream of chunks, without copying more than needed. */
export class ChunkReader {
  #it: AsyncIterator<Uint8Array>;
  #head: Uint8Array = new Uint8Array(0);
  #done = false;
  /** Bytes consumed so far. */
  position = 0;

  constructor(input: AsyncIterable<Uint8Array>) {
    this.#it = input[Symbol.asyncIterator]();
  }

  async #fill(): Promise<boolean> {
    while (this.#head.length === 0) {
      if (this.#done) return false;
      const next = await this.#it.next();
      if (next.done) {
        this.#done = true;
        return false;
      }
      this.#head = next.value;
    }
    return true;
  }

  /** Reads exactly n bytes, or fewer only at the end of the stream. */
  async read(n: number): Promise<Uint8Array> {
    if (n === 0) return new Uint8Array(0);
    if (!(await this.#fill())) return new Uint8Array(0);
    if (this.#head.length >= n) {
      const out = this.#head.subarray(0, n);
      this.#head = this.#head.subarray(n);
      this.position += n;
      return out;
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n && (await this.#fill())) {
      const take = Math.min(n - filled, this.#head.length);
      out.set(this.#head.subarray(0, take), filled);
      this.#head = this.#head.subarray(take);
      filled += take;
    }
    this.position += filled;
    return filled === n ? out : out.subarray(0, filled);
  }

  /** Yields the next n bytes as they arrive; stops early only at the end of the stream. */
  async *stream(n: number): AsyncGenerator<Uint8Array> {
    let left = n;
    while (left > 0 && (await this.#fill())) {
      const take = Math.min(left, this.#head.length);
      const out = this.#head.subarray(0, take);
      this.#head = this.#head.subarray(take);
      this.position += take;
      left -= take;
      yield out;
    }
  }

  async skip(n: number): Promise<number> {
    let skipped = 0;
    for await (const chunk of this.stream(n)) skipped += chunk.length;
    return skipped;
  }

  /** Drains the rest of the stream; returns how many bytes were left. */
  async drain(): Promise<number> {
    let count = 0;
    while (await this.#fill()) {
      count += this.#head.length;
      this.position += this.#head.length;
      this.#head = new Uint8Array(0);
    }
    return count;
  }
}
