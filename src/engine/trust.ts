// Trust learned from real logins: an (address, account) pair that authenticated (SIP
// SuccessfulAuth) is trusted for a while, and that account's failures from that address count at a
// reduced weight, unless they come fast. Plain data the engine owns; the service persists it.
import { type Packed, timeOf } from './failures.js';

/** A trusted pair, as the service stores it and hands it back at start. */
export interface TrustedPair {
  readonly ip: string;
  readonly account: string;
  /** Epoch ms. */
  readonly until: number;
}

/** Each failure of a trusted pair counts this much (a phone with a stale password is not an attacker). */
export const TRUSTED_FAILURE_WEIGHT = 0.25;
/** Failures of a trusted pair within this many ms that are as many as maxretry count in full (guessing). */
export const TRUST_RATE_WINDOW_MS = 60_000;
/** Pairs kept at most; the least recently confirmed go first. */
const MAX_TRUSTED = 100_000;
/** A confirmation that moves the expiry by less than this is not written again. */
const REFRESH_WRITE_MS = 3_600_000;

interface Entry {
  readonly ip: string;
  readonly account: string;
  until: number;
  /** When last written out (the until then). */
  written: number;
  /** This pair's failures within findTime (packed as the failure table packs them), oldest first. */
  failures: Packed[];
}

const keyOf = (ip: string, account: string): string => `${ip}\n${account}`;
const NONE: readonly TrustedPair[] = [];

export class TrustTable {
  private readonly entries = new Map<string, Entry>();
  /** Walks entries from the oldest key (see evictOldest). */
  private oldest = this.entries.keys();
  /** Pairs per trusted address: a failure from any other address is ruled out without a key built. */
  private readonly perIp = new Map<string, number>();
  /** New or moved expiries not yet taken by the service. */
  private changed: TrustedPair[] = [];

  constructor(
    private readonly ttlMs: number,
    previous: Iterable<TrustedPair> = [],
  ) {
    for (const p of previous) this.put(keyOf(p.ip, p.account), { ip: p.ip, account: p.account, until: p.until, written: p.until, failures: [] });
  }

  /** Whether any account is trusted from this address (cheap: no key is built). */
  hasAddress(ip: string): boolean {
    return this.perIp.has(ip);
  }

  private put(key: string, e: Entry): void {
    if (!this.entries.has(key)) this.perIp.set(e.ip, (this.perIp.get(e.ip) ?? 0) + 1);
    this.entries.set(key, e);
  }

  private remove(key: string): void {
    const e = this.entries.get(key);
    if (e === undefined) return;
    this.entries.delete(key);
    const n = (this.perIp.get(e.ip) ?? 1) - 1;
    if (n <= 0) this.perIp.delete(e.ip);
    else this.perIp.set(e.ip, n);
  }

  /** Pairs read late (the database answered after the start): what this run confirmed since wins. */
  load(pairs: Iterable<TrustedPair>): void {
    for (const p of pairs) {
      const key = keyOf(p.ip, p.account);
      if (this.entries.has(key) || this.entries.size >= MAX_TRUSTED) continue;
      this.put(key, { ip: p.ip, account: p.account, until: p.until, written: p.until, failures: [] });
    }
  }

  /** A successful login of `account` from `ip`: trusted (again) for the TTL. */
  confirm(ip: string, account: string, now: number): void {
    const key = keyOf(ip, account);
    const until = now + this.ttlMs;
    const e = this.entries.get(key);
    if (e === undefined) {
      if (this.entries.size >= MAX_TRUSTED) this.evictOldest();
      this.put(key, { ip, account, until, written: until, failures: [] });
      this.changed.push({ ip, account, until });
      return;
    }
    e.until = until;
    // Most recently confirmed last: eviction takes the first.
    this.entries.delete(key);
    this.entries.set(key, e);
    if (until - e.written >= REFRESH_WRITE_MS) {
      e.written = until;
      this.changed.push({ ip, account, until });
    }
  }

  /**
   * A failure on `account` from `ip` at `now`. Returns its weighted count (the pair's failures
   * within the window × the weight) when the pair is trusted and the failures are slow; 'fast' when
   * maxretry of them came within a minute (the caller then counts them all in full: drain());
   * undefined when the pair is not trusted.
   */
  weighed(ip: string, account: string, now: number, windowStart: number, failure: Packed, maxRetry: number): number | 'fast' | undefined {
    const key = keyOf(ip, account);
    const e = this.entries.get(key);
    if (e === undefined) return undefined;
    if (e.until <= now) {
      this.remove(key);
      return undefined;
    }
    let drop = 0;
    while (drop < e.failures.length && timeOf(e.failures[drop] ?? 0) < windowStart) drop++;
    if (drop > 0) e.failures.splice(0, drop);
    e.failures.push(failure);
    let recent = 0;
    for (let i = e.failures.length - 1; i >= 0 && timeOf(e.failures[i] ?? 0) > now - TRUST_RATE_WINDOW_MS; i--) recent++;
    if (recent >= maxRetry) return 'fast';
    return e.failures.length * TRUSTED_FAILURE_WEIGHT;
  }

  /** The pair's failures in the window, which it then forgets (they banned, or count in full now). */
  drain(ip: string, account: string): Packed[] {
    const e = this.entries.get(keyOf(ip, account));
    if (e === undefined) return [];
    const out = e.failures;
    e.failures = [];
    return out;
  }

  /** Pairs trusted at `now`, for `ami2ban trust`. */
  list(now: number): TrustedPair[] {
    const out: TrustedPair[] = [];
    for (const e of this.entries.values()) if (e.until > now) out.push({ ip: e.ip, account: e.account, until: e.until });
    return out;
  }

  /** Revokes the trust of an address (every account, or one); returns the pairs revoked. */
  revoke(ip: string, account?: string): TrustedPair[] {
    const out: TrustedPair[] = [];
    for (const [key, e] of this.entries) {
      if (e.ip !== ip || (account !== undefined && e.account !== account)) continue;
      this.remove(key);
      out.push({ ip: e.ip, account: e.account, until: e.until });
    }
    return out;
  }

  /** Forgets expired pairs (the sweep). */
  prune(now: number): void {
    for (const [key, e] of this.entries) if (e.until <= now) this.remove(key);
  }

  /** The confirmations to write since the last call. */
  takeChanges(): readonly TrustedPair[] {
    if (this.changed.length === 0) return NONE;
    const out = this.changed;
    this.changed = [];
    return out;
  }

  private evictOldest(): void {
    // A walk kept from eviction to eviction: a fresh keys().next() steps over every deleted slot
    // at the front of the Map's table (O(n) each time).
    let first = this.oldest.next();
    if (first.done === true) {
      this.oldest = this.entries.keys();
      first = this.oldest.next();
    }
    if (first.done !== true) this.remove(first.value);
  }
}
