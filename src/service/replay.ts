// Replays a captured AMI byte stream or an Asterisk security log through the engine, with the
// event times from the file: our fail2ban-regex.
import { AmiParser, type AmiMessage } from '../ami/parser.js';
import { type SecurityEvent, classifyEvent } from '../ami/security-event.js';
import { parseSecurityLogLine } from '../ami/security-log.js';
import { Engine, type EnginePolicy } from '../engine/engine.js';
import { ReplayInputError } from '../errors.js';
import { toEngineEvent } from './pipeline.js';

export type ReplayFormat = 'ami' | 'security-log';

export interface ReplayBan {
  readonly ip: string;
  /** Epoch ms, from the event's EventTV. */
  readonly at: number;
  readonly failures: number;
  /** Seconds; Infinity = permanent. */
  readonly banSeconds: number;
  readonly events: Readonly<Record<string, number>>;
}

export interface ReplayResult {
  readonly format: ReplayFormat;
  readonly bans: readonly ReplayBan[];
  readonly securityEvents: number;
  readonly failures: number;
  readonly skipped: { nonSecurity: number; unknown: number; malformed: number; noTime: number };
}

export function detectFormat(input: Buffer): ReplayFormat {
  const head = input.subarray(0, 4096).toString('utf8');
  if (head.includes('SecurityEvent="')) return 'security-log';
  const first = head.split('\n', 1)[0] ?? '';
  if (first.startsWith('Asterisk Call Manager/') || /^[A-Za-z][\w-]*: /.test(first)) return 'ami';
  throw new ReplayInputError('input is neither an AMI capture (Asterisk Call Manager greeting or `Name: value` lines) nor an Asterisk security log (SecurityEvent="…" lines)');
}

function messages(input: Buffer, format: ReplayFormat, onMalformed: () => void): AmiMessage[] {
  const out: AmiMessage[] = [];
  if (format === 'ami') {
    const parser = new AmiParser({
      message: (m) => {
        if (m.get('Event') !== undefined) out.push(m);
      },
      issue: onMalformed,
    });
    parser.push(input);
    parser.end();
    return out;
  }
  for (const line of input.toString('utf8').split('\n')) {
    const r = parseSecurityLogLine(line);
    if (r.kind === 'event') out.push(r.message);
    else if (r.kind === 'malformed') onMalformed();
  }
  return out;
}

export function replay(input: Buffer, policy: EnginePolicy): ReplayResult {
  const format = detectFormat(input);
  const skipped = { nonSecurity: 0, unknown: 0, malformed: 0, noTime: 0 };
  const events: SecurityEvent[] = [];
  for (const m of messages(input, format, () => skipped.malformed++)) {
    const c = classifyEvent(m);
    if (c.kind === 'security') events.push(c.event);
    else if (c.kind === 'non-security') skipped.nonSecurity++;
    else if (c.kind === 'unknown') skipped.unknown++;
    else skipped.malformed++;
  }

  const engine = new Engine(policy);
  const bans: ReplayBan[] = [];
  let failures = 0;
  for (const e of events) {
    if (e.eventTime === null) {
      skipped.noTime++;
      continue;
    }
    const now = e.eventTime.epochMs;
    engine.expire(now);
    const outcome = engine.observe(toEngineEvent(e), now);
    if (outcome.kind === 'counted') failures++;
    if (outcome.kind === 'banned') {
      failures++;
      const d = outcome.decision;
      bans.push({ ip: d.ip, at: d.at, failures: d.failures, banSeconds: d.banSeconds, events: d.events });
    }
  }
  return { format, bans, securityEvents: events.length, failures, skipped };
}
