import type { IpFamily } from '../common/ip.js';
import type { ExistingBan, Firewall } from './firewall.js';

/** An in-memory firewall for tests: records what would be in the kernel sets. */
export class MemoryFirewall implements Firewall {
  readonly name = 'memory';
  readonly elements = new Map<string, { family: IpFamily; seconds: number }>();
  readonly operations: string[] = [];
  started = false;
  /** Returned by start(), as if found in the kernel. */
  existing: ExistingBan[] = [];

  start(): Promise<readonly ExistingBan[]> {
    this.started = true;
    return Promise.resolve([...this.existing]);
  }

  ban(ip: string, family: IpFamily, seconds: number): Promise<void> {
    this.elements.set(ip, { family, seconds });
    this.operations.push(`ban ${ip} ${seconds}`);
    return Promise.resolve();
  }

  unban(ip: string): Promise<void> {
    this.elements.delete(ip);
    this.operations.push(`unban ${ip}`);
    return Promise.resolve();
  }

  stop(): Promise<void> {
    this.started = false;
    return Promise.resolve();
  }
}
