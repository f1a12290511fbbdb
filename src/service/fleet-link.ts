// Joins the daemon and the fleet's bus: this host's bans and manual unbans go out; the others'
// come in through this host's ignore list, own addresses and a rate cap, and are applied like
// our own. A remote decision is never published again.
import { ShardedMap } from '../common/sharded-map.js';
import type { FleetView, StatusReport } from '../control/api.js';
import type { Metrics } from '../control/metrics.js';
import type { BanDecision } from '../engine/engine.js';
import type { DecisionBus } from '../fleet/bus.js';
import type { FleetBan, FleetDecision } from '../fleet/decision.js';
import type { Logger } from '../log/logger.js';
import type { Daemon, FleetPort, RemoteBatch, RemoteDecided } from './daemon.js';

export interface FleetLinkOptions {
  readonly bus: DecisionBus;
  readonly hostId: string;
  readonly apply: boolean;
  readonly publish: boolean;
  /** Remote bans applied per second past the burst; more are refused (counted). */
  readonly rate: number;
  readonly burst: number;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly now?: () => number;
}

/** Why another host's decision is not applied here (ami2ban_fleet_rejected_total{reason}). */
export const FLEET_REFUSALS = ['ignore-list', 'self', 'too-wide', 'holds-excluded', 'unbannable', 'invalid-address', 'expired', 'rate-cap', 'malformed'] as const;

/** What the bus handed over, applied in order, a slice per loop turn. */
type Inbox =
  | { readonly kind: 'decisions'; readonly ds: readonly FleetDecision[] }
  | { readonly kind: 'snapshot'; readonly bans: readonly FleetBan[]; readonly complete: boolean; readonly first: boolean; readonly last: boolean };

/** Remote decisions applied per loop turn: a burst or a snapshot of 100 000 never stalls the loop (AMI events wait meanwhile). */
const SLICE = 250;

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class FleetLink implements FleetPort {
  private daemon: Daemon | undefined;
  private readonly now: () => number;
  private tokens: number;
  private refilledAt: number;
  private readonly applied = { ban: 0, unban: 0 };
  private readonly rejected: Record<string, number> = {};
  private lastRateWarning = 0;
  private inbox: Inbox[] = [];
  private draining = false;
  /** The snapshot's slices in the kernel (or on their way), not recorded yet. */
  private snapshotDecided: [readonly FleetBan[], RemoteDecided][] = [];

  constructor(private readonly o: FleetLinkOptions) {
    this.now = o.now ?? Date.now;
    this.tokens = o.burst;
    this.refilledAt = this.now();
  }

  prepare(): void {
    this.o.bus.prepare();
  }

  /** Starts sharing once the daemon has reconciled its own bans. */
  start(daemon: Daemon): void {
    this.daemon = daemon;
    const { bus, logger } = this.o;
    bus.on('state', (state, error) => {
      if (state === 'connected') logger.info('fleet bus connected', { server: bus.status().server, hostId: this.o.hostId });
      else if (state === 'degraded') logger.warn('fleet bus unreachable: bans stay local (and queued for the others) until it is back', { server: bus.status().server, error: error ?? '' });
    });
    bus.on('rejected', (reason) => {
      this.refuse(reason, 1);
    });
    if (this.o.apply) {
      bus.on('decisions', (ds) => {
        this.queue({ kind: 'decisions', ds });
      });
      bus.on('snapshot', (bans, complete, first, last) => {
        this.queue({ kind: 'snapshot', bans, complete, first, last });
      });
    }
    bus.on('threshold', (ip, failures) => {
      void this.fleetBan(ip, failures);
    });
    bus.start();
  }

  stop(): Promise<void> {
    return this.o.bus.stop();
  }

  // ---- FleetPort (called by the daemon) ----

  banned(d: BanDecision): void {
    if (!this.o.publish) return;
    this.o.bus.publish({ op: 'ban', ip: d.ip, until: d.until, at: d.at, origin: this.o.hostId, reason: d.reason });
  }

  unbanned(ip: string, at: number): void {
    if (this.o.publish) this.o.bus.publish({ op: 'unban', ip, at, origin: this.o.hostId });
  }

  failed(ip: string): void {
    this.o.bus.countFailures(ip, 1);
  }

  status(): StatusReport['fleet'] {
    const s = this.o.bus.status();
    return { state: s.state, hostId: s.hostId, outbox: s.outbox, lastError: s.state === 'connected' ? null : s.lastError };
  }

  view(): FleetView {
    const s = this.o.bus.status();
    const now = this.now();
    const iso = (t: number): string => new Date(t).toISOString();
    return {
      enabled: true,
      hostId: s.hostId,
      server: s.server,
      state: s.state,
      connectedSince: s.connectedSince === null ? null : iso(s.connectedSince),
      lastError: s.lastError,
      apply: this.o.apply,
      publish: this.o.publish,
      outbox: s.outbox,
      outboxDropped: s.outboxDropped,
      streamLagSeconds: s.lagMs / 1000,
      cursor: s.cursor,
      hosts: s.hosts.map((h) => ({ id: h.id, lastSeen: iso(h.lastSeen), ageSeconds: Math.max(0, Math.round((now - h.lastSeen) / 1000)) })),
      published: s.published,
      applied: { ...this.applied },
      rejected: { ...this.rejected },
      snapshots: s.snapshots,
      reconnects: s.reconnects,
      remoteBans: this.daemon?.remoteBans().length ?? 0,
    };
  }

  // ---- from the bus ----

  /** Queued in arrival order: a stream decision after a snapshot is applied after it. */
  private queue(item: Inbox): void {
    this.inbox.push(item);
    if (!this.draining) void this.drain();
  }

  private async drain(): Promise<void> {
    this.draining = true;
    try {
      for (let item = this.inbox.shift(); item !== undefined; item = this.inbox.shift()) {
        if (item.kind === 'snapshot') {
          await this.converge(item);
          continue;
        }
        // Stream decisions after a snapshot cut short (its connection lost, no new snapshot taken):
        // what it sent to the kernel is recorded first.
        // (Not awaited when there is none: the decisions go to the kernel before the loop goes on.)
        if (this.daemon !== undefined && this.snapshotDecided.length > 0) await this.recordDecided(this.daemon);
        for (let i = 0; i < item.ds.length; i += SLICE) {
          this.receive(item.ds.slice(i, i + SLICE));
          if (i + SLICE < item.ds.length) await nextTurn();
        }
      }
    } finally {
      this.draining = false;
    }
  }

  /** Stream decisions in order: the bans between two unbans go to the daemon together. */
  private receive(ds: readonly FleetDecision[]): void {
    const daemon = this.daemon;
    if (daemon === undefined) return;
    let bans: FleetBan[] = [];
    for (const d of ds) {
      if (d.op === 'ban') {
        if (this.take()) bans.push(d);
        else this.refuse('rate-cap', 1);
        continue;
      }
      this.applyBans(daemon, bans);
      bans = [];
      void daemon.applyRemoteUnban(d.ip, d.at).then((lifted) => {
        if (!lifted) return;
        this.applied.unban++;
        this.o.metrics.fleetApplied.inc({ op: 'unban' });
      });
    }
    this.applyBans(daemon, bans);
  }

  /**
   * A snapshot, one part at a time: every ban in force in the fleet is applied; after its last
   * part, when it is complete, remote bans no longer in it are lifted (unbanned while we were
   * away); when the bus lost its data, none is.
   */
  private async converge(part: Extract<Inbox, { kind: 'snapshot' }>): Promise<void> {
    const daemon = this.daemon;
    if (daemon === undefined) return;
    // One cut short before its last part: what it sent to the kernel is recorded all the same.
    if (part.first) await this.recordDecided(daemon);
    // Every slice of every part decided and sent to the kernel first (large batches), the records
    // after the last part: the kernel has the whole snapshot as soon as it can.
    for (let i = 0; i < part.bans.length; i += SLICE) {
      const slice = part.bans.slice(i, i + SLICE);
      this.snapshotDecided.push([slice, daemon.decideRemoteBans(slice)]);
      if (i + SLICE < part.bans.length) await nextTurn();
    }
    if (!part.last) return;
    const slices = this.snapshotDecided.map(([slice]) => slice);
    await this.recordDecided(daemon);
    // What the snapshot holds, gathered once its bans are in the kernel (not on their way there).
    // Sharded: one Set of 110 000 would grow by copying itself whole, a stall of tens of ms.
    const present = new ShardedMap<string, true>();
    for (const slice of slices) for (const b of slice) present.set(b.ip, true);
    let lifted = 0;
    for (const ip of part.complete ? daemon.remoteBans() : []) {
      if (present.has(ip)) continue;
      lifted++;
      void daemon.applyRemoteUnban(ip, Number.POSITIVE_INFINITY);
    }
    if (part.complete) this.o.logger.info('fleet snapshot applied', { bansInFleet: present.size, remoteLiftedHere: lifted });
    else this.o.logger.warn('fleet bus lost its data (Redis restarted empty or failed over): its bans applied, ours re-asserted, none lifted', { bansInFleet: present.size });
  }

  /** The records of the snapshot's bans sent to the kernel so far, a slice per turn. */
  private async recordDecided(daemon: Daemon): Promise<void> {
    const decided = this.snapshotDecided;
    this.snapshotDecided = [];
    for (const [slice, d] of decided) {
      this.counted(slice, daemon.recordRemoteBans(d));
      await nextTurn();
    }
  }

  private applyBans(daemon: Daemon, bans: readonly FleetBan[]): void {
    if (bans.length === 0) return;
    const r = daemon.applyRemoteBans(bans);
    // The cap bounds the bans applied: one not applied here (ignored, our own, in force already)
    // gives its token back, so that refused entries cannot use up the room of real ones.
    const notApplied = r.outcomes.reduce((n, o) => (o === 'applied' ? n : n + 1), 0);
    this.tokens = Math.min(this.o.burst, this.tokens + notApplied);
    this.counted(bans, r);
  }

  /** Counts and logs what became of a slice of remote bans; their propagation time once acknowledged. */
  private counted(bans: readonly FleetBan[], r: RemoteBatch): void {
    let applied = 0;
    for (const [i, outcome] of r.outcomes.entries()) {
      if (outcome === 'applied') applied++;
      else if (outcome !== 'unchanged') {
        const b = bans[i] as FleetBan;
        this.refuse(outcome, 1);
        if (outcome !== 'expired') this.o.logger.warn('ban from another host not applied here', { ip: b.ip, origin: b.origin, why: outcome });
      }
    }
    if (applied === 0) return;
    this.applied.ban += applied;
    this.o.metrics.fleetApplied.inc({ op: 'ban' }, applied);
    void r.acknowledged.then((ok) => {
      const now = this.now();
      for (const [i, done] of ok.entries()) if (done) this.o.metrics.fleetPropagationSeconds.observe(Math.max(0, now - (bans[i] as FleetBan).at) / 1000);
    });
  }

  /** The fleet-wide threshold chose this host to ban an address for everyone. */
  private async fleetBan(ip: string, failures: number): Promise<void> {
    const daemon = this.daemon;
    if (daemon === undefined) return;
    const r = await daemon.ban(ip, undefined, false, false, false, 'fleet');
    if (r.kind === 'banned') this.o.logger.info('fleet-wide threshold reached: banned on every host', { ip, fleetFailures: failures });
    else if (r.kind !== 'refused' || !r.message.includes('already banned')) this.o.logger.warn('fleet-wide threshold reached but not banned here', { ip, fleetFailures: failures, why: r.message });
  }

  /** Token bucket on remote bans. */
  private take(): boolean {
    const now = this.now();
    this.tokens = Math.min(this.o.burst, this.tokens + ((now - this.refilledAt) / 1000) * this.o.rate);
    this.refilledAt = now;
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }

  private refuse(reason: string, n: number): void {
    this.rejected[reason] = (this.rejected[reason] ?? 0) + n;
    this.o.metrics.fleetRejected.inc({ reason }, n);
    if (reason === 'rate-cap' && this.now() - this.lastRateWarning > 10_000) {
      this.lastRateWarning = this.now();
      this.o.logger.warn('bans from other hosts over FLEET_REMOTE_RATE: refused (counted)', { refusedSoFar: this.rejected[reason] });
    }
  }
}
