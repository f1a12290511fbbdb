import type { BanDecision } from './engine.js';

/** How often an address was banned before; the daemon backs it with SQLite (src/store). */
export interface BanHistory {
  previousBans(ip: string): number;
  /** Called with each new ban decision, after previousBans. */
  recordBan(ban: BanDecision): void;
}

export class MemoryBanHistory implements BanHistory {
  private readonly counts = new Map<string, number>();

  previousBans(ip: string): number {
    return this.counts.get(ip) ?? 0;
  }

  recordBan(ban: BanDecision): void {
    if (ban.extendsBan) return;
    this.counts.set(ban.ip, (this.counts.get(ban.ip) ?? 0) + 1);
  }
}
