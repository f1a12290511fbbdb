// Durations are seconds; a permanent ban time is Infinity.
import { MAX_BAN_SECONDS } from '../common/limits.js';

export const PERMANENT = Number.POSITIVE_INFINITY;

const UNIT_SECONDS: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

export const DURATION_LIMIT_TEXT = 'at most 584 years (the longest timeout the kernel accepts)';

/** Parses `600`, `90s`, `10m`, `1h`, `1d`, `1w` (and `-1` when permanent is allowed); null beyond MAX_BAN_SECONDS. */
export function parseDuration(text: string, allowPermanent: boolean): number | null {
  const t = text.trim();
  if (allowPermanent && t === '-1') return PERMANENT;
  const m = /^(\d+(?:\.\d+)?)([smhdw]?)$/.exec(t);
  if (m === null) return null;
  const value = Number(m[1]);
  const unit = UNIT_SECONDS[m[2] === undefined || m[2] === '' ? 's' : m[2]] ?? 1;
  const seconds = value * unit;
  return seconds <= MAX_BAN_SECONDS ? seconds : null;
}

/** `3723` → `1h 2m 3s`; Infinity → `permanent`. */
export function formatDuration(seconds: number): string {
  if (seconds === PERMANENT) return 'permanent';
  let rest = Math.round(seconds);
  if (rest === 0) return seconds > 0 ? `${Math.round(seconds * 1000)}ms` : '0s';
  const parts: string[] = [];
  for (const [unit, size] of [['w', 604800], ['d', 86400], ['h', 3600], ['m', 60], ['s', 1]] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  return parts.join(' ');
}
