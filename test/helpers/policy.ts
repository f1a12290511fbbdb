import { type Config, loadConfig } from '../../src/config/config.js';
import type { EnginePolicy } from '../../src/engine/engine.js';

export const BASE_ENV = { AMI_USERNAME: 'ami2ban', AMI_SECRET: 'ami2ban-secret' } as const;

/**
 * Networks are off unless a test asks: the captures' attackers all share 127.0.0.0/24 and fd00::/64
 * (a lab artifact), and most tests check the counting rule, address by address.
 */
export const NO_ESCALATION = { BAN_V4_SUBNET_ESCALATE: '0', BAN_SUBNET_ESCALATE: '0', BAN_SUBNET_MAXRETRY: '0' } as const;

/** Ignore-self is off unless a test asks: the machine's own addresses (e.g. 192.0.2.2 on eth0) vary. */
export function config(env: Record<string, string> = {}): Config {
  return loadConfig({ ...BASE_ENV, BAN_IGNORESELF: 'false', ...NO_ESCALATION, ...env });
}

export function policy(env: Record<string, string> = {}): EnginePolicy {
  return config(env).ban;
}
