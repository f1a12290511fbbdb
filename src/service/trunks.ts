// Trunks by name: host names in the ignore list, resolved (A and AAAA) at start and every
// BAN_DNS_REFRESH, off the event path. A failed resolution keeps the host's last good addresses.
import { Resolver } from 'node:dns/promises';
import { type IpAddress, parseIp } from '../common/ip.js';
import { errorMessage } from '../errors.js';

/** A host's addresses as text; rejects when it has none (or the lookup failed). */
export type ResolveHost = (host: string) => Promise<string[]>;

/** A resolver on the given servers (`ip`, `ip:port`, `[v6]:port`), or the system's when empty. */
export function dnsResolver(servers: readonly string[], timeoutMs = 2000): ResolveHost {
  const r = new Resolver({ timeout: timeoutMs, tries: 2 });
  if (servers.length > 0) r.setServers([...servers]);
  return async (host) => {
    const [a, aaaa] = await Promise.allSettled([r.resolve4(host), r.resolve6(host)]);
    const found = [...(a.status === 'fulfilled' ? a.value : []), ...(aaaa.status === 'fulfilled' ? aaaa.value : [])];
    if (found.length > 0) return found;
    const failure = a.status === 'rejected' ? (a.reason as unknown) : aaaa.status === 'rejected' ? (aaaa.reason as unknown) : new Error('no A or AAAA record');
    throw failure instanceof Error ? failure : new Error(String(failure));
  };
}

export interface TrunkChange {
  readonly host: string;
  readonly addresses: readonly string[];
  readonly added: readonly string[];
  readonly removed: readonly string[];
}

export interface TrunkFailure {
  readonly host: string;
  readonly error: string;
  /** The last good addresses, still ignored. */
  readonly kept: readonly string[];
}

export class TrunkNames {
  private readonly known = new Map<string, readonly string[]>();

  constructor(
    private hosts: readonly string[],
    private readonly resolve: ResolveHost,
  ) {}

  get names(): readonly string[] {
    return this.hosts;
  }

  /** A new list of names (SIGHUP); the addresses of names no longer listed are forgotten. */
  setHosts(hosts: readonly string[]): void {
    this.hosts = hosts;
    for (const h of [...this.known.keys()]) if (!hosts.includes(h)) this.known.delete(h);
  }

  /** Resolves every name once; tells what changed and what failed (never throws). */
  async refresh(): Promise<{ changed: TrunkChange[]; failed: TrunkFailure[] }> {
    const changed: TrunkChange[] = [];
    const failed: TrunkFailure[] = [];
    await Promise.all(
      this.hosts.map(async (host) => {
        const before = this.known.get(host) ?? [];
        try {
          const found = (await this.resolve(host)).map((a) => parseIp(a)?.ip).filter((a): a is string => a !== undefined);
          const addresses = [...new Set(found)].sort();
          const added = addresses.filter((a) => !before.includes(a));
          const removed = before.filter((a) => !addresses.includes(a));
          if (!this.hosts.includes(host)) return;
          this.known.set(host, addresses);
          if (added.length > 0 || removed.length > 0) changed.push({ host, addresses, added, removed });
        } catch (err) {
          failed.push({ host, error: errorMessage(err), kept: before });
        }
      }),
    );
    return { changed, failed };
  }

  /** Every address the names resolved to, last good answers included. */
  addresses(): IpAddress[] {
    const out: IpAddress[] = [];
    for (const list of this.known.values()) {
      for (const a of list) {
        const p = parseIp(a);
        if (p !== null) out.push(p);
      }
    }
    return out;
  }
}
