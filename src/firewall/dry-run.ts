import type { IpFamily } from '../common/ip.js';
import type { Logger } from '../log/logger.js';
import { type BanItem, type ExistingBan, type Firewall, banEach } from './firewall.js';

/** Enforces nothing: the service's ban and unban log lines are all that happens. */
export class DryRunFirewall implements Firewall {
  readonly name = 'dry-run';

  constructor(private readonly log: Logger) {}

  start(): Promise<readonly ExistingBan[]> {
    this.log.warn('firewall is dry-run: bans are logged, not enforced');
    return Promise.resolve([]);
  }

  ban(ip: string, family: IpFamily, seconds: number): Promise<void> {
    if (this.log.isDebugEnabled()) this.log.debug('dry-run: would add element', { ip, family, seconds });
    return Promise.resolve();
  }

  banMany(items: readonly BanItem[]): Promise<(string | null)[]> {
    return banEach(this, items);
  }

  ensure(ip: string, family: IpFamily, seconds: number): Promise<void> {
    return this.ban(ip, family, seconds);
  }

  unban(ip: string, family: IpFamily): Promise<void> {
    if (this.log.isDebugEnabled()) this.log.debug('dry-run: would delete element', { ip, family });
    return Promise.resolve();
  }

  stop(): Promise<void> {
    return Promise.resolve();
  }
}
