import type { BanDecision } from './engine.js';

/** How often an address was banned before. The engine only asks; it does no I/O through this. */
export interface BanHistory {
  previousBans(ip: string): number;
  /** Called with each new ban decision, after previousBans. */
  recordBan(ban: BanDecision): void;
}

/**
 * Ban start times per address within the kept history, in memory: the service loads it from the
 * ban database at start, so asking costs no database query on the path from event to kernel.
 */
export class MemoryBanHistory implements BanHistory {
  private readonly starts = new Map<string, number[]>();

  /** keepMs: history older than this is forgotten (BAN_HISTORY_KEEP); Infinity = never. */
  constructor(
    private readonly keepMs = Number.POSITIVE_INFINITY,
    private readonly now: () => number = Date.now,
  ) {}

  /** Adds a ban that started at `at` (used when loading what the database holds). */
  add(ip: string, at: number): void {
    const list = this.starts.get(ip);
    if (list === undefined) this.starts.set(ip, [at]);
    else list.push(at);
  }

  previousBans(ip: string): number {
    const list = this.starts.get(ip);
    if (list === undefined) return 0;
    const since = this.now() - this.keepMs;
    const kept = list.filter((at) => at >= since);
    if (kept.length === 0) this.starts.delete(ip);
    else if (kept.length !== list.length) this.starts.set(ip, kept);
    return kept.length;
  }

  recordBan(ban: BanDecision): void {
    // An extension continues the ban in force: it is not another one.
    if (!ban.extendsBan) this.add(ban.ip, ban.at);
  }
}
