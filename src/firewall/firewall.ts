import type { IpFamily } from '../common/ip.js';

/** What enforces bans. Speaks only of addresses and durations. */
export interface Firewall {
  readonly name: string;
  start(): Promise<void>;
  /** Seconds; Infinity = permanent. Banning a banned address replaces its ban. */
  ban(ip: string, family: IpFamily, seconds: number): Promise<void>;
  unban(ip: string, family: IpFamily): Promise<void>;
  /** Leaves the bans in place. */
  stop(): Promise<void>;
}
