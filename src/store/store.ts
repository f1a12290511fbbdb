// Durable ban history in SQLite: every ban and unban, for incremental ban time and for restoring
// bans after a restart or a reboot.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { StoreError, errorMessage } from '../errors.js';

/** What a ban decision carries (structurally the engine's BanDecision). */
export interface BanRecordInput {
  readonly ip: string;
  readonly family: string;
  /** Epoch ms. */
  readonly at: number;
  /** Seconds; Infinity = permanent. */
  readonly banSeconds: number;
  /** Epoch ms; Infinity = permanent. */
  readonly until: number;
  readonly reason: string;
  readonly failures: number;
  readonly events: Readonly<Record<string, number>>;
  readonly previousBans: number;
  /** It continues the open ban of the address (closed as `extended`, not counted again). */
  readonly extendsBan?: boolean;
}

export type Enforcer = 'nftables' | 'dry-run';

export interface StoredBan {
  readonly ip: string;
  readonly family: 'ipv4' | 'ipv6';
  /** What applied it (FIREWALL at the time). */
  readonly enforcer: Enforcer;
  readonly startedAt: number;
  /** Epoch ms; Infinity = permanent. */
  readonly expiresAt: number;
  readonly reason: string;
  readonly failures: number;
  readonly events: Readonly<Record<string, number>>;
  readonly previousBans: number;
}

interface Row {
  ip: string;
  family: 'ipv4' | 'ipv6';
  enforcer: Enforcer;
  started_at: number;
  expires_at: number | null;
  reason: string;
  failures: number;
  events: string;
  previous_bans: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS bans (
  id            INTEGER PRIMARY KEY,
  ip            TEXT    NOT NULL,
  family        TEXT    NOT NULL,
  started_at    INTEGER NOT NULL,
  duration_s    REAL,
  expires_at    INTEGER,
  reason        TEXT    NOT NULL,
  failures      INTEGER NOT NULL DEFAULT 0,
  events        TEXT    NOT NULL DEFAULT '{}',
  previous_bans INTEGER NOT NULL DEFAULT 0,
  ended_at      INTEGER,
  end_reason    TEXT,
  enforcer      TEXT    NOT NULL DEFAULT 'nftables'
);
CREATE INDEX IF NOT EXISTS bans_ip_started ON bans (ip, started_at);
CREATE INDEX IF NOT EXISTS bans_open ON bans (ip) WHERE ended_at IS NULL;
`;

export const DATABASE_FILE = 'ami2ban.sqlite';
/** Bans kept for a retry while writes fail; past this the oldest are dropped (and counted). */
const MAX_PENDING = 200_000;
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 10_000;

export interface StoreHealth {
  readonly healthy: boolean;
  /** Bans waiting to be written. */
  readonly pending: number;
  readonly writeErrors: number;
  /** Bans dropped because the queue was full while writes failed. */
  readonly dropped: number;
  readonly lastError: string | null;
}

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (err: StoreError) => void;
}

function toStored(r: Row): StoredBan {
  return {
    ip: r.ip,
    family: r.family,
    enforcer: r.enforcer,
    startedAt: r.started_at,
    expiresAt: r.expires_at ?? Number.POSITIVE_INFINITY,
    reason: r.reason,
    failures: r.failures,
    events: JSON.parse(r.events) as Record<string, number>,
    previousBans: r.previous_bans,
  };
}

export class BanStore {
  readonly path: string;
  private readonly db: Database.Database;
  /** Bans recorded but not yet written: a burst is written in one transaction per event-loop turn. */
  private pending: BanRecordInput[] = [];
  private readonly pendingPerIp = new Map<string, number[]>();
  private flushScheduled: NodeJS.Immediate | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = RETRY_MIN_MS;
  private waiters: Waiter[] = [];
  private writeErrors = 0;
  private dropped = 0;
  private lastError: StoreError | undefined;
  private readonly writeBatch: (rows: readonly BanRecordInput[]) => void;
  private readonly stmt: {
    count: Database.Statement<[string, number], { n: number }>;
    starts: Database.Statement<[number], { ip: string; started_at: number }>;
    close: Database.Statement<[number, string, string]>;
    insert: Database.Statement<[string, string, number, number | null, number | null, string, number, string, number, string]>;
    active: Database.Statement<[number], Row>;
    expire: Database.Statement<[number]>;
    purge: Database.Statement<[number]>;
  };

  /** Opens (creating if needed) STATE_DIR/ami2ban.sqlite; a StoreError names the path and the cause. */
  constructor(
    dir: string,
    private readonly historyKeepMs: number,
    private readonly now: () => number = Date.now,
    /** Told when a deferred write fails (the bans stay in the kernel; a restart adopts them). */
    private readonly onWriteError: (err: StoreError) => void = () => undefined,
    /** Recorded with every ban, so that a dry-run ban is never taken for a kernel one. */
    private readonly enforcer: Enforcer = 'nftables',
  ) {
    this.path = join(dir, DATABASE_FILE);
    try {
      mkdirSync(dir, { recursive: true });
      // No busy wait: a lock held elsewhere fails the write at once (it is retried later) rather
      // than freezing the event loop that carries bans to the kernel.
      this.db = new Database(this.path, { timeout: 0 });
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
      this.db.exec(SCHEMA);
      // Databases made before the enforcer was recorded: their bans were kernel bans.
      const columns = this.db.prepare<[], { name: string }>('PRAGMA table_info(bans)').all();
      if (!columns.some((c) => c.name === 'enforcer')) this.db.exec("ALTER TABLE bans ADD COLUMN enforcer TEXT NOT NULL DEFAULT 'nftables'");
      this.stmt = {
        starts: this.db.prepare("SELECT ip, started_at FROM bans WHERE started_at >= ? AND (end_reason IS NULL OR end_reason != 'extended')"),
        // A ban continued by a longer one is one ban: its `extended` row is not counted.
        count: this.db.prepare("SELECT COUNT(*) AS n FROM bans WHERE ip = ? AND started_at >= ? AND (end_reason IS NULL OR end_reason != 'extended')"),
        close: this.db.prepare('UPDATE bans SET ended_at = ?, end_reason = ? WHERE ip = ? AND ended_at IS NULL'),
        insert: this.db.prepare(
          'INSERT INTO bans (ip, family, started_at, duration_s, expires_at, reason, failures, events, previous_bans, enforcer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
        ),
        active: this.db.prepare(
          'SELECT ip, family, enforcer, started_at, expires_at, reason, failures, events, previous_bans FROM bans WHERE ended_at IS NULL AND (expires_at IS NULL OR expires_at > ?)',
        ),
        expire: this.db.prepare("UPDATE bans SET ended_at = expires_at, end_reason = 'expired' WHERE ended_at IS NULL AND expires_at <= ?"),
        purge: this.db.prepare('DELETE FROM bans WHERE ended_at IS NOT NULL AND started_at < ?'),
      };
      this.writeBatch = this.db.transaction((rows: readonly BanRecordInput[]) => {
        for (const b of rows) {
          const permanent = b.until === Number.POSITIVE_INFINITY;
          this.stmt.close.run(b.at, b.extendsBan === true ? 'extended' : 'replaced', b.ip);
          this.stmt.insert.run(
            b.ip,
            b.family,
            b.at,
            permanent ? null : b.banSeconds,
            permanent ? null : Math.round(b.until),
            b.reason,
            b.failures,
            JSON.stringify(b.events),
            b.previousBans,
            this.enforcer,
          );
        }
      });
    } catch (err) {
      throw new StoreError(`cannot open the ban database ${this.path}: ${errorMessage(err)}`, err);
    }
  }

  /** Every ban start within BAN_HISTORY_KEEP (an extension is not another ban): loaded once at start. */
  banStarts(): { ip: string; startedAt: number }[] {
    this.flush();
    return this.stmt.starts.all(this.now() - this.historyKeepMs).map((r) => ({ ip: r.ip, startedAt: r.started_at }));
  }

  /** Bans of this address within BAN_HISTORY_KEEP (drives incremental ban time). */
  previousBans(ip: string): number {
    const since = this.now() - this.historyKeepMs;
    const pending = (this.pendingPerIp.get(ip) ?? []).filter((at) => at >= since).length;
    // (A pending extension is counted until written; it only ever overstates by one for a moment.)
    return (this.stmt.count.get(ip, since)?.n ?? 0) + pending;
  }

  /**
   * Records a ban; an open ban of the same address is closed as replaced (an extension).
   * Written with the others of the same event-loop turn, in one transaction.
   */
  recordBan(b: BanRecordInput): void {
    this.pending.push(b);
    const times = this.pendingPerIp.get(b.ip);
    if (times === undefined) this.pendingPerIp.set(b.ip, [b.at]);
    else times.push(b.at);
    if (this.pending.length > MAX_PENDING) {
      // Writes have been failing for long: keep the newest; the kernel still holds the dropped ones.
      const gone = this.pending.splice(0, this.pending.length - MAX_PENDING);
      this.dropped += gone.length;
    }
    if (this.pending.length >= 5000 && this.lastError === undefined) this.flush();
    else if (this.retryTimer === undefined) this.flushScheduled ??= setImmediate(() => this.flush());
  }

  /**
   * Resolves once every ban recorded so far is written; rejects with the cause when the next
   * write attempt fails (the rows stay queued and are retried with backoff).
   */
  durable(): Promise<void> {
    if (this.pending.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
    });
  }

  health(): StoreHealth {
    return {
      healthy: this.lastError === undefined,
      pending: this.pending.length,
      writeErrors: this.writeErrors,
      dropped: this.dropped,
      lastError: this.lastError?.message ?? null,
    };
  }

  /** Writes the bans recorded so far; never throws: a failure keeps them for a retry. */
  flush(): boolean {
    if (this.flushScheduled !== undefined) clearImmediate(this.flushScheduled);
    this.flushScheduled = undefined;
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const waiters = this.waiters;
    this.waiters = [];
    if (this.pending.length > 0 && this.db.open) {
      try {
        this.writeBatch(this.pending);
      } catch (err) {
        const error = new StoreError(`writing bans to ${this.path} failed: ${errorMessage(err)}`, err);
        this.writeErrors++;
        this.lastError = error;
        this.onWriteError(error);
        for (const w of waiters) w.reject(error);
        this.retryTimer = setTimeout(() => this.flush(), this.retryMs);
        this.retryTimer.unref();
        this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
        return false;
      }
      this.pending = [];
      this.pendingPerIp.clear();
    }
    this.lastError = undefined;
    this.retryMs = RETRY_MIN_MS;
    for (const w of waiters) w.resolve();
    return true;
  }

  /** Throws a StoreError when the write fails. */
  recordUnban(ip: string, at: number, reason: 'expired' | 'manual' | 'ignored' | 'not-promoted'): void {
    this.flush();
    try {
      this.stmt.close.run(at, reason, ip);
    } catch (err) {
      throw new StoreError(`writing an unban to ${this.path} failed: ${errorMessage(err)}`, err);
    }
  }

  /** Open bans that have not expired by `now`. */
  activeBans(now: number): StoredBan[] {
    this.flush();
    return this.stmt.active.all(now).map(toStored);
  }

  /** Closes open bans whose time is over (e.g. while the service was down). */
  expireDue(now: number): number {
    this.flush();
    return this.stmt.expire.run(now).changes;
  }

  /** Deletes ended bans older than the history window. */
  purge(now: number): number {
    this.flush();
    return this.stmt.purge.run(now - this.historyKeepMs).changes;
  }

  close(): void {
    if (!this.db.open) return;
    this.flush();
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.db.close();
  }
}
