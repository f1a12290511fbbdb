// Prometheus metrics; the names are a stable interface for operators' dashboards.
import client from 'prom-client';

export interface MetricSources {
  amiConnected(): boolean;
  amiReconnects(): number;
  /** When the last AMI message arrived (epoch ms), or null. */
  amiLastEventTime(): number | null;
  activeBans(): Readonly<Record<'ipv4' | 'ipv6', number>>;
  trackedAddresses(): number;
  /** Addresses evicted from the failure table since start (BAN_MAX_TRACKED reached). */
  evictions(): number;
  unenforcedBans(): number;
  storeHealth(): { readonly healthy: boolean; readonly pending: number };
  /** Absolute nftables counter values, or undefined when there are none (dry-run). */
  dropped(): Promise<Readonly<Record<'ipv4' | 'ipv6', { packets: number; bytes: number }>> | undefined>;
  /** The fleet's bus; null when the fleet is off. */
  fleet?(): FleetMetricSource | null;
}

export interface FleetMetricSource {
  readonly connected: boolean;
  readonly outbox: number;
  readonly outboxDropped: number;
  readonly lagMs: number;
  readonly snapshots: number;
  readonly published: { readonly ban: number; readonly unban: number };
}

/** A counter that follows a total kept elsewhere (read at each scrape). */
function following(counter: client.Counter, labels: Record<string, string>, seen: Map<string, number>, total: number): void {
  const key = JSON.stringify(labels);
  const before = seen.get(key) ?? 0;
  if (total > before) counter.inc(labels, total - before);
  seen.set(key, Math.max(before, total));
}

const FAMILIES = ['ipv4', 'ipv6'] as const;

export interface MetricsOptions {
  /** For ami2ban_build_info. */
  readonly version?: string;
  /** Every label value known in advance: those counters are exported at 0 from the start. */
  readonly banReasons?: readonly string[];
  readonly unbanReasons?: readonly string[];
  readonly ignoreReasons?: readonly string[];
  /** Why another host's decision may be refused (ami2ban_fleet_rejected_total). */
  readonly fleetRefusals?: readonly string[];
  /** BAN_MAX_TRACKED, exported so that alerts can compare the tracked addresses with it. */
  readonly maxTracked?: number;
}

/** prom-client defaults that break the naming rules (`_total` on gauges); `promtool check metrics` stays clean. */
const NONCONFORMING_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export class Metrics {
  readonly registry = new client.Registry();
  readonly securityEvents: client.Counter<'event' | 'service'>;
  readonly failures: client.Counter;
  readonly ignored: client.Counter<'reason'>;
  readonly bans: client.Counter<'reason'>;
  readonly unbans: client.Counter<'reason'>;
  readonly firewallOperations: client.Counter<'op' | 'result'>;
  readonly firewallBatchSeconds: client.Histogram;
  readonly banLatencySeconds: client.Histogram<'reason'>;
  readonly ineffectiveBans: client.Counter;
  readonly firewallErrors: client.Counter<'op'>;
  readonly rebans: client.Counter;
  readonly fleetApplied: client.Counter<'op'>;
  readonly fleetRejected: client.Counter<'reason'>;
  readonly fleetPropagationSeconds: client.Histogram;
  private sources: MetricSources | undefined;

  constructor(options: MetricsOptions = {}) {
    const registers = [this.registry];
    client.collectDefaultMetrics({ register: this.registry });
    for (const name of NONCONFORMING_DEFAULTS) this.registry.removeSingleMetric(name);
    const self = (): MetricSources | undefined => this.sources;
    new client.Gauge({
      name: 'ami2ban_build_info',
      help: 'always 1; the version of ami2ban and of Node.js as labels',
      labelNames: ['version', 'node'],
      registers,
    }).set({ version: options.version ?? 'unknown', node: process.version }, 1);

    new client.Gauge({
      name: 'ami2ban_ami_connected',
      help: '1 when logged in to AMI and receiving security events',
      registers,
      collect() {
        this.set(self()?.amiConnected() === true ? 1 : 0);
      },
    });
    let reconnectsSeen = 0;
    new client.Counter({
      name: 'ami2ban_ami_reconnects_total',
      help: 'AMI reconnection attempts',
      registers,
      collect() {
        const n = self()?.amiReconnects() ?? 0;
        if (n > reconnectsSeen) this.inc(n - reconnectsSeen);
        reconnectsSeen = Math.max(reconnectsSeen, n);
      },
    });
    new client.Gauge({
      name: 'ami2ban_ami_last_event_timestamp_seconds',
      help: 'when the last AMI message arrived (unix time; 0 before the first): alert on time() minus it',
      registers,
      collect() {
        this.set((self()?.amiLastEventTime() ?? 0) / 1000);
      },
    });
    this.securityEvents = new client.Counter({
      name: 'ami2ban_security_events_total',
      help: 'security events received, by event and service',
      labelNames: ['event', 'service'],
      registers,
    });
    this.failures = new client.Counter({ name: 'ami2ban_failures_total', help: 'failures counted by the engine', registers });
    this.ignored = new client.Counter({
      name: 'ami2ban_ignored_total',
      help: 'security events not counted, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.bans = new client.Counter({ name: 'ami2ban_bans_total', help: 'bans, by reason', labelNames: ['reason'], registers });
    this.unbans = new client.Counter({ name: 'ami2ban_unbans_total', help: 'unbans, by reason', labelNames: ['reason'], registers });
    // At 0 from the start, so that increase() sees the first one.
    for (const reason of options.banReasons ?? []) this.bans.inc({ reason }, 0);
    for (const reason of options.unbanReasons ?? []) this.unbans.inc({ reason }, 0);
    for (const reason of options.ignoreReasons ?? []) this.ignored.inc({ reason }, 0);
    new client.Gauge({
      name: 'ami2ban_active_bans',
      help: 'bans in force, by address family',
      labelNames: ['family'],
      registers,
      collect() {
        const a = self()?.activeBans();
        for (const f of FAMILIES) this.set({ family: f }, a?.[f] ?? 0);
      },
    });
    new client.Gauge({
      name: 'ami2ban_tracked_addresses',
      help: 'addresses with pending failures',
      registers,
      collect() {
        this.set(self()?.trackedAddresses() ?? 0);
      },
    });
    new client.Gauge({
      name: 'ami2ban_max_tracked_addresses',
      help: 'BAN_MAX_TRACKED: past it the oldest tracked address is evicted',
      registers,
    }).set(options.maxTracked ?? 0);
    let evictionsSeen = 0;
    new client.Counter({
      name: 'ami2ban_evictions_total',
      help: 'tracked addresses evicted (oldest first) because BAN_MAX_TRACKED was reached',
      registers,
      collect() {
        const n = self()?.evictions() ?? 0;
        this.inc(Math.max(0, n - evictionsSeen));
        evictionsSeen = Math.max(evictionsSeen, n);
      },
    });
    this.fleetApplied = new client.Counter({ name: 'ami2ban_fleet_applied_total', help: "other hosts' decisions applied here, by operation", labelNames: ['op'], registers });
    this.fleetRejected = new client.Counter({
      name: 'ami2ban_fleet_rejected_total',
      help: "other hosts' decisions not applied here, by reason (ignore list, self, rate cap, malformed entry, …)",
      labelNames: ['reason'],
      registers,
    });
    this.fleetPropagationSeconds = new client.Histogram({
      name: 'ami2ban_fleet_propagation_seconds',
      help: "from another host's ban decision to the ban in this host's kernel and database",
      buckets: [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    for (const op of ['ban', 'unban']) this.fleetApplied.inc({ op }, 0);
    for (const reason of options.fleetRefusals ?? []) this.fleetRejected.inc({ reason }, 0);
    const fleetSeen = new Map<string, number>();
    const snapshotsSeen = new Map<string, number>();
    const droppedSeen = new Map<string, number>();
    new client.Gauge({
      name: 'ami2ban_fleet_connected',
      help: '1 when the fleet bus (Redis) is connected; 0 when degraded (bans stay local) or the fleet is off',
      registers,
      collect() {
        this.set(self()?.fleet?.()?.connected === true ? 1 : 0);
      },
    });
    new client.Gauge({
      name: 'ami2ban_fleet_outbox',
      help: 'decisions of this host waiting to be published (Redis unreachable)',
      registers,
      collect() {
        this.set(self()?.fleet?.()?.outbox ?? 0);
      },
    });
    new client.Gauge({
      name: 'ami2ban_fleet_stream_lag_seconds',
      help: "how far this host's reading of the fleet's stream is behind its newest entry",
      registers,
      collect() {
        this.set((self()?.fleet?.()?.lagMs ?? 0) / 1000);
      },
    });
    const published = new client.Counter({
      name: 'ami2ban_fleet_published_total',
      help: 'decisions of this host published to the fleet, by operation',
      labelNames: ['op'],
      registers,
      collect() {
        const f = self()?.fleet?.();
        for (const op of ['ban', 'unban'] as const) following(this, { op }, fleetSeen, f?.published[op] ?? 0);
      },
    });
    for (const op of ['ban', 'unban']) published.inc({ op }, 0);
    new client.Counter({
      name: 'ami2ban_fleet_snapshots_total',
      help: 'catch-ups from the snapshot of the bans in force (at start, or after missing trimmed stream entries)',
      registers,
      collect() {
        following(this, {}, snapshotsSeen, self()?.fleet?.()?.snapshots ?? 0);
      },
    });
    new client.Counter({
      name: 'ami2ban_fleet_outbox_dropped_total',
      help: 'decisions dropped from a full outbox while Redis was unreachable (bans among them are re-published by anti-entropy)',
      registers,
      collect() {
        following(this, {}, droppedSeen, self()?.fleet?.()?.outboxDropped ?? 0);
      },
    });
    this.firewallOperations = new client.Counter({
      name: 'ami2ban_firewall_operations_total',
      help: 'firewall operations, by operation and result',
      labelNames: ['op', 'result'],
      registers,
    });
    this.firewallBatchSeconds = new client.Histogram({
      name: 'ami2ban_firewall_batch_seconds',
      help: 'time to commit one nftables transaction',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.banLatencySeconds = new client.Histogram({
      name: 'ami2ban_ban_latency_seconds',
      help: 'from the decision (the event that crossed the threshold, or the API request) to the ban acknowledged: in the kernel and durable; by reason',
      labelNames: ['reason'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers,
    });
    for (const reason of options.banReasons ?? []) this.banLatencySeconds.zero({ reason });
    this.firewallErrors = new client.Counter({
      name: 'ami2ban_firewall_errors_total',
      help: 'failed kernel operations (each is retried), by operation',
      labelNames: ['op'],
      registers,
    });
    for (const op of ['ban', 'unban']) {
      this.firewallErrors.inc({ op }, 0);
      for (const result of ['ok', 'error']) this.firewallOperations.inc({ op, result }, 0);
    }
    this.rebans = new client.Counter({
      name: 'ami2ban_rebans_total',
      help: 'bans put back in the kernel because failures kept arriving from an address banned there (element lost, e.g. nft flush set)',
      registers,
    });
    new client.Gauge({
      name: 'ami2ban_unenforced_bans',
      help: 'bans decided but not in the kernel, being retried',
      registers,
      collect() {
        this.set(self()?.unenforcedBans() ?? 0);
      },
    });
    new client.Gauge({
      name: 'ami2ban_store_healthy',
      help: '1 when the last write to the ban database succeeded',
      registers,
      collect() {
        this.set(self()?.storeHealth().healthy === false ? 0 : 1);
      },
    });
    new client.Gauge({
      name: 'ami2ban_store_pending_writes',
      help: 'bans waiting to be written to the ban database',
      registers,
      collect() {
        this.set(self()?.storeHealth().pending ?? 0);
      },
    });
    this.ineffectiveBans = new client.Counter({
      name: 'ami2ban_ineffective_bans_total',
      help: 'addresses whose failures kept arriving after their ban was in force (once per ban)',
      registers,
    });
    const packets = new client.Counter({
      name: 'ami2ban_dropped_packets_total',
      help: 'packets from banned addresses dropped or rejected (nftables counters)',
      labelNames: ['family'],
      registers,
    });
    const bytes = new client.Counter({
      name: 'ami2ban_dropped_bytes_total',
      help: 'bytes from banned addresses dropped or rejected (nftables counters)',
      labelNames: ['family'],
      registers,
    });
    // The kernel counters are absolute and reset when the table is recreated: add what is new.
    const seen = { ipv4: { packets: 0, bytes: 0 }, ipv6: { packets: 0, bytes: 0 } };
    const advance = (c: client.Counter<'family'>, family: 'ipv4' | 'ipv6', key: 'packets' | 'bytes', value: number): void => {
      const delta = value >= seen[family][key] ? value - seen[family][key] : value;
      if (delta > 0) c.inc({ family }, delta);
      else c.inc({ family }, 0);
      seen[family][key] = value;
    };
    this.refreshDropped = async (): Promise<void> => {
      const d = await self()?.dropped();
      for (const f of FAMILIES) {
        advance(packets, f, 'packets', d?.[f].packets ?? seen[f].packets);
        advance(bytes, f, 'bytes', d?.[f].bytes ?? seen[f].bytes);
      }
    };
  }

  private readonly refreshDropped: () => Promise<void>;

  bind(sources: MetricSources): void {
    this.sources = { ...sources, ...(this.fleetSource === undefined ? {} : { fleet: this.fleetSource }) };
  }

  private fleetSource: (() => FleetMetricSource | null) | undefined;

  /** The fleet's figures (bound before or after the daemon's). */
  bindFleet(source: () => FleetMetricSource | null): void {
    this.fleetSource = source;
    if (this.sources !== undefined) this.sources = { ...this.sources, fleet: source };
  }

  /** The text exposition, with the kernel counters read fresh. */
  async render(): Promise<{ contentType: string; body: string }> {
    try {
      await this.refreshDropped();
    } catch {
      // the counters stay at their last values; the scrape still answers
    }
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
