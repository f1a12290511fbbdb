// Replays a captured AMI byte stream or an Asterisk security log through the engine, with the
// event times from the file: our fail2ban-regex.
import { AmiParser, type AmiMessage } from '../ami/parser.js';
import { classifyEvent, parseEventTime } from '../ami/security-event.js';
import { parseSecurityLogLine } from '../ami/security-log.js';
import { type BanDecision, type BanReason, Engine, type EnginePolicy } from '../engine/engine.js';
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
  /** Which rule banned: `threshold` (maxretry failures) or `unanswered` (unanswered challenges). */
  readonly rule: BanReason;
  /** The failures behind it, oldest first (at most 32). */
  readonly details: BanDecision['details'];
}

export interface ReplayResult {
  readonly format: ReplayFormat;
  /** Empty when the bans went to an onBan callback. */
  readonly bans: readonly ReplayBan[];
  readonly banCount: number;
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

/**
 * Feeds a capture through the engine as it is read, chunk by chunk: memory is the engine's
 * state and the bans, never the whole file (a million-line log stays well under 300 MB).
 */
export class Replayer {
  private format: ReplayFormat | undefined;
  private head: Buffer[] = [];
  private headBytes = 0;
  private parser: AmiParser | undefined;
  private partialLine = '';
  private readonly decoder = new TextDecoder('utf-8');
  private readonly engine: Engine;
  private readonly bans: ReplayBan[] = [];
  private securityEvents = 0;
  private banCount = 0;
  private failures = 0;
  private lastTime: number | undefined;
  private readonly skipped = { nonSecurity: 0, unknown: 0, malformed: 0, noTime: 0 };

  /** @param onBan told of each ban as it falls; when given, bans are not also kept in the result. */
  constructor(
    policy: EnginePolicy,
    private readonly onBan?: (ban: ReplayBan) => void,
  ) {
    this.engine = new Engine(policy);
  }

  push(chunk: Buffer): void {
    if (this.format === undefined) {
      // The format is told by the first 4 KiB.
      this.head.push(chunk);
      this.headBytes += chunk.length;
      if (this.headBytes < 4096) return;
      this.start();
      return;
    }
    this.feed(chunk);
  }

  /** Throws ReplayInputError when the input is neither format. */
  end(): ReplayResult {
    if (this.format === undefined) this.start();
    if (this.parser !== undefined) this.parser.end();
    else {
      const rest = this.partialLine + this.decoder.decode();
      this.partialLine = '';
      if (rest !== '') this.logLine(rest);
    }
    // The end of the input is the passing of every pending challenge's timeout.
    if (this.lastTime !== undefined) for (const d of this.engine.challengesDue(this.lastTime, true)) this.banned(d);
    return { format: this.format ?? 'ami', bans: this.bans, banCount: this.banCount, securityEvents: this.securityEvents, failures: this.failures, skipped: this.skipped };
  }

  private start(): void {
    const head = Buffer.concat(this.head);
    this.head = [];
    this.format = detectFormat(head);
    if (this.format === 'ami') {
      this.parser = new AmiParser({
        message: (m) => {
          if (m.get('Event') !== undefined) this.message(m);
        },
        issue: () => {
          this.skipped.malformed++;
        },
      });
    }
    this.feed(head);
  }

  private feed(chunk: Buffer): void {
    if (this.parser !== undefined) {
      this.parser.push(chunk);
      return;
    }
    const lines = (this.partialLine + this.decoder.decode(chunk, { stream: true })).split('\n');
    this.partialLine = lines.pop() ?? '';
    for (const line of lines) this.logLine(line);
  }

  private banned(d: BanDecision): void {
    const ban = { ip: d.ip, at: d.at, failures: d.failures, banSeconds: d.banSeconds, events: d.events, rule: d.reason, details: d.details };
    this.banCount++;
    if (this.onBan === undefined) this.bans.push(ban);
    else this.onBan(ban);
  }

  private logLine(line: string): void {
    const r = parseSecurityLogLine(line);
    if (r.kind === 'event') this.message(r.message);
    else if (r.kind === 'malformed') this.skipped.malformed++;
  }

  private message(m: AmiMessage): void {
    const c = classifyEvent(m);
    if (c.kind === 'non-security') {
      this.skipped.nonSecurity++;
      return;
    }
    if (c.kind === 'unknown') {
      this.skipped.unknown++;
      return;
    }
    if (c.kind === 'malformed') {
      this.skipped.malformed++;
      return;
    }
    this.securityEvents++;
    const e = c.event;
    const time = e.eventTv === null ? null : parseEventTime(e.eventTv);
    if (time === null) {
      this.skipped.noTime++;
      return;
    }
    const now = time.epochMs;
    this.lastTime = now;
    this.engine.expire(now);
    for (const d of this.engine.challengesDue(now)) this.banned(d);
    const outcome = this.engine.observe(toEngineEvent(e), now);
    if (outcome.kind === 'counted') this.failures++;
    if (outcome.kind === 'banned') {
      this.failures++;
      this.banned(outcome.decision);
    }
    // Like the daemon's housekeeping: forget what left the window, so a long log stays bounded.
    if (this.securityEvents % 10_000 === 0) this.engine.prune(now);
  }
}

export function replay(input: Buffer, policy: EnginePolicy): ReplayResult {
  const r = new Replayer(policy);
  r.push(input);
  return r.end();
}
