// A binary min-heap of (until, ip), so expiring bans costs O(log n) per ban, not a scan.

interface Entry {
  readonly until: number;
  readonly ip: string;
}

export class ExpiryQueue {
  private readonly heap: Entry[] = [];

  get size(): number {
    return this.heap.length;
  }

  push(until: number, ip: string): void {
    const h = this.heap;
    h.push({ until, ip });
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = h[parent];
      const c = h[i];
      if (p === undefined || c === undefined || p.until <= c.until) break;
      h[parent] = c;
      h[i] = p;
      i = parent;
    }
  }

  /** Removes and returns the earliest entry if it is due at `now`. */
  popDue(now: number): Entry | undefined {
    const h = this.heap;
    const top = h[0];
    if (top === undefined || top.until > now) return undefined;
    const last = h.pop();
    if (last !== undefined && h.length > 0) {
      h[0] = last;
      this.siftDown();
    }
    return top;
  }

  clear(): void {
    this.heap.length = 0;
  }

  private siftDown(): void {
    const h = this.heap;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let min = i;
      if ((h[l]?.until ?? Infinity) < (h[min]?.until ?? Infinity)) min = l;
      if ((h[r]?.until ?? Infinity) < (h[min]?.until ?? Infinity)) min = r;
      if (min === i) return;
      const a = h[i];
      const b = h[min];
      if (a === undefined || b === undefined) return;
      h[i] = b;
      h[min] = a;
      i = min;
    }
  }
}
