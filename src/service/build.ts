// Builds the daemon's parts from a Config.
import { tcpQuickAck } from '@ami2ban/nftables-napi';
import { AsteriskManagerConnector } from '../ami/asterisk-manager-connector.js';
import { AmiClient } from '../ami/client.js';
import type { AmiConnector } from '../ami/connector.js';
import type { Config } from '../config/config.js';
import { Metrics } from '../control/metrics.js';
import { BAN_REASONS, Engine, IGNORE_REASONS, UNBAN_REASONS } from '../engine/engine.js';
import { DryRunFirewall } from '../firewall/dry-run.js';
import type { ExistingBan, Firewall } from '../firewall/firewall.js';
import { NftablesFirewall } from '../firewall/nftables.js';
import { type NftRunner, chooseRunner } from '../firewall/runner.js';
import type { Logger } from '../log/logger.js';
import { BanStore } from '../store/store.js';
import { RedisDecisionBus } from '../fleet/redis-bus.js';
import { Daemon } from './daemon.js';
import { FLEET_REFUSALS, FleetLink } from './fleet-link.js';
import { type ResolveHost, TrunkNames, dnsResolver } from './trunks.js';
import { selfAddresses } from './self.js';

export interface BuildOverrides {
  readonly connector?: AmiConnector;
  readonly firewall?: Firewall;
  readonly runner?: NftRunner;
  readonly resolveHost?: ResolveHost;
}

export function buildFirewall(
  config: Config,
  logger: Logger,
  metrics: Metrics | undefined,
  runner?: NftRunner,
  bansInForce?: () => Iterable<ExistingBan>,
): Firewall {
  const log = logger.child({ component: 'firewall' });
  if (config.firewall === 'dry-run') return new DryRunFirewall(log);
  let chosen = runner;
  let observerRunner: NftRunner | undefined;
  if (chosen === undefined) {
    const c = chooseRunner(config.nftables.backend);
    chosen = c.runner;
    observerRunner = chooseRunner(config.nftables.backend).runner;
    log.info('nftables backend chosen', { backend: c.runner.backend, reason: c.reason });
  }
  return new NftablesFirewall({
    table: config.nftables.table,
    blockType: config.nftables.blockType,
    ports: config.nftables.ports,
    cleanupOnExit: config.nftables.cleanupOnExit,
    checkIntervalMs: config.nftables.checkInterval * 1000,
    runner: chosen,
    ...(observerRunner === undefined ? {} : { observerRunner }),
    logger: log,
    ...(bansInForce === undefined ? {} : { bansInForce }),
    ...(metrics === undefined ? {} : { onTransaction: (seconds: number) => { metrics.firewallBatchSeconds.observe(seconds); } }),
  });
}

export interface Built {
  readonly daemon: Daemon;
  readonly metrics: Metrics;
  /** Not open yet: Daemon.start opens it (the CLI opens it first, to know whether its disk answers). */
  readonly store: BanStore;
}

/** Throws FirewallError (no usable nftables backend) with a clear message; the database opens at start. */
export function buildDaemon(config: Config, logger: Logger, version: string, overrides: BuildOverrides = {}): Built {
  const store = new BanStore(config.stateDir, {
    historyKeepMs: config.ban.historyKeep * 1000,
    onWriteError: (err) => {
      logger.error('ban database write failed', { error: err.message });
    },
    enforcer: config.firewall,
  });
  const metrics = new Metrics({ version, banReasons: BAN_REASONS, unbanReasons: UNBAN_REASONS, ignoreReasons: IGNORE_REASONS, fleetRefusals: FLEET_REFUSALS, maxTracked: config.ban.maxTracked });
  const ami = new AmiClient({
    target: {
      host: config.ami.host,
      port: config.ami.port,
      username: config.ami.username,
      secret: config.ami.secret.reveal(),
    },
    connector: overrides.connector ?? new AsteriskManagerConnector({ quickAck: tcpQuickAck() }),
    logger: logger.child({ component: 'ami' }),
    pingIntervalMs: config.ami.pingInterval * 1000,
    pingTimeoutMs: config.ami.pingTimeout * 1000,
    reconnectMaxMs: config.ami.reconnectMax * 1000,
    connectTimeoutMs: config.ami.connectTimeout * 1000,
    giveUpMs: config.ami.giveUp * 1000,
  });
  let firewall: Firewall;
  // Filled once the daemon exists: the firewall and the fleet ask it for the bans in force.
  const owner: { daemon?: Daemon } = {};
  try {
    // The daemon owns the bans in force; the firewall asks it when its table must be rebuilt.
    firewall = overrides.firewall ?? buildFirewall(config, logger, metrics, overrides.runner, () => owner.daemon?.bansInForce() ?? []);
  } catch (err) {
    void store.close();
    throw err;
  }
  // The engine is given the history as data when the store opens (Daemon.start or openStore), and
  // never asks the store.
  const engine = new Engine(config.ban);
  const dropped = firewall instanceof NftablesFirewall ? () => firewall.counters() : undefined;
  const listen = config.control.listen;
  const self = config.ban.ignoreSelf
    ? () => selfAddresses({ amiHost: config.ami.host, ...(listen.kind === 'tcp' ? { controlHost: listen.host } : {}) })
    : undefined;
  const fleet = buildFleet(config, logger, metrics, store, () => owner.daemon);
  const b = config.ban;
  // The longest ban this policy gives: stored automatic bans are capped at it on restart.
  const maxSeconds = b.banTime === Number.POSITIVE_INFINITY ? b.banTime : b.increment ? Math.max(b.banTime, b.maxTime + b.rndTime) : b.banTime;
  const daemon = new Daemon({
    policy: { maxSeconds, enforcer: config.firewall },
    ami,
    engine,
    firewall,
    store,
    metrics,
    logger,
    version,
    ...(dropped === undefined ? {} : { dropped }),
    ...(self === undefined ? {} : { self }),
    ignoreIp: config.ban.ignoreIp,
    // Always there, so that a host name added on SIGHUP is resolved too.
    trunks: new TrunkNames(config.ban.ignoreHosts, overrides.resolveHost ?? dnsResolver(config.ban.dnsServers)),
    dnsRefreshMs: config.ban.dnsRefresh * 1000,
    ...(fleet === undefined ? {} : { fleet }),
  });
  owner.daemon = daemon;
  return { daemon, metrics, store };
}

const CURSOR_KEY = 'fleet.cursor';

/** The fleet's bus on Redis and its link to the daemon; undefined when FLEET_REDIS_URL is not set. */
function buildFleet(config: Config, logger: Logger, metrics: Metrics, store: BanStore, daemon: () => Daemon | undefined): FleetLink | undefined {
  const f = config.fleet;
  if (f === undefined) return undefined;
  const log = logger.child({ component: 'fleet' });
  const bus = new RedisDecisionBus({
    url: f.url,
    ...(f.password === undefined ? {} : { password: f.password.reveal() }),
    ...(f.ca === undefined ? {} : { ca: f.ca }),
    sentinels: f.sentinels,
    master: f.master,
    name: f.name,
    hostId: f.hostId,
    publish: f.publish,
    streamMaxLen: f.streamMaxLen,
    outboxMax: f.outbox,
    resyncMs: f.resync * 1000,
    ...(f.maxRetry > 0 ? { threshold: { maxRetry: f.maxRetry, findTimeMs: f.findTime * 1000 } } : {}),
    // Keyed by the fleet's name: another fleet (or Redis) starts from its snapshot.
    cursor: { load: () => store.meta(`${CURSOR_KEY}:${f.name}`) ?? null, save: (id) => { store.setMeta(`${CURSOR_KEY}:${f.name}`, id); } },
    ownBans: function* () {
      for (const b of daemon()?.sharedBans() ?? []) yield { op: 'ban', ip: b.ip, until: b.until, at: b.at, origin: f.hostId, reason: b.reason };
    },
    logger: log,
  });
  metrics.bindFleet(() => {
    const s = bus.status();
    return { connected: s.state === 'connected', outbox: s.outbox, outboxDropped: s.outboxDropped, lagMs: s.lagMs, snapshots: s.snapshots, published: s.published };
  });
  return new FleetLink({ bus, hostId: f.hostId, apply: f.apply, publish: f.publish, rate: f.remoteRate, burst: f.remoteBurst, metrics, logger: log });
}
