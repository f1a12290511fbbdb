// The AMI client: a reconnecting state machine that turns the stream into SecurityEvents.
import { EventEmitter } from 'node:events';
import { AmiLoginError, AmiTimeoutError, errorMessage } from '../errors.js';
import type { Logger } from '../log/logger.js';
import type { AmiConnector, AmiSession, AmiTarget } from './connector.js';
import type { AmiMessage, ParserIssue } from './parser.js';
import { type SecurityEvent, classifyEvent } from './security-event.js';

export type AmiState = 'idle' | 'connecting' | 'logging-in' | 'ready' | 'backing-off' | 'stopped';

export interface AmiClientOptions {
  readonly target: AmiTarget;
  readonly connector: AmiConnector;
  readonly logger: Logger;
  readonly pingIntervalMs: number;
  /** Also bounds the login exchange. */
  readonly pingTimeoutMs: number;
  readonly reconnectMaxMs: number;
  /** A connect unanswered this long is abandoned (default 10 s). */
  readonly connectTimeoutMs?: number;
  /** Without a login for this long, give up ('giveup' event); 0 or absent = never. */
  readonly giveUpMs?: number;
  readonly reconnectBaseMs?: number;
  readonly random?: () => number;
}

export interface AmiCounters {
  connects: number;
  reconnects: number;
  loginFailures: number;
  securityEvents: number;
  nonSecurity: number;
  unknown: number;
  malformed: number;
  parserIssues: number;
  staleDropped: number;
}

interface AmiClientEvents {
  state: [state: AmiState];
  event: [event: SecurityEvent, receivedAt: number];
  giveup: [reason: string];
}

/** Why the last connection attempt or session ended: a wrong secret reads differently from a refused port. */
export interface AmiLastError {
  readonly kind: 'login-refused' | 'connect-failed' | 'connect-timeout' | 'setup-failed' | 'connection-lost' | 'keep-alive-failed';
  readonly message: string;
  /** Epoch ms. */
  readonly at: number;
}

/** Jittered exponential backoff: base·2^attempt, ±20 %, capped. */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number): number {
  const raw = baseMs * 2 ** Math.min(attempt, 30);
  return Math.min(maxMs, raw * (0.8 + 0.4 * random()));
}

export class AmiClient extends EventEmitter<AmiClientEvents> {
  private current: AmiState = 'idle';
  /** Bumped on every new connection and every teardown: callbacks of an older epoch are ignored. */
  private epoch = 0;
  private attempt = 0;
  private session: AmiSession | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastEventAt: number | undefined;
  private lastErr: AmiLastError | undefined;
  /** Since when no session has been ready (start, or the last loss). */
  private notReadySince = Date.now();
  readonly counters: AmiCounters = {
    connects: 0,
    reconnects: 0,
    loginFailures: 0,
    securityEvents: 0,
    nonSecurity: 0,
    unknown: 0,
    malformed: 0,
    parserIssues: 0,
    staleDropped: 0,
  };
  private readonly log: Logger;
  private readonly random: () => number;
  private readonly baseMs: number;

  constructor(private readonly options: AmiClientOptions) {
    super();
    this.log = options.logger;
    this.random = options.random ?? Math.random;
    this.baseMs = options.reconnectBaseMs ?? 500;
  }

  get state(): AmiState {
    return this.current;
  }

  /** Epoch ms of the last message received, if any. */
  get lastEventTime(): number | undefined {
    return this.lastEventAt;
  }

  get lastError(): AmiLastError | undefined {
    return this.lastErr;
  }

  start(): void {
    if (this.current !== 'idle') return;
    this.notReadySince = Date.now();
    void this.connect();
  }

  stop(): void {
    this.epoch++;
    this.clearTimer();
    this.session?.destroy();
    this.session = undefined;
    this.setState('stopped');
  }

  private setState(state: AmiState): void {
    if (this.current === state) return;
    this.current = state;
    this.emit('state', state);
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async connect(): Promise<void> {
    const epoch = ++this.epoch;
    const { host, port, username } = this.options.target;
    this.setState('connecting');
    let session: AmiSession;
    try {
      const connecting = this.options.connector.connect(this.options.target, {
        onGreeting: (text) => {
          if (epoch === this.epoch) this.log.debug('AMI greeting', { greeting: text });
        },
        onEvent: (message) => {
          this.onEvent(epoch, message);
        },
        onIssue: (issue) => {
          this.onIssue(epoch, issue);
        },
        onClose: (error) => {
          if (epoch !== this.epoch) return;
          if (this.current === 'ready') this.notReadySince = Date.now();
          this.log.warn('AMI connection lost', { host, port, ...(error ? { error: error.message } : {}) });
          this.fail('connection-lost', error?.message ?? 'closed by Asterisk');
        },
      });
      session = await this.withTimeout(connecting, 'connect', this.options.connectTimeoutMs ?? 10_000).catch((err: unknown) => {
        // A session that comes up after the deadline belongs to an abandoned attempt.
        connecting.then(
          (late) => {
            late.destroy();
          },
          () => undefined,
        );
        throw err;
      });
    } catch (err) {
      if (epoch !== this.epoch) return;
      const timedOut = err instanceof AmiTimeoutError;
      this.log.warn(timedOut ? 'AMI connect timed out' : 'AMI connect failed', { host, port, error: errorMessage(err) });
      this.fail(timedOut ? 'connect-timeout' : 'connect-failed', errorMessage(err));
      return;
    }
    if (epoch !== this.epoch) {
      session.destroy();
      return;
    }
    this.session = session;
    this.counters.connects++;
    this.setState('logging-in');
    try {
      await this.withTimeout(session.login(), 'login');
      // asterisk-manager's Login sends `Event:`, which Asterisk ignores: narrow the session to security events here.
      const reply = await this.withTimeout(session.action({ Action: 'Events', EventMask: 'security' }), 'Events');
      if (epoch !== this.epoch) return;
      this.attempt = 0;
      this.lastErr = undefined;
      this.setState('ready');
      this.log.info('AMI ready', { host, port, username, events: reply.events ?? '' });
      this.schedulePing(epoch);
    } catch (err) {
      if (epoch !== this.epoch) return;
      if (err instanceof AmiLoginError) {
        this.counters.loginFailures++;
        this.log.error('AMI login failed: check AMI_USERNAME/AMI_SECRET against manager.conf', {
          host,
          port,
          username,
          error: err.message,
        });
        this.fail('login-refused', `${err.message} (check AMI_USERNAME/AMI_SECRET against manager.conf)`);
      } else {
        this.log.warn('AMI session setup failed', { host, port, error: errorMessage(err) });
        this.fail('setup-failed', errorMessage(err));
      }
    }
  }

  private fail(kind: AmiLastError['kind'], message: string): void {
    this.lastErr = { kind, message, at: Date.now() };
    const giveUp = this.options.giveUpMs ?? 0;
    if (giveUp > 0 && Date.now() - this.notReadySince >= giveUp) {
      const reason = `no AMI login for ${Math.round((Date.now() - this.notReadySince) / 1000)} s (AMI_GIVEUP); last error: ${message}`;
      this.stop();
      this.emit('giveup', reason);
      return;
    }
    this.backOff();
  }

  private withTimeout<T>(promise: Promise<T>, what: string, ms = this.options.pingTimeoutMs): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => {
        reject(new AmiTimeoutError(`${what}: no answer within ${ms} ms`));
      }, ms);
      promise.then(
        (v) => {
          clearTimeout(t);
          resolve(v);
        },
        (e: unknown) => {
          clearTimeout(t);
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      );
    });
  }

  private schedulePing(epoch: number): void {
    this.clearTimer();
    this.timer = setTimeout(() => {
      void this.ping(epoch);
    }, this.options.pingIntervalMs);
  }

  private async ping(epoch: number): Promise<void> {
    const session = this.session;
    if (epoch !== this.epoch || session === undefined) return;
    const sentAt = Date.now();
    try {
      await this.withTimeout(session.action({ Action: 'Ping' }), 'Ping');
      if (epoch === this.epoch) this.schedulePing(epoch);
    } catch (err) {
      if (epoch !== this.epoch) return;
      // Events read since the Ping: Asterisk is alive, its answer waits behind a flood we are still
      // reading. Dropping the session now would lose the events in flight.
      if (err instanceof AmiTimeoutError && (this.lastEventAt ?? 0) >= sentAt) {
        this.schedulePing(epoch);
        return;
      }
      this.log.warn('AMI keep-alive failed, reconnecting', { error: errorMessage(err) });
      this.notReadySince = Date.now();
      this.fail('keep-alive-failed', errorMessage(err));
    }
  }

  private backOff(): void {
    this.epoch++;
    this.clearTimer();
    this.session?.destroy();
    this.session = undefined;
    const delay = backoffDelay(this.attempt++, this.baseMs, this.options.reconnectMaxMs, this.random);
    this.counters.reconnects++;
    this.setState('backing-off');
    this.log.info('AMI reconnecting', { inMs: Math.round(delay), attempt: this.attempt });
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.connect();
    }, delay);
  }

  private onIssue(epoch: number, issue: ParserIssue): void {
    if (epoch !== this.epoch) return;
    this.counters.parserIssues++;
    this.log.warn('AMI message dropped', { kind: issue.kind, detail: issue.detail });
  }

  private onEvent(epoch: number, message: AmiMessage): void {
    if (epoch !== this.epoch) {
      this.counters.staleDropped++;
      return;
    }
    const receivedAt = Date.now();
    this.lastEventAt = receivedAt;
    const c = classifyEvent(message);
    switch (c.kind) {
      case 'security':
        this.counters.securityEvents++;
        this.emit('event', c.event, receivedAt);
        return;
      case 'non-security':
        this.counters.nonSecurity++;
        if (this.log.isDebugEnabled()) this.log.debug('AMI non-security event ignored', { event: c.name });
        return;
      case 'unknown':
        this.counters.unknown++;
        if (this.log.isDebugEnabled()) this.log.debug('AMI unknown security event ignored', { event: c.name });
        return;
      case 'malformed':
        this.counters.malformed++;
        if (this.log.isDebugEnabled()) this.log.debug('AMI malformed event ignored', { event: c.name, reason: c.reason });
        return;
    }
  }
}
