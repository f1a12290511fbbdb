import type { IpFamily } from '../common/ip.js';
import { errorMessage } from '../errors.js';

/** A ban found in place at start (e.g. in the kernel set), with its end. */
export interface ExistingBan {
  readonly ip: string;
  readonly family: IpFamily;
  /** Epoch ms; Infinity = permanent. */
  readonly expiresAt: number;
}

/** One ban of a banMany(): as the arguments of ban(). */
export interface BanItem {
  readonly ip: string;
  readonly family: IpFamily;
  readonly seconds: number;
  readonly replace: boolean;
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
   * Several bans, each as ban() would make it, with one promise for them all: each one's error
   * message, or null once it is in force (no promise per ban: a snapshot holds 100 000).
   */
  banMany(items: readonly BanItem[]): Promise<(string | null)[]>;
  /**
   * Puts a ban back if it is missing (e.g. its element was removed by hand); a present one is
   * left as it is. Seconds as for ban().
   */
  ensure(ip: string, family: IpFamily, seconds: number): Promise<void>;
  unban(ip: string, family: IpFamily): Promise<void>;
  /** Commits pending work; leaves the bans in place. */
  stop(): Promise<void>;
}

/** banMany() made of ban() calls, for firewalls with nothing to gain from a batch. */
export function banEach(firewall: Pick<Firewall, 'ban'>, items: readonly BanItem[]): Promise<(string | null)[]> {
  return Promise.all(
    items.map((b) =>
      firewall.ban(b.ip, b.family, b.seconds, b.replace).then(
        () => null,
        (err: unknown) => errorMessage(err),
      ),
    ),
  );
}
