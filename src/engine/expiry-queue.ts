// A binary min-heap of (until, ip), so expiring bans costs O(log n) per ban, not a scan. Kept as two
// parallel arrays (the times unboxed): no object per ban, which a catch-up of 100 000 bans would
// otherwise allocate and the young generation copy.

interface Entry {
  readonly until: number;
  readonly ip: string;
}

export class ExpiryQueue {
  private readonly untils: number[] = [];
  private readonly ips: string[] = [];

  get size(): number {
    return this.untils.length;
  }

  push(until: number, ip: string): void {
    const u = this.untils;
    const s = this.ips;
    let i = u.length;
    u.push(until);
    s.push(ip);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const pu = u[parent] ?? 0;
      if (pu <= until) break;
      u[i] = pu;
      s[i] = s[parent] ?? '';
      i = parent;
    }
    u[i] = until;
    s[i] = ip;
  }

  /** Removes and returns the earliest entry if it is due at `now`. */
  popDue(now: number): Entry | undefined {
    const u = this.untils;
    const s = this.ips;
    const until = u[0];
    if (until === undefined || until > now) return undefined;
    const top = { until, ip: s[0] ?? '' };
    const lastUntil = u.pop() ?? 0;
    const lastIp = s.pop() ?? '';
    if (u.length > 0) this.siftDown(lastUntil, lastIp);
    return top;
  }

  clear(): void {
    this.untils.length = 0;
    this.ips.length = 0;
  }

  /** Puts (until, ip) at the root's place and moves it down to where it belongs. */
  private siftDown(until: number, ip: string): void {
    const u = this.untils;
    const s = this.ips;
    const n = u.length;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const lu = u[l] ?? 0;
      const ru = r < n ? (u[r] ?? 0) : Number.POSITIVE_INFINITY;
      const min = ru < lu ? r : l;
      const mu = ru < lu ? ru : lu;
      if (until <= mu) break;
      u[i] = mu;
      s[i] = s[min] ?? '';
      i = min;
    }
    u[i] = until;
    s[i] = ip;
  }
}
