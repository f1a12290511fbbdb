// What each failure was, for "why was this banned". Time, event and transport live in the failure
// table's packed numbers at no cost; the account needs a string, so it is kept apart, bounded, and
// only from an address's second failure in the window on: a distributed scan of a million
// addresses failing once each keeps nothing here.

/** One counted failure as explain shows it. */
export interface FailureDetail {
  /** Epoch ms. */
  readonly at: number;
  readonly event: string;
  /** AccountID; '' when none, or not kept (an address's first failure). */
  readonly account: string;
  /** UDP, TCP, TLS, WS, WSS, or '' when Asterisk did not say. */
  readonly transport: string;
}

/** Addresses whose accounts are kept; past it the least recently failing are dropped. */
const MAX_ADDRESSES = 20_000;
/** Failures whose details a ban carries (the most recent). */
export const MAX_DETAILS_PER_BAN = 32;

interface Noted {
  readonly at: number;
  readonly event: number;
  readonly account: string;
}

export class FailureAccounts {
  private readonly byIp = new Map<string, Noted[]>();
  /**
   * Walks byIp from its oldest key. A fresh `keys().next()` steps over every deleted slot at the
   * front of the Map's table first: O(n) per eviction (5.9 s against 0.3 s for 400 000 notes).
   */
  private oldest = this.byIp.keys();

  constructor(private readonly maxAddresses = MAX_ADDRESSES) {}

  note(ip: string, at: number, event: number, account: string): void {
    let list = this.byIp.get(ip);
    if (list === undefined) {
      if (this.byIp.size >= this.maxAddresses) this.evictOldest();
      list = [];
    } else {
      // Most recently failing last: the oldest is the first key.
      this.byIp.delete(ip);
    }
    list.push({ at, event, account });
    if (list.length > MAX_DETAILS_PER_BAN) list.shift();
    this.byIp.set(ip, list);
  }

  private evictOldest(): void {
    let first = this.oldest.next();
    // Every key before the walk's position was evicted; if it still ran out, start it again.
    if (first.done === true) {
      this.oldest = this.byIp.keys();
      first = this.oldest.next();
    }
    if (first.done !== true) this.byIp.delete(first.value);
  }

  /** The account noted for the failure at `at` with this event, or ''. */
  accountOf(list: readonly Noted[], at: number, event: number): string {
    for (const n of list) if (n.at === at && n.event === event) return n.account;
    return '';
  }

  /** What was noted for the address; forgotten afterwards (it was banned). */
  take(ip: string): readonly Noted[] {
    const list = this.byIp.get(ip) ?? [];
    this.byIp.delete(ip);
    return list;
  }
}
