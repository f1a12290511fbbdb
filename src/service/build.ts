// Builds the daemon's parts from a Config.
import { AsteriskManagerConnector } from '../ami/asterisk-manager-connector.js';
import { AmiClient } from '../ami/client.js';
import type { AmiConnector } from '../ami/connector.js';
import type { Config } from '../config/config.js';
import { Engine } from '../engine/engine.js';
import { DryRunFirewall } from '../firewall/dry-run.js';
import type { Firewall } from '../firewall/firewall.js';
import { NftablesFirewall } from '../firewall/nftables.js';
import { type NftRunner, chooseRunner } from '../firewall/runner.js';
import type { Logger } from '../log/logger.js';
import { Daemon } from './daemon.js';

export interface BuildOverrides {
  readonly connector?: AmiConnector;
  readonly firewall?: Firewall;
}

export function buildFirewall(config: Config, logger: Logger, runner?: NftRunner): Firewall {
  const log = logger.child({ component: 'firewall' });
  if (config.firewall === 'dry-run') return new DryRunFirewall(log);
  let chosen = runner;
  if (chosen === undefined) {
    const c = chooseRunner(config.nftables.backend);
    chosen = c.runner;
    log.info('nftables backend chosen', { backend: c.runner.backend, reason: c.reason });
  }
  return new NftablesFirewall({
    table: config.nftables.table,
    blockType: config.nftables.blockType,
    ports: config.nftables.ports,
    cleanupOnExit: config.nftables.cleanupOnExit,
    checkIntervalMs: config.nftables.checkInterval * 1000,
    runner: chosen,
    logger: log,
  });
}

export function buildDaemon(config: Config, logger: Logger, overrides: BuildOverrides = {}): Daemon {
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
  });
  const firewall = overrides.firewall ?? buildFirewall(config, logger);
  return new Daemon({ ami, engine: new Engine(config.ban), firewall, logger });
}
