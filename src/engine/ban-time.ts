// fail2ban's bantime.increment family, with its default formula.
import { MAX_BAN_SECONDS } from '../common/limits.js';

export interface BanTimePolicy {
  /** Seconds; Infinity = permanent. */
  readonly banTime: number;
  readonly increment: boolean;
  readonly factor: number;
  readonly multipliers: readonly number[];
  readonly maxTime: number;
  readonly rndTime: number;
}

/**
 * Seconds the next ban lasts, given how many times the address was banned before.
 * First ban: banTime. Then `banTime × 2^min(n,20) × factor` (never below banTime), or with
 * multipliers `banTime × factor × multipliers[min(n, len−1)]`; capped at maxTime; plus 0..rndTime.
 */
export function nextBanSeconds(policy: BanTimePolicy, previousBans: number, random: () => number): number {
  const base = policy.banTime;
  if (!policy.increment || previousBans <= 0 || base === Number.POSITIVE_INFINITY) return base;
  const m = policy.multipliers;
  let seconds: number;
  if (m.length > 0) {
    seconds = base * policy.factor * (m[Math.min(previousBans, m.length - 1)] ?? 1);
  } else {
    seconds = Math.max(base, base * 2 ** Math.min(previousBans, 20) * policy.factor);
  }
  seconds = Math.min(seconds, policy.maxTime);
  if (policy.rndTime > 0) seconds += random() * policy.rndTime;
  return Math.min(seconds, MAX_BAN_SECONDS);
}
