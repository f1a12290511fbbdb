import { type Config, loadConfig } from '../../src/config/config.js';
import type { EnginePolicy } from '../../src/engine/engine.js';

export const BASE_ENV = { AMI_USERNAME: 'ami2ban', AMI_SECRET: 'ami2ban-secret' } as const;

/** Ignore-self is off unless a test asks: the machine's own addresses (e.g. 192.0.2.2 on eth0) vary. */
export function config(env: Record<string, string> = {}): Config {
  return loadConfig({ ...BASE_ENV, BAN_IGNORESELF: 'false', ...env });
}

export function policy(env: Record<string, string> = {}): EnginePolicy {
  return config(env).ban;
}
