import type { IpFamily } from '../common/ip.js';

/** A ban found in place at start (e.g. in the kernel set), with its end. */
export interface ExistingBan {
  readonly ip: string;
  readonly family: IpFamily;
  /** Epoch ms; Infinity = permanent. */
  readonly expiresAt: number;
}

/** What enforces bans. Speaks only of addresses and durations. */
export interface Firewall {
  readonly name: string;
  /** Prepares enforcement and returns the bans already in force, to be adopted. */
  start(): Promise<readonly ExistingBan[]>;
  /**
   * Seconds; Infinity = permanent. `replace`: an element may be there already (the caller held a
   * ban of this address, or one just ended); it is replaced so that this timeout holds exactly.
   * Without it the element is only added (the fast path: an address never banned, or long ago).
   */
  ban(ip: string, family: IpFamily, seconds: number, replace?: boolean): Promise<void>;
  /**
   * Puts a ban back if it is missing (e.g. its element was removed by hand); a present one is
   * left as it is. Seconds as for ban().
   */
  ensure(ip: string, family: IpFamily, seconds: number): Promise<void>;
  unban(ip: string, family: IpFamily): Promise<void>;
  /** Commits pending work; leaves the bans in place. */
  stop(): Promise<void>;
}
