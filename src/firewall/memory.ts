import type { IpFamily } from '../common/ip.js';
import { type BanItem, type ExistingBan, type Firewall, banEach } from './firewall.js';

/** An in-memory firewall for tests: records what would be in the kernel sets. */
export class MemoryFirewall implements Firewall {
  readonly name = 'memory';
  readonly elements = new Map<string, { family: IpFamily; seconds: number }>();
  readonly operations: string[] = [];
  started = false;
  /** When set, every operation fails with it (a firewall that refuses). */
  failWith: Error | undefined;
  /** When set, a ban of an element it names an error for fails with it (one element refused). */
  refuse: ((ip: string) => Error | undefined) | undefined;
  /** Returned by start(), as if found in the kernel. */
  existing: ExistingBan[] = [];

  start(): Promise<readonly ExistingBan[]> {
    this.started = true;
    return Promise.resolve([...this.existing]);
  }

  ban(ip: string, family: IpFamily, seconds: number, replace = false): Promise<void> {
    const refused = this.failWith ?? this.refuse?.(ip);
    if (refused !== undefined) return Promise.reject(refused);
    this.elements.set(ip, { family, seconds });
    this.operations.push(`ban ${ip} ${seconds}${replace ? ' replace' : ''}`);
    return Promise.resolve();
  }

  banMany(items: readonly BanItem[]): Promise<(string | null)[]> {
    return banEach(this, items);
  }

  ensure(ip: string, family: IpFamily, seconds: number): Promise<void> {
    if (this.elements.has(ip)) return Promise.resolve();
    return this.ban(ip, family, seconds);
  }

  unban(ip: string): Promise<void> {
    if (this.failWith !== undefined) return Promise.reject(this.failWith);
    this.elements.delete(ip);
    this.operations.push(`unban ${ip}`);
    return Promise.resolve();
  }

  stop(): Promise<void> {
    this.started = false;
    return Promise.resolve();
  }
}
