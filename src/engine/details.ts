// What each failure was (event, account, transport, time), for "why was this banned". Kept apart
// from the failure counts and bounded: a distributed scan of a million addresses must not keep a
// million objects, so only the most recent addresses have their details, and a ban whose early
// failures were pushed out says how many it kept.

/** One counted failure as explain shows it. */
export interface FailureDetail {
  /** Epoch ms. */
  readonly at: number;
  readonly event: string;
  /** AccountID, '' when none. */
  readonly account: string;
  /** UDP, TCP, TLS, WS, WSS, or '' when Asterisk did not say. */
  readonly transport: string;
}

/** How an unanswered challenge is named (the engine's UNANSWERED_EVENT). */
const UNANSWERED_EVENT = 'UnansweredChallenge';

/** Addresses whose failure details are kept; past it the least recently failing are dropped. */
const MAX_ADDRESSES = 20_000;
/** Details kept per address (the most recent). */
export const MAX_DETAILS_PER_BAN = 32;

export class FailureDetails {
  private readonly byIp = new Map<string, FailureDetail[]>();

  add(ip: string, detail: FailureDetail): void {
    let list = this.byIp.get(ip);
    if (list === undefined) {
      if (this.byIp.size >= MAX_ADDRESSES) {
        const oldest = this.byIp.keys().next();
        if (oldest.done !== true) this.byIp.delete(oldest.value);
      }
      list = [];
    } else {
      // Most recently failing last: the oldest is the first key.
      this.byIp.delete(ip);
    }
    list.push(detail);
    if (list.length > MAX_DETAILS_PER_BAN) list.shift();
    this.byIp.set(ip, list);
  }

  /**
   * The address's details of one kind (`unanswered` challenges, or the other failures) at or after
   * windowStart, oldest first; all of them are forgotten afterwards (the address was banned).
   */
  take(ip: string, windowStart: number, unanswered: boolean): FailureDetail[] {
    const list = this.byIp.get(ip);
    this.byIp.delete(ip);
    if (list === undefined) return [];
    // An unanswered challenge is known only when its timeout passes: it may come after later failures.
    return list.filter((d) => d.at >= windowStart && (d.event === UNANSWERED_EVENT) === unanswered).sort((a, b) => a.at - b.at);
  }

  delete(ip: string): void {
    this.byIp.delete(ip);
  }
}
