// Builds the daemon's parts from a Config.
import { AsteriskManagerConnector } from '../ami/asterisk-manager-connector.js';
import { AmiClient } from '../ami/client.js';
import type { AmiConnector } from '../ami/connector.js';
import type { Config } from '../config/config.js';
import { Engine } from '../engine/engine.js';
import { DryRunFirewall } from '../firewall/dry-run.js';
import type { Firewall } from '../firewall/firewall.js';
import type { Logger } from '../log/logger.js';
import { Daemon } from './daemon.js';

export interface BuildOverrides {
  readonly connector?: AmiConnector;
  readonly firewall?: Firewall;
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
  const firewall = overrides.firewall ?? new DryRunFirewall(logger.child({ component: 'firewall' }));
  return new Daemon({ ami, engine: new Engine(config.ban), firewall, logger });
}
