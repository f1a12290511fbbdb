// The running service: AMI → engine → firewall → store, reconciled at start, observable, controllable.
import type { AmiClient } from '../ami/client.js';
import type { SecurityEvent } from '../ami/security-event.js';
import { type Cidr, describeUnbannable, parseBanTarget, parseIp } from '../common/ip.js';
import { ShardedMap } from '../common/sharded-map.js';
import { DURATION_LIMIT_TEXT, PERMANENT, parseDuration } from '../config/duration.js';
import type { BackupOutcome, BanView, ControlTarget, ExplainOutcome, FleetView, ManualBanOutcome, RevokeOutcome, StatusReport, TrustView, UnbanOutcome } from '../control/api.js';
import type { Metrics } from '../control/metrics.js';
import { BAN_REASONS, type BanDecision, type BanReason, type Engine, type IgnoreReason, NO_DETAILS, NO_EVENTS, type UnbanDecision } from '../engine/engine.js';
import { errorMessage } from '../errors.js';
import type { BanItem, ExistingBan, Firewall } from '../firewall/firewall.js';
import type { Logger } from '../log/logger.js';
import type { BanStore, StoredBan } from '../store/store.js';
import { banLogFields, toEngineEvent } from './pipeline.js';
import { type Enforcer, type KernelBan, type Plan, reconcile } from './reconcile.js';
import type { SelfResult } from './self.js';
import type { TrunkNames } from './trunks.js';

/** What the daemon tells the fleet and asks of it (service/fleet-link.ts). */
export interface FleetPort {
  /** Opens the connection while the daemon starts; nothing is read or applied before start(). */
  prepare(): void;
  /** Starts sharing (after the daemon's own bans are reconciled). */
  start(daemon: Daemon): void;
  /** Publishes what is queued (bounded), then stops. */
  stop(): Promise<void>;
  /** A ban of this host to share. */
  banned(d: BanDecision): void;
  /** An operator lifted a shared ban here. */
  unbanned(ip: string, at: number): void;
  /** A failure counted here (the fleet-wide threshold). */
  failed(ip: string): void;
  status(): StatusReport['fleet'];
  view(): FleetView;
}

/** Another host's ban, checked by the bus. */
export interface RemoteBan {
  readonly ip: string;
  /** Epoch ms; Infinity = permanent. */
  readonly until: number;
  readonly at: number;
  readonly origin: string;
  readonly reason: string;
}

/** Why another host's decision was not applied here. */
export type RemoteRefusal = 'invalid-address' | 'unbannable' | 'self' | 'ignore-list' | 'too-wide' | 'holds-excluded' | 'expired';

export type RemoteResult = 'applied' | 'unchanged' | RemoteRefusal;

/** What became of a slice of remote bans, in order; `acknowledged` tells, in the same order, which are now in the kernel and durable. */
export interface RemoteBatch {
  readonly outcomes: readonly RemoteResult[];
  readonly acknowledged: Promise<readonly boolean[]>;
}

/** A remote ban decided here, on its way to the kernel (its answer is in the slice's `kernel`). */
interface PendingBan {
  readonly i: number;
  readonly d: BanDecision;
}

/** A slice of remote bans decided and sent to the kernel, its records not made yet. */
export interface RemoteDecided {
  readonly outcomes: readonly RemoteResult[];
  readonly fast: readonly PendingBan[];
  /** The kernel's answer for each of `fast`: null, or why it failed. */
  readonly kernel: Promise<readonly (string | null)[]>;
  readonly slow: readonly { readonly i: number; readonly ok: Promise<boolean> }[];
}

const OFF_FLEET: FleetView = {
  enabled: false,
  hostId: null,
  server: null,
  state: 'off',
  connectedSince: null,
  lastError: null,
  apply: false,
  publish: false,
  outbox: 0,
  outboxDropped: 0,
  streamLagSeconds: 0,
  cursor: null,
  hosts: [],
  published: { ban: 0, unban: 0 },
  applied: { ban: 0, unban: 0 },
  rejected: {},
  snapshots: 0,
  reconnects: 0,
  remoteBans: 0,
};

export interface DaemonOptions {
  readonly ami: AmiClient;
  readonly engine: Engine;
  readonly firewall: Firewall;
  readonly store: BanStore;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly version: string;
  /** How often expired bans and failures are swept, and counts logged. */
  readonly housekeepingMs?: number;
  readonly statsEveryMs?: number;
  /** Failures from an address this long after its ban was in force mean the ban is not effective. */
  readonly ineffectiveAfterMs?: number;
  /** Absolute nftables counters, when the firewall has them. */
  readonly dropped?: () => Promise<Readonly<Record<'ipv4' | 'ipv6', { packets: number; bytes: number }>>>;
  readonly now?: () => number;
  /** For start-up reconciliation: the longest ban the policy gives, and what enforces bans. */
  readonly policy: { readonly maxSeconds: number; readonly enforcer: Enforcer };
  /** The host's own addresses (BAN_IGNORESELF); absent = ignore-self off. */
  readonly self?: () => Promise<SelfResult>;
  /** How often they are read again, so that a new address is covered. */
  readonly selfRefreshMs?: number;
  /** The ignore list's addresses and CIDRs (BAN_IGNOREIP, BAN_IGNOREIP_FILE). */
  readonly ignoreIp?: readonly Cidr[];
  /** The ignore list's host names (trunks by name), and how often they are resolved again. */
  readonly trunks?: TrunkNames;
  readonly dnsRefreshMs?: number;
  /** Sharing with the other hosts; absent = no fleet. */
  readonly fleet?: FleetPort;
}

/** How long the start waits for the trunks' names before reading events without them. */
const FIRST_RESOLUTION_MS = 5000;

export interface DaemonCounters {
  events: number;
  failures: number;
  bans: number;
  unbans: number;
  firewallErrors: number;
  ignored: Partial<Record<IgnoreReason, number>>;
}

const HISTORY_PURGE_MS = 3_600_000;
const RETRY_MIN_MS = 500;
/** Milliseconds of `ban` log lines written per loop turn. */
const LOG_SLICE_MS = 3;
/** Longest a manual ban or unban waits for its database write before answering that it is not written yet. */
const ANSWER_MS = 2000;
/** How long `ami2ban backup` waits for the copy: under the control client's 10 s. */
const BACKUP_MS = 8000;
const RETRY_MAX_MS = 30_000;
const ENDED_KEEP_MS = 60_000;

/** What became of a ban decision: acknowledged only when both durable and in the kernel. */
type BanResult = { readonly ok: true } | { readonly ok: false; readonly status: 502 | 503; readonly message: string };

/**
 * The one record of a ban in force: the daemon owns ban state; the engine decides, the firewall
 * applies, the store remembers. pending: decided, not yet both in the kernel and durable;
 * enforced: acknowledged; failed: the kernel refused it (retried with backoff).
 */
interface BanRecord {
  readonly ban: StoredBan;
  outcome: 'pending' | 'enforced' | 'failed';
  /** When it was last committed to the kernel (the consistency check's clock); null before. */
  enforcedAt: number | null;
  /** When it was last put back for failures still arriving (at most once per grace period). */
  rebannedAt: number | null;
  warnedIneffective: boolean;
  retry: { readonly decision: BanDecision; delayMs: number; timer: NodeJS.Timeout } | null;
}

/** `p`'s value, or `late()` once it has taken `ms` (p goes on). */
async function within<T>(p: Promise<T>, ms: number, late: () => string): Promise<T | string> {
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    p,
    new Promise<string>((resolve) => {
      timer = setTimeout(() => {
        resolve(late());
      }, ms);
    }),
  ]);
  clearTimeout(timer);
  return outcome;
}

function newRecord(ban: StoredBan, enforcedAt: number | null): BanRecord {
  return { ban, outcome: enforcedAt === null ? 'pending' : 'enforced', enforcedAt, rebannedAt: null, warnedIneffective: false, retry: null };
}

export class Daemon implements ControlTarget {
  readonly counters: DaemonCounters = { events: 0, failures: 0, bans: 0, unbans: 0, firewallErrors: 0, ignored: {} };
  private housekeeping: NodeJS.Timeout | undefined;
  private lastStatsAt = 0;
  private lastPurgeAt = 0;
  private lastSelfAt = 0;
  private lastDnsAt = 0;
  private dnsInFlight: Promise<void> | undefined;
  /** The ignore list's addresses and CIDRs; the trunks' resolved addresses are added to them. */
  private staticIgnore: readonly Cidr[] = [];
  private selfText = '';
  private startedAt = 0;
  private firewallState: 'starting' | 'ready' | 'stopped' = 'starting';
  private readonly now: () => number;
  private readonly inFlight = new Set<Promise<void>>();
  /** The bans in force, one record each: what `list` shows (even while the store fails). */
  private readonly records = new ShardedMap<string, BanRecord>();
  /** Bans taken from the kernel at a start without the database, not recorded yet (openStore). */
  private readonly unrecorded = new Map<string, BanRecord>();
  /** What prepare() began. */
  private prepared: { readonly ready: Promise<void>; readonly kernel: Promise<readonly ExistingBan[]> } | undefined;
  /** Started without the database: openStore has its reconciliation to do. */
  private withoutStore = false;
  /** Records whose outcome is `failed`, counted as they change (observers never scan). */
  private failedCount = 0;
  /**
   * Addresses whose ban ended within ENDED_KEEP_MS, oldest first: their element may still be in
   * the kernel for a moment (its timeout started at the commit), so a new ban replaces it.
   */
  private readonly recentlyEnded = new ShardedMap<string, number>();
  /** Acknowledged bans whose log line is not written yet (a few ms' worth per loop turn). */
  private banLines: BanDecision[] = [];
  private linesScheduled: NodeJS.Immediate | undefined;
  private lastFirewallError: string | null = null;
  private ignoreEntries: readonly string[] = [];
  private readonly onEvent = (event: SecurityEvent, receivedAt: number): void => {
    this.handle(event, receivedAt);
  };

  constructor(private readonly o: DaemonOptions) {
    this.now = o.now ?? Date.now;
    this.fatal = new Promise<string>((resolve) => {
      o.ami.once('giveup', resolve);
    });
    o.metrics.bind({
      amiConnected: () => o.ami.state === 'ready',
      amiReconnects: () => o.ami.counters.reconnects,
      amiLastEventTime: () => o.ami.lastEventTime ?? null,
      activeBans: () => o.engine.activeBansByFamily(),
      trackedAddresses: () => o.engine.stats().tracked,
      evictions: () => o.engine.stats().evicted,
      unenforcedBans: () => this.failedCount,
      storeHealth: () => o.store.health(),
      dropped: async () => (o.dropped === undefined ? undefined : o.dropped()),
    });
  }

  /**
   * Begins what does not need the database — connecting to the fleet, reading this host's
   * addresses, resolving the trunks' names, making our table and reading its elements — so that it
   * overlaps the opening of the database (the CLI calls it first; start() waits for it).
   */
  prepare(): { readonly ready: Promise<void>; readonly kernel: Promise<readonly ExistingBan[]> } {
    if (this.prepared !== undefined) return this.prepared;
    this.staticIgnore = this.o.ignoreIp ?? [];
    this.o.fleet?.prepare();
    // The elements already in our sets.
    const kernel = this.o.firewall.start();
    kernel.catch(() => undefined);
    // Trunks by name are known before anything is reconciled or counted (bounded: a dead DNS
    // server delays the start by at most FIRST_RESOLUTION_MS, then they follow when resolved).
    const trunks = this.o.trunks === undefined ? undefined : Promise.race([this.refreshTrunks(), new Promise((r) => setTimeout(r, FIRST_RESOLUTION_MS).unref())]);
    const ready = Promise.all([this.refreshSelf(), trunks]).then(() => undefined);
    // (Their failures too are start()'s, not unhandled while the CLI waits for the database.)
    ready.catch(() => undefined);
    this.prepared = { ready, kernel };
    return this.prepared;
  }

  /**
   * Reconciles store, kernel and engine, then starts reading AMI. No ban lapses or doubles.
   * `withoutStore`: the database did not open in time (its disk does not answer): start without it,
   * and call openStore once it does.
   */
  async start(ignoreEntries: readonly string[] = [], options: { readonly withoutStore?: boolean } = {}): Promise<void> {
    this.ignoreEntries = ignoreEntries;
    this.startedAt = this.now();
    const { ready, kernel } = this.prepare();
    await ready;
    const { store, engine, firewall, logger } = this.o;
    // Not waited for: it is written before the reads of the start (which take only bans in force).
    void store.expireDue(this.startedAt).then(
      (n) => {
        if (n > 0) logger.info('bans that ended while ami2ban was down closed in the database', { bans: n });
      },
      // A failed write is logged by the store's error handler, and retried.
      () => undefined,
    );
    // Without its database (STATE_DIR did not answer), what the kernel holds is taken as it is, and
    // reconciled with the stored bans once the database opens (openStore).
    const deferred = options.withoutStore === true && !store.isOpen;
    this.withoutStore = deferred;
    const { stored, inKernel } = deferred ? { stored: [], inKernel: await kernel } : await this.readStateAtStart(kernel);
    this.firewallState = 'ready';
    const now = this.now();
    const plan = reconcile(stored, inKernel, { ...this.o.policy, excluded: (ip) => this.excluded(ip) }, now);
    const done = this.applyPlan(plan, now, !deferred);
    await this.idle();
    logger.info('ami2ban started', {
      version: this.o.version,
      firewall: firewall.name,
      store: deferred ? `${store.path} (not open yet: STATE_DIR does not answer)` : store.path,
      activeBans: engine.stats().activeBans,
      restoredToFirewall: done.restored,
      adoptedFromFirewall: plan.adopt.length,
      liftedAsExcluded: plan.lift.length,
    });
    // The fleet's stream position is kept in the database: it joins once that is open.
    if (!deferred) this.o.fleet?.start(this);
    this.o.ami.on('event', this.onEvent);
    this.o.ami.start();
    this.lastStatsAt = now;
    this.housekeeping = setInterval(() => {
      this.sweep();
    }, this.o.housekeepingMs ?? 1000);
    this.housekeeping.unref();
  }

  /**
   * Opens the database, gives the engine its history, and reads the stored bans on the writer
   * thread while the firewall reads the kernel (a ban expiring meanwhile is dropped by reconcile).
   */
  private async readStateAtStart(kernel: Promise<readonly ExistingBan[]>): Promise<{ stored: StoredBan[]; inKernel: readonly ExistingBan[] }> {
    const { store, engine } = this.o;
    await store.open();
    const read = this.now();
    const [starts, trusted, stored, inKernel] = await Promise.all([store.banStarts(), store.trustedPairs(read), store.activeBans(read), kernel]);
    // The engine is given the history as data; it never asks the store.
    engine.loadHistory(starts, trusted);
    return { stored, inKernel };
  }

  /**
   * After a start without the database (STATE_DIR did not answer): opens it, then reconciles what
   * it holds with what this run has done since. Throws StoreError when it cannot be opened.
   */
  async openStore(): Promise<void> {
    const { store, engine, logger } = this.o;
    // (The store may have opened by itself meanwhile: what it holds is reconciled all the same.)
    if (!this.withoutStore) return;
    await store.open();
    this.withoutStore = false;
    // This run's writes go first: an unban since the start closes its row, and a ban since then
    // is told apart by its start time.
    await this.written();
    const read = this.now();
    const [starts, trusted, active] = await Promise.all([store.banStarts(), store.trustedPairs(read), store.activeBans(read)]);
    // From here on nothing waits: what this run did and what the database holds are compared as one.
    const now = this.now();
    engine.loadHistory(
      starts.filter((b) => b.startedAt < this.startedAt),
      trusted,
    );
    const kernel: KernelBan[] = [];
    for (const [ip, r] of this.unrecorded) if (this.records.get(ip) === r) kernel.push({ ip, family: r.ban.family, expiresAt: r.ban.expiresAt });
    // A ban decided since the start has its own record: its address is this run's, not the database's.
    const taken = new Set(kernel.map((k) => k.ip));
    const stored = active.filter((s) => s.startedAt < this.startedAt && (!this.records.has(s.ip) || taken.has(s.ip)));
    this.unrecorded.clear();
    const plan = reconcile(stored, kernel, { ...this.o.policy, excluded: (ip) => this.excluded(ip) }, now);
    const done = this.applyPlan(plan, now, true);
    logger.info('the ban database answers: its bans reconciled with the kernel', {
      store: store.path,
      stored: stored.length,
      restoredToFirewall: done.restored,
      adoptedFromFirewall: plan.adopt.length,
      liftedAsExcluded: plan.lift.length,
    });
    this.o.fleet?.start(this);
  }

  /**
   * Carries out a reconciliation's plan. `record`: false while the database is not open, when
   * adopted bans are kept unrecorded (this.unrecorded) until openStore reconciles them.
   */
  private applyPlan(plan: Plan<StoredBan>, now: number, record: boolean): { restored: number } {
    const { store, engine, firewall, logger } = this.o;
    let restored = 0;
    for (const k of plan.keep) {
      const s = k.ban;
      if (k.cappedFrom !== null) logger.info('stored ban capped at the current policy', { ip: s.ip, was: new Date(k.cappedFrom).toISOString(), now: new Date(k.expiresAt).toISOString() });
      const ban: StoredBan = { ...s, expiresAt: k.expiresAt };
      if (k.apply) {
        // Lost from the kernel (host reboot, flushed ruleset), or shorter there than recorded (a
        // longer ban whose commit was cut off), or capped: put it back for what is left of it.
        const d: BanDecision = {
          type: 'ban',
          ip: s.ip,
          family: s.family,
          failures: s.failures,
          events: s.events,
          details: s.details,
          previousBans: s.previousBans,
          at: s.startedAt,
          banSeconds: (k.expiresAt - s.startedAt) / 1000,
          until: k.expiresAt,
          reason: 'manual',
          extendsBan: false,
        };
        if (engine.adopt(s.ip, k.expiresAt, now)) this.records.set(s.ip, newRecord(ban, null));
        void this.enforce(d, true).then((error) => {
          if (error !== null) this.retryLater(d, error);
          else this.restored(d.ip);
        });
        restored++;
      } else if (engine.adopt(s.ip, k.expiresAt, now)) {
        this.records.set(s.ip, newRecord(ban, now));
      }
    }
    for (const l of plan.lift) {
      logger.warn('ban lifted at start: the address is now excluded', { ip: l.ip, why: l.why });
      // Taken from the kernel at a start without the database, before this.
      if (this.records.delete(l.ip)) engine.unban(l.ip, now);
      if (l.inKernel) {
        void this.track(firewall.unban(l.ip, l.family), 'unban').catch((err: unknown) => {
          logger.error('lifting an excluded ban failed', { ip: l.ip, error: errorMessage(err) });
        });
      }
      if (l.stored !== null) store.recordUnban(l.ip, now, 'ignored');
    }
    for (const s of plan.notPromoted) {
      logger.info('ban recorded under FIREWALL=dry-run is not promoted to a kernel ban', { ip: s.ip });
      store.recordUnban(s.ip, now, 'not-promoted');
    }
    for (const ip of plan.invalid) logger.warn('kernel set element is not an address; left alone', { element: ip });
    for (const k of plan.adopt) {
      // In the kernel but unknown to the store (e.g. the database was replaced): adopt and record it.
      if (!engine.adopt(k.ip, k.expiresAt, now)) continue;
      // The history was read at open (none yet without the database).
      const previousBans = engine.previousBans(k.ip, now);
      const r = newRecord({ ip: k.ip, family: k.family, enforcer: this.o.policy.enforcer, startedAt: now, expiresAt: k.expiresAt, reason: 'adopted', failures: 0, events: NO_EVENTS, details: NO_DETAILS, previousBans, origin: null, local: false }, now);
      this.records.set(k.ip, r);
      if (!record) {
        this.unrecorded.set(k.ip, r);
        continue;
      }
      store.recordBan({
        ip: k.ip,
        family: k.family,
        at: now,
        banSeconds: k.expiresAt === PERMANENT ? PERMANENT : (k.expiresAt - now) / 1000,
        until: k.expiresAt,
        reason: 'adopted',
        failures: 0,
        events: {},
        previousBans,
      });
    }
    return { restored };
  }

  /** Stops reading AMI, commits pending firewall work, closes the store; bans stay in the kernel. */
  async stop(): Promise<void> {
    if (this.housekeeping !== undefined) clearInterval(this.housekeeping);
    this.o.ami.off('event', this.onEvent);
    this.o.ami.stop();
    await this.o.fleet?.stop();
    await this.idle();
    await this.o.firewall.stop();
    this.firewallState = 'stopped';
    this.logStats();
    this.o.store.recordTrust(this.o.engine.takeTrustChanges());
    await this.o.store.close();
    this.o.logger.info('ami2ban stopped');
  }

  /** Resolves when all firewall operations and acknowledgements started so far have finished. */
  async idle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    if (this.linesScheduled !== undefined) clearImmediate(this.linesScheduled);
    this.writeBanLines(Number.POSITIVE_INFINITY);
  }

  /** Replaces the ignore list (SIGHUP) and logs what changed; host names are resolved again. */
  setIgnoreList(cidrs: readonly Cidr[], hosts?: readonly string[]): void {
    this.staticIgnore = cidrs;
    if (hosts !== undefined && this.o.trunks !== undefined) {
      this.o.trunks.setHosts(hosts);
      void this.refreshTrunks();
    }
    const entries = cidrs.map((c) => `${c.address.ip}/${c.prefix}`);
    const before = new Set(this.ignoreEntries);
    const after = new Set(entries);
    const added = entries.filter((e) => !before.has(e));
    const removed = this.ignoreEntries.filter((e) => !after.has(e));
    this.applyIgnore();
    this.ignoreEntries = entries;
    const stillBanned = [...this.o.engine.activeBans().keys()].filter((ip) => this.o.engine.isIgnored(ip));
    this.o.logger.info('ignore list reloaded', {
      entries: entries.length,
      added: added.join(',') || '(none)',
      removed: removed.join(',') || '(none)',
      ...(stillBanned.length > 0 ? { bannedButNowIgnored: stillBanned.join(','), hint: 'use ami2ban unban to lift these' } : {}),
    });
  }

  /** Resolves with the reason when the service cannot go on (AMI gave up: AMI_GIVEUP). */
  readonly fatal: Promise<string>;

  private amiLastError(): StatusReport['ami']['lastError'] {
    const e = this.o.ami.lastError;
    return e === undefined ? null : { kind: e.kind, message: e.message, at: new Date(e.at).toISOString() };
  }

  // ---- ControlTarget ----

  status(): StatusReport {
    const s = this.o.engine.stats();
    const last = this.o.ami.lastEventTime;
    return {
      version: this.o.version,
      uptimeSeconds: Math.round((this.now() - this.startedAt) / 1000),
      ami: {
        state: this.o.ami.state,
        connected: this.o.ami.state === 'ready',
        lastEventAgeSeconds: last === undefined ? null : Math.round((this.now() - last) / 100) / 10,
        reconnects: this.o.ami.counters.reconnects,
        lastError: this.amiLastError(),
      },
      firewall: {
        backend: this.o.firewall.name,
        state: this.firewallState,
        unenforced: this.failedCount,
        errors: this.counters.firewallErrors,
        lastError: this.lastFirewallError,
      },
      store: { path: this.o.store.path, ...this.o.store.health() },
      trackedAddresses: s.tracked,
      activeBans: s.activeBans,
      counts: { events: this.counters.events, failures: this.counters.failures, bans: this.counters.bans, unbans: this.counters.unbans },
      fleet: this.o.fleet?.status() ?? null,
    };
  }

  *banPages(size: number): Generator<BanView[]> {
    let page: BanView[] = [];
    for (const r of this.records.values()) {
      const now = this.now();
      if (!this.o.engine.isBanned(r.ban.ip, now)) continue;
      page.push(this.view(r.ban, now));
      if (page.length >= size) {
        yield page;
        page = [];
      }
    }
    if (page.length > 0) yield page;
  }

  bans(): BanView[] {
    return [...this.banPages(1000)].flat();
  }

  /** `reason` fleet: the fleet-wide threshold chose this host to ban for everyone. */
  async ban(ipText: string, duration: string | undefined, force: boolean, replace = false, local = false, reason: 'manual' | 'fleet' = 'manual'): Promise<ManualBanOutcome> {
    let seconds: number | undefined;
    if (duration !== undefined) {
      const parsed = parseDuration(duration, true);
      if (parsed === 0) {
        return { kind: 'invalid', message: `a ban of "${duration}" would ban nothing: -1 bans permanently, and \`ami2ban unban\` (DELETE /v1/bans/IP) lifts a ban` };
      }
      if (parsed === null || parsed < 0) {
        return { kind: 'invalid', message: `"${duration}" is not a duration; expected e.g. 600, 90s, 10m, 1h, 1d, 1w or -1 (permanent), ${DURATION_LIMIT_TEXT}` };
      }
      seconds = parsed;
    }
    const now = this.now();
    const r = this.o.engine.ban(ipText, now, { ...(seconds === undefined ? {} : { seconds }), force, replace, reason });
    if (r.kind === 'unchanged') {
      const until = r.until === PERMANENT ? 'permanently' : `until ${new Date(r.until).toISOString()}`;
      return { kind: 'refused', message: `${ipText} is already banned ${until}, longer than asked; pass replace (--replace) to shorten it` };
    }
    if (r.kind === 'refused') {
      switch (r.reason) {
        case 'invalid-address':
          return { kind: 'invalid', message: `"${ipText}" is not an IPv4 or IPv6 address` };
        case 'unbannable':
          return { kind: 'invalid', message: describeUnbannable(ipText, r.why) };
        case 'self':
          return { kind: 'refused', message: `${ipText} is an address of this host, the AMI host or the control listener (BAN_IGNORESELF): banning it can cut ami2ban off from Asterisk and the host from itself; pass force (--force) to ban it anyway` };
        case 'ignore-list':
          return { kind: 'refused', message: `${ipText} is in the ignore list (BAN_IGNOREIP); pass force (--force) to ban it anyway` };
        case 'too-wide':
          return { kind: 'invalid', message: `${ipText} is wider than /${String(r.min)}; pass force (--force) to ban a network that wide (a /0 never)` };
        case 'holds-excluded':
          return { kind: 'refused', message: `${ipText} holds ${r.what}: a network holding an ignored or own address is never banned (ban the addresses around it instead)` };
      }
    }
    if (this.o.engine.isSelf(r.decision.ip)) {
      this.o.logger.warn('forced ban of an address of this host', { ip: r.decision.ip, consequence: 'traffic from it is dropped: AMI, the control API or the host itself may become unreachable' });
    }
    const result = await this.applyBanReplacing(r.decision, local, ANSWER_MS);
    if (!result.ok) return { kind: 'failed', status: result.status, message: result.message };
    return { kind: 'banned', ban: this.view(this.fromDecision(r.decision, local), now) };
  }

  async unban(ipText: string): Promise<UnbanOutcome> {
    const target = parseBanTarget(ipText);
    if (target === null) return { kind: 'invalid' };
    const now = this.now();
    const before = this.o.engine.activeBans().get(target.ip);
    const shared = this.records.get(target.ip)?.ban.local !== true;
    const d = this.o.engine.unban(ipText, now);
    if (d === null || before === undefined) return { kind: 'not-banned' };
    const error = await this.applyUnban(d);
    if (error === null) {
      if (shared) this.o.fleet?.unbanned(d.ip, d.at);
      // Answered once written: a restart before it would restore the ban from the database. A
      // failing store retries with backoff: the operator is told within ANSWER_MS.
      const storeError = await this.durableWithin(ANSWER_MS);
      if (storeError !== null) return { kind: 'failed', status: 503, message: `${d.ip} is lifted from the kernel, but the ban database failed (retrying the write; until it is written, a restart would ban it again): ${storeError}` };
      return { kind: 'unbanned' };
    }
    // Still blocked in the kernel: it stays banned in our view too, until it expires there.
    this.o.engine.adopt(d.ip, before.until, this.now());
    return { kind: 'failed', status: 502, message: `nftables could not remove ${d.ip}; it stays banned: ${error}` };
  }

  /** A consistent copy of the database, made on its thread (no other process may open it meanwhile). */
  async backup(): Promise<BackupOutcome> {
    const path = this.o.store.path;
    const done = await within(
      this.o.store.backup().catch((err: unknown) => errorMessage(err)),
      BACKUP_MS,
      () => `the backup of ${path} is not written after ${String(BACKUP_MS / 1000)} s (${this.o.store.health().lastError ?? 'disk slow or hung?'}); it may still complete`,
    );
    if (typeof done === 'string') return { kind: 'failed', message: done };
    this.o.logger.info('ban database backed up', { store: path, backup: done.path, bytes: done.bytes });
    return { kind: 'written', ...done };
  }

  async explain(ipText: string): Promise<ExplainOutcome> {
    const addr = parseBanTarget(ipText);
    if (addr === null) return { kind: 'invalid', message: `"${ipText}" is not an IPv4 or IPv6 address or network` };
    // Read on the database's own thread: a hung disk answers late, and never holds the event loop.
    const rows = await within(
      this.o.store.historyOf(addr.ip).catch((err: unknown) => errorMessage(err)),
      ANSWER_MS,
      () => `the ban database ${this.o.store.path} did not answer within ${String(ANSWER_MS / 1000)} s (${this.o.store.health().lastError ?? 'disk slow or hung?'})`,
    );
    if (typeof rows === 'string') return { kind: 'failed', message: rows };
    const now = this.now();
    const r = this.records.get(addr.ip);
    const inForce = r !== undefined && this.o.engine.isBanned(addr.ip, now) ? { ...this.view(r.ban, now), outcome: r.outcome } : null;
    const iso = (t: number): string => new Date(t).toISOString();
    const history = rows.map((h) => ({
      since: iso(h.startedAt),
      until: h.expiresAt === PERMANENT ? null : iso(h.expiresAt),
      rule: h.reason,
      failures: h.failures,
      events: h.events,
      failuresShown: h.details.map((f) => ({ at: iso(f.at), event: f.event, account: f.account, transport: f.transport })),
      timesBannedBefore: h.previousBans,
      ended: h.endedAt === null ? null : { at: iso(h.endedAt), why: h.endReason ?? 'ended' },
    }));
    return { kind: 'explained', ip: addr.ip, inForce, history };
  }

  async unbanAll(): Promise<number> {
    const ips = [...this.o.engine.activeBans().keys()];
    const results = await Promise.all(ips.map((ip) => this.unban(ip)));
    return results.filter((r) => r.kind === 'unbanned').length;
  }

  trusted(): TrustView[] {
    return this.o.engine.trustedPairs(this.now()).map((p) => ({ ip: p.ip, account: p.account, until: new Date(p.until).toISOString() }));
  }

  revokeTrust(ipText: string, account: string | undefined): RevokeOutcome {
    if (parseIp(ipText) === null) return { kind: 'invalid', message: `"${ipText}" is not an IP address` };
    const revoked = this.o.engine.revokeTrust(ipText, account);
    this.o.store.revokeTrust(revoked);
    for (const p of revoked) this.o.logger.info('trust revoked', { ip: p.ip, account: p.account });
    return { kind: 'revoked', revoked: revoked.map((p) => ({ ip: p.ip, account: p.account, until: new Date(p.until).toISOString() })) };
  }

  readiness(): { ready: boolean; reasons: string[] } {
    const reasons: string[] = [];
    const amiError = this.o.ami.lastError;
    if (this.o.ami.state !== 'ready') reasons.push(`AMI is ${this.o.ami.state}${amiError === undefined ? '' : ` (${amiError.kind}: ${amiError.message})`}`);
    if (this.firewallState !== 'ready') reasons.push(`firewall is ${this.firewallState}`);
    if (this.failedCount > 0) reasons.push(`${this.failedCount} ban(s) not in the kernel, retrying: ${this.lastFirewallError ?? 'nftables failed'}`);
    return { ready: reasons.length === 0, reasons };
  }

  // ---- the pipeline ----

  private handle(event: SecurityEvent, receivedAt: number): void {
    this.counters.events++;
    const { metrics, logger: log } = this.o;
    metrics.securityEvents.inc({ event: event.name, service: event.service });
    // The engine's clock is our arrival time; Asterisk's EventTV is kept for the logs only.
    const outcome = this.o.engine.observe(toEngineEvent(event), receivedAt);
    if (log.isDebugEnabled()) {
      log.debug('security event', {
        event: event.name,
        service: event.service,
        ip: event.remoteAddress?.ip ?? null,
        account: event.accountId,
        session: event.sessionId,
        eventTV: event.eventTv,
        outcome: outcome.kind === 'ignored' ? `ignored:${outcome.reason}` : outcome.kind,
      });
    }
    switch (outcome.kind) {
      case 'ignored':
        this.counters.ignored[outcome.reason] = (this.counters.ignored[outcome.reason] ?? 0) + 1;
        metrics.ignored.inc({ reason: outcome.reason });
        if (outcome.reason === 'already-banned' && event.remoteAddress !== null) {
          // Banned as itself, or inside a banned network: the check is of that ban.
          const ip = event.remoteAddress.ip;
          this.checkBan(this.records.has(ip) ? ip : (this.o.engine.bannedNetworkOf(ip, receivedAt) ?? ip), receivedAt);
        }
        return;
      case 'counted':
        this.counters.failures++;
        metrics.failures.inc();
        this.o.fleet?.failed(outcome.ip);
        return;
      case 'banned': {
        this.counters.failures++;
        metrics.failures.inc();
        this.applyInBackground(outcome.decision);
        return;
      }
    }
  }

  /** Applies a ban decided by the engine; idle() waits for it. */
  private applyInBackground(d: BanDecision): void {
    const applied = this.applyBanReplacing(d).then(() => undefined);
    this.inFlight.add(applied);
    void applied.finally(() => this.inFlight.delete(applied));
  }

  /**
   * A ban, and the bans inside it that a network's ban replaces (they end as `subnet`): narrower
   * networks go first (the kernel refuses overlapping intervals), addresses only once the network
   * is in the kernel, so that none of them goes free meanwhile; if it never gets there, their
   * elements stay and expire on their own.
   */
  private async applyBanReplacing(d: BanDecision, local = false, answerWithinMs?: number): Promise<BanResult> {
    const replaced = d.replaces ?? [];
    const lift = (u: UnbanDecision): void => {
      this.o.logger.info('ban replaced by a ban of its network', { ip: u.ip, network: d.ip });
      void this.applyUnban(u);
    };
    for (const u of replaced) if (u.ip.includes('/')) lift(u);
    const result = await this.applyBan(d, local, answerWithinMs);
    for (const u of replaced) if (result.ok && !u.ip.includes('/')) lift(u);
    return result;
  }

  /**
   * Failures still arriving well after a ban is in force (fail2ban's __checkBan): first the
   * element is put back (it may have been removed, e.g. `nft flush set`; adding a present one
   * changes nothing); if they go on after that, the ban does not work (hook, other tables).
   */
  private checkBan(ip: string, at: number): void {
    const r = this.records.get(ip);
    const grace = this.o.ineffectiveAfterMs ?? 5000;
    if (r?.enforcedAt == null || at - r.enforcedAt < grace || r.warnedIneffective || r.outcome === 'failed') return;
    if (r.rebannedAt === null || r.rebannedAt < r.enforcedAt) {
      r.rebannedAt = at;
      r.enforcedAt = at;
      this.o.metrics.rebans.inc();
      const until = r.ban.expiresAt;
      const seconds = until === PERMANENT ? PERMANENT : Math.max(1, (until - at) / 1000);
      this.o.logger.warn('failures keep arriving from a banned address: putting its ban back in the kernel', { ip });
      void this.o.firewall.ensure(ip, r.ban.family, seconds).then(
        () => undefined,
        (err: unknown) => {
          this.o.logger.error('putting a ban back failed', { ip, error: errorMessage(err) });
        },
      );
      return;
    }
    r.warnedIneffective = true;
    this.o.metrics.ineffectiveBans.inc();
    this.o.logger.warn('ban not effective: failures keep arriving from a banned address', {
      ip,
      bannedForSeconds: Math.round((at - r.enforcedAt) / 1000),
      hint: 'check that the traffic reaches our nftables chain (hook, other tables, Asterisk behind a proxy)',
    });
  }


  /** Commits a decision to the kernel and the store; logs `ban` only once both hold it. */
  /** answerWithinMs (an operator waits for the answer): a database this slow answers as failed, and the ban is acknowledged once written. */
  private async applyBan(d: BanDecision, local = false, answerWithinMs?: number): Promise<BanResult> {
    this.counters.bans++;
    this.o.metrics.bans.inc({ reason: d.reason });
    const replace = this.takeOver(d.ip);
    const record = newRecord(this.fromDecision(d, local), null);
    this.records.set(d.ip, record);
    // The kernel's transaction is queued first, so that it runs before the database's batch is handed over.
    const kernel = this.enforce(d, false, replace);
    this.o.store.recordBan(local ? { ...d, local } : d);
    // The others learn of it now; never on the way to our own kernel, never another host's again.
    if (d.origin === undefined && !local) this.o.fleet?.banned(d);
    const durable = answerWithinMs === undefined ? this.o.store.durable().then(() => null, (err: unknown) => errorMessage(err)) : this.durableWithin(answerWithinMs);
    const [kernelError, storeError] = await Promise.all([kernel, durable]);
    if (kernelError === null && storeError !== null) this.o.logger.error('ban in the kernel but not yet in the ban database (retrying the write)', { ip: d.ip, store: this.o.store.path, error: storeError });
    return this.settle(record, d, kernelError, storeError);
  }

  /** A ban replaces the address's record: its retry stops; true when its element may be in the kernel (replaced, not added). */
  private takeOver(ip: string): boolean {
    const previous = this.records.get(ip);
    this.cancelRetry(previous);
    return previous !== undefined || this.recentlyEnded.has(ip);
  }

  /** Once the kernel and the database answered: retried, acknowledged, or acknowledged when durable. */
  private settle(record: BanRecord, d: BanDecision, kernelError: string | null, storeError: string | null): BanResult {
    if (kernelError !== null) {
      this.retryLater(d, kernelError);
      return { ok: false, status: 502, message: `nftables refused the ban of ${d.ip} (retrying): ${kernelError}` };
    }
    this.inKernel(record);
    if (storeError !== null) {
      void this.acknowledgeWhenDurable(record, d);
      return { ok: false, status: 503, message: `${d.ip} is blocked in the kernel, but the ban database failed (retrying): ${storeError}` };
    }
    this.acknowledge(record, d);
    return { ok: true };
  }

  /** The kernel commit of one decision (a retry: for what is left of it); null on success, else why. */
  private async enforce(d: BanDecision, retry = false, replace = true): Promise<string | null> {
    const seconds = !retry || d.until === PERMANENT ? d.banSeconds : (d.until - this.now()) / 1000;
    try {
      await this.track(this.o.firewall.ban(d.ip, d.family, Math.max(1, seconds), replace), 'ban');
      return null;
    } catch (err) {
      return errorMessage(err);
    }
  }

  private inKernel(record: BanRecord): void {
    record.enforcedAt = this.now();
    record.warnedIneffective = false;
  }

  /** A ban restored at start is back in the kernel (it was durable already). */
  private restored(ip: string): void {
    const r = this.records.get(ip);
    if (r === undefined || r.outcome === 'failed') return;
    this.inKernel(r);
    r.outcome = 'enforced';
  }

  private acknowledge(record: BanRecord, d: BanDecision): void {
    const now = this.now();
    // (A newer decision may have replaced this record meanwhile; this one was still acknowledged.)
    if (record.outcome === 'pending') record.outcome = 'enforced';
    this.o.metrics.banLatencySeconds.observe({ reason: d.reason }, (now - d.at) / 1000);
    // A kernel or database batch completes hundreds of bans at once: their log lines are written
    // a few milliseconds' worth per loop turn, so that a burst never stalls the loop. Below the
    // level, none is made (a catch-up acknowledges 100 000 at once).
    if (!this.o.logger.isInfoEnabled()) return;
    this.banLines.push(d);
    this.linesScheduled ??= setImmediate(() => {
      this.writeBanLines(LOG_SLICE_MS);
    });
  }

  private writeBanLines(budgetMs: number): void {
    this.linesScheduled = undefined;
    const t0 = performance.now();
    let i = 0;
    while (i < this.banLines.length && performance.now() - t0 < budgetMs) {
      for (const end = Math.min(this.banLines.length, i + 16); i < end; i++) this.o.logger.info('ban', banLogFields(this.banLines[i] as BanDecision));
    }
    this.banLines = i === this.banLines.length ? [] : this.banLines.slice(i);
    if (this.banLines.length > 0) {
      this.linesScheduled = setImmediate(() => {
        this.writeBanLines(LOG_SLICE_MS);
      });
    }
  }

  private async acknowledgeWhenDurable(record: BanRecord, d: BanDecision): Promise<void> {
    await this.written();
    if (this.records.get(d.ip) === record && this.o.engine.isBanned(d.ip, this.now())) this.acknowledge(record, d);
  }

  private retryLater(d: BanDecision, error: string): void {
    const record = this.records.get(d.ip);
    if (record === undefined) return;
    const delayMs = record.retry === null ? RETRY_MIN_MS : Math.min(RETRY_MAX_MS, record.retry.delayMs * 2);
    this.o.logger.error('ban not in force: nftables failed, retrying', { ip: d.ip, error, retryInSeconds: delayMs / 1000 });
    const timer = setTimeout(() => {
      void this.retry(d);
    }, delayMs);
    timer.unref();
    if (record.outcome !== 'failed') this.failedCount++;
    record.outcome = 'failed';
    record.retry = { decision: d, delayMs, timer };
  }

  private async retry(d: BanDecision): Promise<void> {
    const record = this.records.get(d.ip);
    const active = this.o.engine.activeBans().get(d.ip);
    if (record?.retry?.decision !== d) return;
    // Lifted, replaced by a newer decision, or over: nothing left to enforce.
    if (active === undefined || active.until !== d.until || d.until <= this.now()) {
      this.cancelRetry(record);
      return;
    }
    const error = await this.enforce(d, true);
    if (this.records.get(d.ip) !== record) return;
    if (error !== null) {
      this.retryLater(d, error);
      return;
    }
    this.cancelRetry(record);
    this.inKernel(record);
    await this.acknowledgeWhenDurable(record, d);
  }

  /** Stops retrying a record's kernel commit; a failed record goes back to pending. */
  private cancelRetry(record: BanRecord | undefined): void {
    if (record?.retry == null) return;
    clearTimeout(record.retry.timer);
    record.retry = null;
    if (record.outcome === 'failed') {
      this.failedCount--;
      record.outcome = 'pending';
    }
  }

  /** The bans in force as the kernel should hold them (for a table that had to be recreated). */
  *bansInForce(): Generator<ExistingBan> {
    const now = this.now();
    for (const r of this.records.values()) {
      if (r.ban.expiresAt > now && r.outcome !== 'failed') yield { ip: r.ban.ip, family: r.ban.family, expiresAt: r.ban.expiresAt };
    }
  }

  /** Null when done, else why not. */
  private async applyUnban(d: UnbanDecision): Promise<string | null> {
    this.cancelRetry(this.records.get(d.ip));
    // An expired ban is already gone from the kernel (element timeout).
    if (d.reason !== 'expired') {
      try {
        await this.track(this.o.firewall.unban(d.ip, d.family), 'unban');
      } catch (err) {
        return errorMessage(err);
      }
    }
    this.records.delete(d.ip);
    this.recentlyEnded.delete(d.ip);
    this.recentlyEnded.set(d.ip, this.now());
    this.counters.unbans++;
    this.o.metrics.unbans.inc({ reason: d.reason });
    this.o.store.recordUnban(d.ip, d.at, d.reason);
    void this.logUnbanWhenDurable(d);
    return null;
  }

  /** null once every write queued so far is in the database; else why not, at the latest after `ms` (the writes go on). */
  private durableWithin(ms: number): Promise<string | null> {
    return within(
      this.o.store.durable().then(
        () => null,
        (err: unknown) => errorMessage(err),
      ),
      ms,
      () => `not written within ${String(ms / 1000)} s (${this.o.store.health().lastError ?? `a write to the ban database ${this.o.store.path} is still running: disk slow or hung?`})`,
    );
  }

  /** Resolves once every write queued so far is in the database, however many attempts it takes. */
  private async written(): Promise<void> {
    for (;;) {
      try {
        await this.o.store.durable();
        return;
      } catch {
        // The store retries with its own backoff; wait for its next attempt.
      }
    }
  }

  /** The `unban` line, once the lifting is written (as a `ban` line waits for its row). */
  private async logUnbanWhenDurable(d: UnbanDecision): Promise<void> {
    await this.written();
    this.o.logger.info('unban', { ip: d.ip, family: d.family, reason: d.reason });
  }

  /** Counts the outcome of a firewall operation; a failure is rethrown to the caller. */
  private track(op: Promise<void>, what: 'ban' | 'unban'): Promise<void> {
    const p = op.then(
      () => {
        this.o.metrics.firewallOperations.inc({ op: what, result: 'ok' });
      },
      (err: unknown) => {
        this.counters.firewallErrors++;
        this.lastFirewallError = errorMessage(err);
        this.o.metrics.firewallOperations.inc({ op: what, result: 'error' });
        this.o.metrics.firewallErrors.inc({ op: what });
        throw err;
      },
    );
    const settled = p.then(
      () => undefined,
      () => undefined,
    );
    this.inFlight.add(settled);
    void settled.finally(() => this.inFlight.delete(settled));
    return p;
  }

  private view(b: StoredBan, now: number): BanView {
    const permanent = b.expiresAt === PERMANENT;
    return {
      ip: b.ip,
      family: b.family,
      since: new Date(b.startedAt).toISOString(),
      expiresAt: permanent ? null : new Date(b.expiresAt).toISOString(),
      remainingSeconds: permanent ? null : Math.max(0, Math.round((b.expiresAt - now) / 1000)),
      timesBanned: b.previousBans + 1,
      reason: b.reason,
      failures: b.failures,
      events: b.events,
      origin: b.origin,
      local: b.local,
    };
  }

  private fromDecision(d: BanDecision, local = false): StoredBan {
    // The failures' details go to the database (explain reads them there), not into every ban in force.
    return {
      ip: d.ip,
      family: d.family,
      enforcer: this.o.policy.enforcer,
      startedAt: d.at,
      expiresAt: d.until,
      reason: d.reason,
      failures: d.failures,
      events: d.events,
      details: NO_DETAILS,
      previousBans: d.previousBans,
      origin: d.origin ?? null,
      local,
    };
  }

  // ---- the fleet ----

  /**
   * Other hosts' bans, a slice at a time: each through this host's ignore list and own addresses
   * (never forced; a longer ban here is kept), then as our own, but sharing one kernel batch and
   * one wait for the database, and acknowledged each (`ban` line) once both hold it.
   */
  applyRemoteBans(bans: readonly RemoteBan[]): RemoteBatch {
    return this.recordRemoteBans(this.decideRemoteBans(bans));
  }

  /**
   * The first half: decided, and on their way to the kernel (a catch-up decides every slice first,
   * so that the kernel gets the whole snapshot in a few batches while the records follow).
   */
  decideRemoteBans(bans: readonly RemoteBan[]): RemoteDecided {
    const now = this.now();
    const outcomes: RemoteResult[] = [];
    const fast: PendingBan[] = [];
    const slow: { readonly i: number; readonly ok: Promise<boolean> }[] = [];
    // The kernel's answers, one promise per run of fast bans: queued in the slice's order.
    const answers: Promise<(string | null)[]>[] = [];
    let items: BanItem[] = [];
    const send = (): void => {
      if (items.length > 0) answers.push(this.o.firewall.banMany(items));
      items = [];
    };
    for (const [i, b] of bans.entries()) {
      if (b.until <= now) {
        outcomes.push('expired');
        continue;
      }
      const reason: BanReason = (BAN_REASONS as readonly string[]).includes(b.reason) ? (b.reason as BanReason) : 'manual';
      const r = this.o.engine.ban(b.ip, now, { until: b.until, reason, origin: b.origin });
      if (r.kind !== 'banned') {
        outcomes.push(r.kind === 'unchanged' ? 'unchanged' : r.reason);
        continue;
      }
      outcomes.push('applied');
      const d = r.decision;
      if (d.replaces !== undefined && d.replaces.length > 0) {
        // A network replacing bans inside it: the careful order of applyBanReplacing, after the
        // bans decided before it.
        send();
        slow.push({ i, ok: this.applyBanReplacing(d).then((x) => x.ok) });
        continue;
      }
      items.push({ ip: d.ip, family: d.family, seconds: Math.max(1, d.banSeconds), replace: this.takeOver(d.ip) });
      fast.push({ i, d });
    }
    send();
    const kernel = Promise.all(answers).then((runs) => runs.flat());
    const decided = { outcomes, fast, kernel, slow };
    // Until its records are made, idle() waits for the kernel's answers.
    const answered = kernel.then(() => undefined);
    this.inFlight.add(answered);
    void answered.finally(() => this.inFlight.delete(answered));
    return decided;
  }

  /** The second half: records, database rows, then each acknowledged once in the kernel and durable. */
  recordRemoteBans(decided: RemoteDecided): RemoteBatch {
    const byReason = new Map<BanReason, number>();
    const records: BanRecord[] = [];
    for (const f of decided.fast) {
      this.counters.bans++;
      byReason.set(f.d.reason, (byReason.get(f.d.reason) ?? 0) + 1);
      const record = newRecord(this.fromDecision(f.d), null);
      this.records.set(f.d.ip, record);
      records.push(record);
      this.o.store.recordBan(f.d);
    }
    for (const [reason, n] of byReason) this.o.metrics.bans.inc({ reason }, n);
    const acknowledged = this.commitRemote(decided, records);
    const settled = acknowledged.then(() => undefined);
    this.inFlight.add(settled);
    void settled.finally(() => this.inFlight.delete(settled));
    return { outcomes: decided.outcomes, acknowledged };
  }

  /** One database wait for a slice of remote bans, their kernel answers; which were acknowledged. */
  private async commitRemote(decided: RemoteDecided, records: readonly BanRecord[]): Promise<boolean[]> {
    const ok = new Array<boolean>(decided.outcomes.length).fill(false);
    const stored = this.o.store.durable().then(
      () => null,
      (err: unknown) => errorMessage(err),
    );
    const kernel = await decided.kernel;
    const storeError = await stored;
    let failed = 0;
    for (const [j, error] of kernel.entries()) {
      const f = decided.fast[j] as PendingBan;
      const record = records[j] as BanRecord;
      if (this.records.get(f.d.ip) !== record) continue; // replaced or lifted meanwhile
      if (error !== null) {
        failed++;
        this.lastFirewallError = error;
      }
      ok[f.i] = this.settle(record, f.d, error, storeError).ok;
    }
    if (decided.fast.length > failed) this.o.metrics.firewallOperations.inc({ op: 'ban', result: 'ok' }, decided.fast.length - failed);
    if (failed > 0) {
      this.counters.firewallErrors += failed;
      this.o.metrics.firewallOperations.inc({ op: 'ban', result: 'error' }, failed);
      this.o.metrics.firewallErrors.inc({ op: 'ban' }, failed);
    }
    if (storeError !== null && decided.fast.length > 0) this.o.logger.error('bans of other hosts in the kernel but not yet in the ban database (retrying the write)', { bans: decided.fast.length, store: this.o.store.path, error: storeError });
    for (const s of decided.slow) ok[s.i] = await s.ok;
    return ok;
  }

  /** Another host lifted a ban: lifted here too, unless this host banned the address since (last writer wins). */
  async applyRemoteUnban(ip: string, at: number): Promise<boolean> {
    const r = this.records.get(ip);
    if (r === undefined || r.ban.startedAt > at) return false;
    const now = this.now();
    const d = this.o.engine.unban(ip, now);
    if (d === null) return false;
    const error = await this.applyUnban({ ...d, reason: 'fleet' });
    if (error === null) return true;
    this.o.engine.adopt(d.ip, r.ban.expiresAt, this.now());
    this.o.logger.error('lifting a ban the fleet lifted failed; it stays until it expires', { ip, error });
    return false;
  }

  /** Bans in force here that another host decided (a snapshot lifts those the fleet no longer has). */
  remoteBans(): string[] {
    const now = this.now();
    const out: string[] = [];
    for (const r of this.records.values()) if (r.ban.origin !== null && r.ban.expiresAt > now) out.push(r.ban.ip);
    return out;
  }

  /** This host's shared bans in force (anti-entropy re-asserts them). */
  *sharedBans(): Generator<{ ip: string; until: number; at: number; reason: string }> {
    const now = this.now();
    for (const r of this.records.values()) {
      const b = r.ban;
      if (b.origin === null && !b.local && b.expiresAt > now && r.outcome !== 'failed' && this.o.engine.isBanned(b.ip, now)) yield { ip: b.ip, until: b.expiresAt, at: b.startedAt, reason: b.reason };
    }
  }

  fleet(): FleetView {
    return this.o.fleet?.view() ?? OFF_FLEET;
  }

  /** Why an address may not be banned now (ignore list, self), or null. */
  private excluded(ip: string): string | null {
    if (this.o.engine.isSelf(ip)) return 'self (BAN_IGNORESELF)';
    if (this.o.engine.isIgnored(ip)) return 'ignore list (BAN_IGNOREIP)';
    return null;
  }

  /** The engine's ignore list: the configured one plus what the trunks' names resolve to. */
  private applyIgnore(): void {
    const resolved: Cidr[] = (this.o.trunks?.addresses() ?? []).map((a) => ({ address: a, prefix: a.family === 'ipv4' ? 32 : 128 }));
    this.o.engine.setIgnoreList([...this.staticIgnore, ...resolved]);
  }

  /** Resolves the trunks' names once (one at a time); changes are logged and applied. */
  private refreshTrunks(): Promise<void> {
    const trunks = this.o.trunks;
    if (trunks === undefined) return Promise.resolve();
    this.lastDnsAt = this.now();
    this.dnsInFlight ??= trunks
      .refresh()
      .then(({ changed, failed }) => {
        for (const c of changed) {
          this.o.logger.info('ignore-list host resolved', { host: c.host, addresses: c.addresses.join(',') || '(none)', added: c.added.join(',') || '(none)', removed: c.removed.join(',') || '(none)' });
        }
        for (const f of failed) {
          this.o.logger.warn('could not resolve an ignore-list host; its last addresses stay ignored', { host: f.host, error: f.error, kept: f.kept.join(',') || '(none)' });
        }
        if (changed.length === 0) return;
        this.applyIgnore();
        const stillBanned = [...this.o.engine.activeBans().keys()].filter((ip) => this.o.engine.isIgnored(ip));
        if (stillBanned.length > 0) this.o.logger.warn('banned addresses now ignored (a trunk by name)', { ips: stillBanned.join(','), hint: 'use ami2ban unban to lift these' });
      })
      .finally(() => {
        this.dnsInFlight = undefined;
      });
    return this.dnsInFlight;
  }

  /** Reads the host's own addresses again; a change is logged, a failure keeps the last good list. */
  private async refreshSelf(): Promise<void> {
    if (this.o.self === undefined) return;
    this.lastSelfAt = this.now();
    const r = await this.o.self();
    for (const u of r.unresolved) this.o.logger.warn('could not resolve a host of ours for ignore-self', { host: u.host, error: u.error });
    const text = r.addresses.map((a) => a.ip).sort().join(',');
    if (r.addresses.length === 0 || text === this.selfText) return;
    this.selfText = text;
    this.o.engine.setSelf(r.addresses);
    this.o.logger.info('ignore-self: own addresses never banned', { addresses: text });
  }

  private sweep(): void {
    const now = this.now();
    if (this.o.self !== undefined && now - this.lastSelfAt >= (this.o.selfRefreshMs ?? 30_000)) void this.refreshSelf();
    if (this.o.trunks !== undefined && this.dnsInFlight === undefined && now - this.lastDnsAt >= (this.o.dnsRefreshMs ?? 300_000)) void this.refreshTrunks();
    for (const d of this.o.engine.expire(now)) void this.applyUnban(d);
    for (const d of this.o.engine.challengesDue(now)) this.applyInBackground(d);
    this.recentlyEnded.deleteOldestWhile((at) => now - at >= ENDED_KEEP_MS);
    this.o.engine.prune(now);
    // Trust is not an acknowledgement: written within a sweep of the login.
    this.o.store.recordTrust(this.o.engine.takeTrustChanges());
    if (now - this.lastPurgeAt >= HISTORY_PURGE_MS) {
      this.lastPurgeAt = now;
      void this.o.store.purge(now).then(
        (n) => {
          if (n > 0) this.o.logger.info('ban history purged', { rows: n });
        },
        (err: unknown) => {
          this.o.logger.error('ban history purge not done', { store: this.o.store.path, error: errorMessage(err) });
        },
      );
    }
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
