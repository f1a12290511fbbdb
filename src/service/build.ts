// Builds the daemon's parts from a Config.
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
import { Daemon } from './daemon.js';
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
}

/** Throws StoreError (database) or FirewallError (no usable nftables backend) with a clear message. */
export function buildDaemon(config: Config, logger: Logger, version: string, overrides: BuildOverrides = {}): Built {
  const store = new BanStore(config.stateDir, {
    historyKeepMs: config.ban.historyKeep * 1000,
    onWriteError: (err) => {
      logger.error('ban database write failed', { error: err.message });
    },
    enforcer: config.firewall,
  });
  const metrics = new Metrics({ version, banReasons: BAN_REASONS, unbanReasons: UNBAN_REASONS, ignoreReasons: IGNORE_REASONS, maxTracked: config.ban.maxTracked });
  const ami = new AmiClient({
    target: {
      host: config.ami.host,
      port: config.ami.port,
      username: config.ami.username,
      secret: config.ami.secret.reveal(),
    },
    connector: overrides.connector ?? new AsteriskManagerConnector(),
    logger: logger.child({ component: 'ami' }),
    pingIntervalMs: config.ami.pingInterval * 1000,
    pingTimeoutMs: config.ami.pingTimeout * 1000,
    reconnectMaxMs: config.ami.reconnectMax * 1000,
    connectTimeoutMs: config.ami.connectTimeout * 1000,
    giveUpMs: config.ami.giveUp * 1000,
  });
  let firewall: Firewall;
  let owner: Daemon | undefined;
  try {
    // The daemon owns the bans in force; the firewall asks it when its table must be rebuilt.
    firewall = overrides.firewall ?? buildFirewall(config, logger, metrics, overrides.runner, () => owner?.bansInForce() ?? []);
  } catch (err) {
    void store.close();
    throw err;
  }
  // Read once: the engine is given the history as data and never asks the store.
  const engine = new Engine(config.ban, { previousBans: store.banStarts(), trusted: config.ban.trustSuccess ? store.trustedPairs(Date.now()) : [] });
  const dropped = firewall instanceof NftablesFirewall ? () => firewall.counters() : undefined;
  const listen = config.control.listen;
  const self = config.ban.ignoreSelf
    ? () => selfAddresses({ amiHost: config.ami.host, ...(listen.kind === 'tcp' ? { controlHost: listen.host } : {}) })
    : undefined;
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
  });
  owner = daemon;
  owner = daemon;
  return { daemon, metrics };
}
