// The running service: AMI → engine → firewall, with counts logged as it goes.
import type { AmiClient } from '../ami/client.js';
import type { SecurityEvent } from '../ami/security-event.js';
import type { BanDecision, Engine, IgnoreReason, UnbanDecision } from '../engine/engine.js';
import { errorMessage } from '../errors.js';
import type { Firewall } from '../firewall/firewall.js';
import type { Logger } from '../log/logger.js';
import { banLogFields, toEngineEvent } from './pipeline.js';

export interface DaemonOptions {
  readonly ami: AmiClient;
  readonly engine: Engine;
  readonly firewall: Firewall;
  readonly logger: Logger;
  /** How often expired bans and failures are swept, and counts logged. */
  readonly housekeepingMs?: number;
  readonly statsEveryMs?: number;
  readonly now?: () => number;
}

export interface DaemonCounters {
  events: number;
  failures: number;
  bans: number;
  unbans: number;
  firewallErrors: number;
  ignored: Partial<Record<IgnoreReason, number>>;
}

export class Daemon {
  readonly counters: DaemonCounters = { events: 0, failures: 0, bans: 0, unbans: 0, firewallErrors: 0, ignored: {} };
  private housekeeping: NodeJS.Timeout | undefined;
  private lastStatsAt = 0;
  private readonly now: () => number;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly onEvent = (event: SecurityEvent, receivedAt: number): void => {
    this.handle(event, receivedAt);
  };

  constructor(private readonly o: DaemonOptions) {
    this.now = o.now ?? Date.now;
  }

  async start(): Promise<void> {
    const existing = await this.o.firewall.start();
    const now = this.now();
    let adopted = 0;
    for (const b of existing) if (this.o.engine.adopt(b.ip, b.expiresAt, now)) adopted++;
    this.o.logger.info('ami2ban started', { firewall: this.o.firewall.name, adoptedBans: adopted });
    this.o.ami.on('event', this.onEvent);
    this.o.ami.start();
    this.lastStatsAt = this.now();
    this.housekeeping = setInterval(() => {
      this.sweep();
    }, this.o.housekeepingMs ?? 1000);
    this.housekeeping.unref();
  }

  /** Stops reading AMI, waits for firewall work in flight, leaves bans in place. */
  async stop(): Promise<void> {
    if (this.housekeeping !== undefined) clearInterval(this.housekeeping);
    this.o.ami.off('event', this.onEvent);
    this.o.ami.stop();
    await Promise.allSettled([...this.inFlight]);
    await this.o.firewall.stop();
    this.logStats();
    this.o.logger.info('ami2ban stopped');
  }

  /** Resolves when all firewall operations started so far have finished. */
  async idle(): Promise<void> {
    await Promise.allSettled([...this.inFlight]);
  }

  private handle(event: SecurityEvent, receivedAt: number): void {
    this.counters.events++;
    const log = this.o.logger;
    // The engine's clock is our arrival time; Asterisk's EventTV is kept for the logs only.
    const outcome = this.o.engine.observe(toEngineEvent(event), receivedAt);
    if (log.isDebugEnabled()) {
      log.debug('security event', {
        event: event.name,
        service: event.service,
        ip: event.remoteAddress?.ip ?? null,
        account: event.accountId,
        session: event.sessionId,
        eventTV: event.eventTime?.text ?? null,
        outcome: outcome.kind === 'ignored' ? `ignored:${outcome.reason}` : outcome.kind,
      });
    }
    switch (outcome.kind) {
      case 'ignored':
        this.counters.ignored[outcome.reason] = (this.counters.ignored[outcome.reason] ?? 0) + 1;
        return;
      case 'counted':
        this.counters.failures++;
        return;
      case 'banned':
        this.counters.failures++;
        this.applyBan(outcome.decision);
        return;
    }
  }

  applyBan(d: BanDecision): void {
    this.counters.bans++;
    this.o.logger.info('ban', banLogFields(d));
    this.track(this.o.firewall.ban(d.ip, d.family, d.banSeconds), d.ip, 'ban');
  }

  applyUnban(d: UnbanDecision): void {
    this.counters.unbans++;
    this.o.logger.info('unban', { ip: d.ip, family: d.family, reason: d.reason });
    // An expired ban is already gone from the kernel (element timeout).
    if (d.reason !== 'expired') this.track(this.o.firewall.unban(d.ip, d.family), d.ip, 'unban');
  }

  private track(op: Promise<void>, ip: string, what: string): void {
    const p = op.catch((err: unknown) => {
      this.counters.firewallErrors++;
      this.o.logger.error(`firewall ${what} failed`, { ip, error: errorMessage(err) });
    });
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  private sweep(): void {
    const now = this.now();
    for (const d of this.o.engine.expire(now)) this.applyUnban(d);
    this.o.engine.prune(now);
    if (now - this.lastStatsAt >= (this.o.statsEveryMs ?? 60_000)) {
      this.lastStatsAt = now;
      this.logStats();
    }
  }

  private logStats(): void {
    const c = this.counters;
    const a = this.o.ami.counters;
    const s = this.o.engine.stats();
    this.o.logger.info('counts', {
      amiState: this.o.ami.state,
      events: c.events,
      failures: c.failures,
      bans: c.bans,
      unbans: c.unbans,
      activeBans: s.activeBans,
      tracked: s.tracked,
      evicted: s.evicted,
      ignored: c.ignored,
      nonSecurity: a.nonSecurity,
      unknown: a.unknown,
      malformed: a.malformed,
      parserIssues: a.parserIssues,
      reconnects: a.reconnects,
      firewallErrors: c.firewallErrors,
    });
  }
}
