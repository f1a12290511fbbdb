import { type Config, loadConfig } from '../../src/config/config.js';
import type { EnginePolicy } from '../../src/engine/engine.js';

export const BASE_ENV = { AMI_USERNAME: 'ami2ban', AMI_SECRET: 'ami2ban-secret' } as const;

export function config(env: Record<string, string> = {}): Config {
  return loadConfig({ ...BASE_ENV, ...env });
}

export function policy(env: Record<string, string> = {}): EnginePolicy {
  return config(env).ban;
}
