/** How often an address was banned before; the operations work backs this with SQLite. */
export interface BanHistory {
  previousBans(ip: string): number;
  recordBan(ip: string, at: number): void;
}

export class MemoryBanHistory implements BanHistory {
  private readonly counts = new Map<string, number>();

  previousBans(ip: string): number {
    return this.counts.get(ip) ?? 0;
  }

  recordBan(ip: string): void {
    this.counts.set(ip, (this.counts.get(ip) ?? 0) + 1);
  }
}
