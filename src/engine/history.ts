import { ShardedMap } from '../common/sharded-map.js';

/** A ban start, as the service loads it from the ban database and hands it to the engine. */
export interface BanStart {
  readonly ip: string;
  /** Epoch ms. */
  readonly startedAt: number;
}

/**
 * Ban start times per address within the kept history: plain data the engine owns. It is given
 * the starts at construction and adds its own decisions; asking costs no I/O.
 */
export class BanCounts {
  /** One start is a bare number (the common case: 100 000 remote bans are 100 000 first bans). */
  private readonly starts = new ShardedMap<string, number | number[]>();

  /** keepMs: history older than this is forgotten (BAN_HISTORY_KEEP); Infinity = never. */
  constructor(
    private readonly keepMs: number,
    previous: Iterable<BanStart> = [],
  ) {
    for (const b of previous) this.add(b.ip, b.startedAt);
  }

  add(ip: string, at: number): void {
    const list = this.starts.get(ip);
    if (list === undefined) this.starts.set(ip, at);
    else if (typeof list === 'number') this.starts.set(ip, [list, at]);
    else list.push(at);
  }

  /** Bans of this address started within the kept history before `now`. */
  count(ip: string, now: number): number {
    const list = this.starts.get(ip);
    if (list === undefined) return 0;
    const since = now - this.keepMs;
    if (typeof list === 'number') {
      if (list >= since) return 1;
      this.starts.delete(ip);
      return 0;
    }
    const kept = list.filter((at) => at >= since);
    if (kept.length === 0) this.starts.delete(ip);
    else if (kept.length !== list.length) this.starts.set(ip, kept);
    return kept.length;
  }
}
