// Durable ban history in SQLite: every ban and unban, for incremental ban time and for restoring
// bans after a restart or a reboot. Its one connection lives on a worker thread, which runs every
// write and read: a hung or full disk delays the acknowledgement of a ban, never its way to the
// kernel.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { StoreError, errorMessage } from '../errors.js';

/** One failure behind a ban (structurally the engine's FailureDetail). */
export interface StoredFailure {
  readonly at: number;
  readonly event: string;
  readonly account: string;
  readonly transport: string;
}

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
  /** The most recent failures behind it (explain). */
  readonly details?: readonly StoredFailure[];
  readonly previousBans: number;
  /** It continues the open ban of the address (closed as `extended`, not counted again). */
  readonly extendsBan?: boolean;
  /** The fleet host that decided it; absent when this host did. */
  readonly origin?: string | undefined;
  /** Kept from the fleet (a manual `--local` ban). */
  readonly local?: boolean;
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
  readonly details: readonly StoredFailure[];
  readonly previousBans: number;
  /** The fleet host that decided it; null when this host did. */
  readonly origin: string | null;
  /** Kept from the fleet. */
  readonly local: boolean;
}

/** One ban of an address as the history keeps it, and how it ended (explain). */
export interface BanHistoryRow extends StoredBan {
  /** null while in force. */
  readonly endedAt: number | null;
  readonly endReason: string | null;
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
  details: string;
  previous_bans: number;
  origin: string | null;
  local: number;
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
  enforcer      TEXT    NOT NULL DEFAULT 'nftables',
  details       TEXT    NOT NULL DEFAULT '[]',
  origin        TEXT,
  local         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS bans_ip_started ON bans (ip, started_at);
CREATE INDEX IF NOT EXISTS bans_open ON bans (ip) WHERE ended_at IS NULL;
CREATE TABLE IF NOT EXISTS trust (
  ip      TEXT    NOT NULL,
  account TEXT    NOT NULL,
  until   INTEGER NOT NULL,
  PRIMARY KEY (ip, account)
);
CREATE TABLE IF NOT EXISTS meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
`;

export const DATABASE_FILE = 'ami2ban.sqlite';
/** Operations kept for a retry while writes fail; past this the oldest are dropped (and counted). */
const MAX_PENDING = 200_000;
/** Operations per transaction sent to the writer: also bounds how many acknowledgements one reply releases at once. */
const MAX_BATCH = 1_000;
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 10_000;
/** A write still running after this is reported: the disk is hung or very slow. */
const STALL_MS = 5_000;
/** How long close() waits for queued writes before giving up on them (the kernel keeps the bans). */
const CLOSE_WAIT_MS = 10_000;
/** How long close() waits for the writer thread to close the database before ending it. */
const CLOSE_THREAD_MS = 2_000;

export interface StoreHealth {
  readonly healthy: boolean;
  /** Writes queued or running. */
  readonly pending: number;
  readonly writeErrors: number;
  /** Writes dropped because the queue was full while writes failed. */
  readonly dropped: number;
  readonly lastError: string | null;
}

export interface StoreOptions {
  /** History older than this is not counted (BAN_HISTORY_KEEP). */
  readonly historyKeepMs: number;
  readonly now?: () => number;
  /** Told when a write fails or hangs (the bans stay in the kernel; a restart adopts them). */
  readonly onWriteError?: (err: StoreError) => void;
  /** Recorded with every ban, so that a dry-run ban is never taken for a kernel one. */
  readonly enforcer?: Enforcer;
  /** A write running this long makes the store unhealthy (default 5 s). */
  readonly stallMs?: number;
}

interface Waiter {
  /** Resolved once every operation numbered below this is written. */
  readonly upTo: number;
  readonly resolve: () => void;
  readonly reject: (err: StoreError) => void;
}

const SQL = {
  close: 'UPDATE bans SET ended_at = ?, end_reason = ? WHERE ip = ? AND ended_at IS NULL',
  insert:
    'INSERT INTO bans (ip, family, started_at, duration_s, expires_at, reason, failures, events, details, previous_bans, enforcer, origin, local) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
  expire: "UPDATE bans SET ended_at = expires_at, end_reason = 'expired' WHERE ended_at IS NULL AND expires_at <= ?",
  purge: 'DELETE FROM bans WHERE ended_at IS NOT NULL AND started_at < ?',
  trust: 'INSERT INTO trust (ip, account, until) VALUES (?, ?, ?) ON CONFLICT (ip, account) DO UPDATE SET until = excluded.until',
  untrust: 'DELETE FROM trust WHERE ip = ? AND account = ?',
  purgeTrust: 'DELETE FROM trust WHERE until <= ?',
  meta: 'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
} as const;

/** Reads, run on the writer thread too (after the writes sent before them): the daemon's only connection. */
const READS = {
  // A ban continued by a longer one is one ban: its `extended` row is not counted.
  starts: "SELECT ip, started_at FROM bans WHERE started_at >= ? AND (end_reason IS NULL OR end_reason != 'extended')",
  // Not the failures' details: a ban in force does not keep them (explain reads them with history);
  // with 100 000 bans of 3 failures each they were 29 of the read's 40 MB, and half its time.
  active:
    'SELECT ip, family, enforcer, started_at, expires_at, reason, failures, events, previous_bans, origin, local FROM bans WHERE ended_at IS NULL AND (expires_at IS NULL OR expires_at > ?)',
  history:
    'SELECT ip, family, enforcer, started_at, expires_at, reason, failures, events, details, previous_bans, origin, local, ended_at, end_reason FROM bans WHERE ip = ? ORDER BY started_at, id',
  trusted: 'SELECT ip, account, until FROM trust WHERE until > ? ORDER BY until',
  meta: 'SELECT key, value FROM meta',
} as const;

/** Columns added since the first schema: databases made before them get them at open. */
const COLUMNS: readonly (readonly [string, string])[] = [
  // Their bans were kernel bans.
  ['enforcer', "ALTER TABLE bans ADD COLUMN enforcer TEXT NOT NULL DEFAULT 'nftables'"],
  ['details', "ALTER TABLE bans ADD COLUMN details TEXT NOT NULL DEFAULT '[]'"],
  ['origin', 'ALTER TABLE bans ADD COLUMN origin TEXT'],
  ['local', 'ALTER TABLE bans ADD COLUMN local INTEGER NOT NULL DEFAULT 0'],
];

type ReadName = keyof typeof READS;

/**
 * Reads of every ban (at start): rows as arrays, in the SELECT's column order. better-sqlite3 makes
 * them several times faster than objects with a key per field, and their JSON is smaller.
 */
const RAW_READS: readonly ReadName[] = ['starts', 'active'];

type HistoryRow = Row & { ended_at: number | null; end_reason: string | null };

type Statement = keyof typeof SQL;
type Call = readonly [Statement, readonly (string | number | null)[]];

/** One queued write: its statements run in order, in the batch's transaction. */
interface Op {
  readonly seq: number;
  readonly calls: readonly Call[];
  /** Told how many rows the op's last statement changed. */
  readonly done?: (changes: number) => void;
  readonly failed?: (err: StoreError) => void;
}

type Reply =
  | { readonly seq: number; readonly changes: number[] }
  | { readonly seq: number; readonly error: string }
  | { readonly read: number; readonly json: string }
  | { readonly read: number; readonly error: string }
  | { readonly opened: true; readonly meta: [string, string][] }
  | { readonly opened: false; readonly error: string }
  | { readonly closed: true };

/**
 * The writer thread's nice value: with both cores busy under a flood, the scheduler gives the main
 * thread (the ban path) the CPU first (bench:flood A: stalls that waited for a CPU went away).
 */
const WRITER_NICE = 5;

// Plain JavaScript evaluated in the thread, so that it runs alike from the TypeScript sources (tests)
// and from the build. It opens the database (making STATE_DIR), runs the named statements it is
// sent, in one transaction per message, and answers with the rows each changed or read.
const WRITER = `
const { parentPort, workerData } = require('node:worker_threads');
const { mkdirSync } = require('node:fs');
const { dirname, resolve } = require('node:path');
// WRITER_NICE: on Linux a thread has its own nice value (raising one's own needs no privilege).
try { require('node:os').setPriority(workerData.nice); } catch {}
const Database = require(workerData.driver);
// mkdir -p one level at a time: Node 20's recursive mkdir spins forever under some parents
// (e.g. /proc/1/x/y); here every level is tried once and the first real error is thrown.
function makeDirectory(path) {
  const levels = [];
  for (let p = resolve(path); ; p = dirname(p)) {
    levels.unshift(p);
    if (dirname(p) === p) break;
  }
  for (const level of levels) {
    try { mkdirSync(level); } catch (err) { if (err.code !== 'EEXIST') throw err; }
  }
}
let db, run, openError;
const reads = {};
try {
  makeDirectory(workerData.dir);
  // No busy wait: a lock held elsewhere fails at once (a write is retried later).
  db = new Database(workerData.path, { timeout: 0 });
  // Set before the first access: the WAL index is then kept in this process's heap, not in a
  // shared mapping of the -shm file, whose page faults on a hung disk would hold the memory map of
  // the whole daemon (and, on kernels before 6.4, its event loop).
  db.pragma('locking_mode = EXCLUSIVE');
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec(workerData.schema);
  // Databases made before a column existed.
  const columns = new Set(db.prepare('PRAGMA table_info(bans)').all().map((c) => c.name));
  for (const [name, ddl] of workerData.columns) if (!columns.has(name)) db.exec(ddl);
  // A damaged page elsewhere in the file is found now, at start, not by a write later.
  const check = db.pragma('quick_check(3)').flatMap((r) => r.quick_check.split('\\n')).filter((l) => !l.startsWith('***'));
  if (check[0] !== 'ok') throw new Error('database disk image is malformed (integrity check: ' + (check[0] ?? 'failed') + ')');
  const stmts = {};
  for (const [name, sql] of Object.entries(workerData.sql)) stmts[name] = db.prepare(sql);
  run = db.transaction((calls) => calls.map(([name, args]) => stmts[name].run(...args).changes));
  for (const [name, sql] of Object.entries(workerData.reads)) reads[name] = db.prepare(sql);
  for (const name of workerData.raw) reads[name].raw(true);
  parentPort.postMessage({ opened: true, meta: reads.meta.raw().all() });
} catch (err) {
  openError = err instanceof Error ? err.message : String(err);
  try { db?.close(); } catch {}
  db = undefined;
  parentPort.postMessage({ opened: false, error: openError });
}
parentPort.on('message', ({ seq, calls, read, args, close, backup }) => {
  if (close) {
    try { db?.close(); } catch {}
    db = undefined;
    openError = 'it is closed';
    parentPort.postMessage({ closed: true });
    return;
  }
  try {
    if (openError !== undefined) throw new Error(openError);
    if (backup !== undefined) {
      // A consistent copy, made by this connection (no other may open the file while it runs).
      try {
        db.prepare('VACUUM INTO ?').run(backup);
      } catch (err) {
        // Not half a copy left behind (a full disk).
        try { require('node:fs').unlinkSync(backup); } catch {}
        throw err;
      }
      parentPort.postMessage({ read: seq, json: JSON.stringify([{ bytes: require('node:fs').statSync(backup).size }]) });
      return;
    }
    // As JSON text: one string crosses to the main thread, which parses it faster than a clone.
    if (read !== undefined) parentPort.postMessage({ read: seq, json: JSON.stringify(reads[read].all(...args)) });
    else parentPort.postMessage({ seq, changes: run(calls) });
  } catch (err) {
    const error = err instanceof Error ? err.message : String(err);
    parentPort.postMessage(read !== undefined || backup !== undefined ? { read: seq, error } : { seq, error });
  }
});
`;

/** A row of the `active` read, in its columns' order (no details). */
type RawRow = [string, 'ipv4' | 'ipv6', Enforcer, number, number | null, string, number, string, number, string | null, number];

const NO_FAILURES: readonly StoredFailure[] = Object.freeze([]);

function fromRaw(r: RawRow): StoredBan {
  const [ip, family, enforcer, started_at, expires_at, reason, failures, events, previous_bans, origin, local] = r;
  return toStored({ ip, family, enforcer, started_at, expires_at, reason, failures, events, previous_bans, origin, local }, NO_FAILURES);
}

/** A row's details; an unreadable value (hand-edited) is shown as none rather than failing a read. */
function parseDetails(text: string): StoredFailure[] {
  try {
    const v = JSON.parse(text) as unknown;
    return Array.isArray(v) ? (v as StoredFailure[]) : [];
  } catch {
    return [];
  }
}

function toHistory(r: HistoryRow): BanHistoryRow {
  return { ...toStored(r, parseDetails(r.details)), endedAt: r.ended_at, endReason: r.end_reason };
}

function toStored(r: Omit<Row, 'details'>, details: readonly StoredFailure[]): StoredBan {
  return {
    ip: r.ip,
    family: r.family,
    enforcer: r.enforcer,
    startedAt: r.started_at,
    expiresAt: r.expires_at ?? Number.POSITIVE_INFINITY,
    reason: r.reason,
    failures: r.failures,
    events: JSON.parse(r.events) as Record<string, number>,
    details,
    previousBans: r.previous_bans,
    origin: r.origin,
    local: r.local === 1,
  };
}

export class BanStore {
  readonly path: string;
  /** The thread that holds the database's one connection (writes and reads). */
  private writer: Worker | undefined;
  /** The database was opened once: writes go to the writer thread (a new one if it ended). */
  private opened = false;
  private opening: { readonly promise: Promise<void>; readonly resolve: () => void; readonly reject: (err: StoreError) => void } | undefined;
  /** The meta table (a few settings), read at open: meta() answers at once. */
  private readonly metaValues = new Map<string, string>();
  private pending: Op[] = [];
  private inFlight: { readonly ops: Op[]; readonly sentAt: number; readonly stall: NodeJS.Timeout } | undefined;
  private nextSeq = 0;
  /** Every operation numbered below this is written. */
  private written = 0;
  private flushScheduled: NodeJS.Immediate | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = RETRY_MIN_MS;
  private waiters: Waiter[] = [];
  /** Reads sent to the writer thread, by id. */
  private readonly reads = new Map<number, { readonly resolve: (rows: unknown[]) => void; readonly reject: (error: string) => void }>();
  private nextRead = 0;
  private idleWaiters: (() => void)[] = [];
  private writeErrors = 0;
  private dropped = 0;
  private lastError: StoreError | undefined;
  private closed = false;

  private readonly historyKeepMs: number;
  private readonly now: () => number;
  private readonly onWriteError: (err: StoreError) => void;
  private readonly enforcer: Enforcer;
  private readonly stallMs: number;
  private readonly dir: string;

  /**
   * For STATE_DIR/ami2ban.sqlite; nothing is opened until open(). Writes queue until then, reads
   * wait for it.
   */
  constructor(dir: string, options: StoreOptions) {
    this.historyKeepMs = options.historyKeepMs;
    this.now = options.now ?? Date.now;
    this.onWriteError = options.onWriteError ?? (() => undefined);
    this.enforcer = options.enforcer ?? 'nftables';
    this.stallMs = options.stallMs ?? STALL_MS;
    this.path = join(dir, DATABASE_FILE);
    this.dir = dir;
  }

  /** A store, opened. */
  static async open(dir: string, options: StoreOptions): Promise<BanStore> {
    const store = new BanStore(dir, options);
    await store.open();
    return store;
  }

  /** Whether the database was opened (reads answer, writes are sent to the writer thread). */
  get isOpen(): boolean {
    return this.opened;
  }

  /**
   * Opens (creating STATE_DIR and the database if needed) on the writer thread: a hung disk holds
   * that thread and this promise, never the event loop. Rejects with a StoreError naming the path
   * and the cause; it may be called again.
   */
  open(): Promise<void> {
    if (this.opened) return Promise.resolve();
    if (this.closed) return Promise.reject(new StoreError(`cannot open the ban database ${this.path}: it is closed`));
    if (this.opening === undefined) {
      let resolve!: () => void;
      let reject!: (err: StoreError) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.opening = { promise, resolve, reject };
      this.worker();
    }
    return this.opening.promise;
  }

  /** Every ban start within BAN_HISTORY_KEEP (an extension is not another ban): read once at start. */
  async banStarts(): Promise<{ ip: string; startedAt: number }[]> {
    const rows = (await this.query('reading ban history', 'starts', [this.now() - this.historyKeepMs])) as [string, number][];
    return rows.map(([ip, startedAt]) => ({ ip, startedAt }));
  }

  /** (address, account) pairs trusted after a login, not expired at `now` (BAN_TRUST_SUCCESS): read once at start. */
  async trustedPairs(now: number): Promise<{ ip: string; account: string; until: number }[]> {
    return (await this.query('reading trusted logins', 'trusted', [now])) as { ip: string; account: string; until: number }[];
  }

  /** Records trusted pairs (new, or with a later expiry). */
  recordTrust(pairs: readonly { readonly ip: string; readonly account: string; readonly until: number }[]): void {
    if (pairs.length > 0) this.enqueue(pairs.map((p): Call => ['trust', [p.ip, p.account, p.until]]));
  }

  /** Forgets revoked pairs. */
  revokeTrust(pairs: readonly { readonly ip: string; readonly account: string }[]): void {
    if (pairs.length > 0) this.enqueue(pairs.map((p): Call => ['untrust', [p.ip, p.account]]));
  }

  /**
   * Open bans that have not expired by `now`, as written (await durable() for queued ones), without
   * their failures' details (`details` empty: historyOf has them).
   */
  async activeBans(now: number): Promise<StoredBan[]> {
    return ((await this.query('reading active bans', 'active', [now])) as RawRow[]).map(fromRaw);
  }

  /**
   * Every ban of one address the history keeps (BAN_HISTORY_KEEP), oldest first: one indexed read,
   * after the writes queued before it (unless a batch is running).
   */
  async historyOf(ip: string): Promise<BanHistoryRow[]> {
    return ((await this.query('reading the history of an address', 'history', [ip])) as HistoryRow[]).map(toHistory);
  }

  /**
   * Writes a consistent copy of the database into STATE_DIR (`ami2ban-backup-<time>.sqlite`), made on
   * the writer thread after the writes queued before it: while ami2ban runs no other process can
   * open the database to copy it.
   */
  async backup(): Promise<{ path: string; bytes: number }> {
    const path = join(this.dir, `ami2ban-backup-${new Date(this.now()).toISOString().replace(/[:.]/g, '-')}.sqlite`);
    const rows = (await this.query(`writing a backup to ${path}`, { backup: path })) as { bytes: number }[];
    return { path, bytes: rows[0]?.bytes ?? 0 };
  }

  /**
   * Records a ban; an open ban of the same address is closed (as `extended` when this one
   * continues it, else `replaced`). Written with the others of the same event-loop turn.
   */
  recordBan(b: BanRecordInput): void {
    const permanent = b.until === Number.POSITIVE_INFINITY;
    this.enqueue([
      ['close', [b.at, b.extendsBan === true ? 'extended' : 'replaced', b.ip]],
      [
        'insert',
        [
          b.ip,
          b.family,
          b.at,
          permanent ? null : b.banSeconds,
          permanent ? null : Math.round(b.until),
          b.reason,
          b.failures,
          JSON.stringify(b.events),
          JSON.stringify(b.details ?? []),
          b.previousBans,
          this.enforcer,
          b.origin ?? null,
          b.local === true ? 1 : 0,
        ],
      ],
    ]);
  }

  /** Closes the open ban of an address; queued like a ban (durable() tells when it is written). */
  recordUnban(ip: string, at: number, reason: 'expired' | 'manual' | 'subnet' | 'fleet' | 'ignored' | 'not-promoted'): void {
    this.enqueue([['close', [at, reason, ip]]]);
  }

  /** A value kept between runs (the fleet's stream position), as last set; undefined when none. */
  meta(key: string): string | undefined {
    if (!this.opened) throw new StoreError(`reading a setting from ${this.path} failed: ${this.notOpenMessage()}`);
    return this.metaValues.get(key);
  }

  /** Writes such a value (queued like a ban). */
  setMeta(key: string, value: string): void {
    this.metaValues.set(key, value);
    this.enqueue([['meta', [key, value]]]);
  }

  /** Closes open bans whose time is over (e.g. while the service was down); resolves with how many. */
  expireDue(now: number): Promise<number> {
    return this.enqueueCounted('expire', [now]);
  }

  /** Deletes ended bans older than the history window; resolves with how many. */
  purge(now: number): Promise<number> {
    this.enqueue([['purgeTrust', [now]]]);
    return this.enqueueCounted('purge', [now - this.historyKeepMs]);
  }

  /**
   * Resolves once every write queued so far is done; rejects with the cause when the next
   * attempt fails (the writes stay queued and are retried with backoff).
   */
  durable(): Promise<void> {
    const upTo = this.nextSeq;
    if (this.written >= upTo) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ upTo, resolve, reject });
    });
  }

  health(): StoreHealth {
    const stalledMs = this.inFlight === undefined ? 0 : this.now() - this.inFlight.sentAt;
    const stalled = stalledMs >= this.stallMs;
    const open = this.opened;
    return {
      healthy: open && this.lastError === undefined && !stalled,
      pending: this.pending.length + (this.inFlight?.ops.length ?? 0),
      writeErrors: this.writeErrors,
      dropped: this.dropped,
      lastError: !open ? this.notOpenMessage() : stalled ? this.stallMessage(stalledMs) : (this.lastError?.message ?? null),
    };
  }

  /** Sends the queued writes now (rather than on the next loop turn). */
  flush(): void {
    if (this.flushScheduled !== undefined) clearImmediate(this.flushScheduled);
    this.flushScheduled = undefined;
    // Not open yet: writes wait in the queue (open() sends them).
    if (!this.opened) return;
    if (this.inFlight !== undefined || this.pending.length === 0 || this.closed) {
      this.settleIdle();
      return;
    }
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const ops = this.pending.length <= MAX_BATCH ? this.pending : this.pending.slice(0, MAX_BATCH);
    this.pending = ops === this.pending ? [] : this.pending.slice(MAX_BATCH);
    const calls: Call[] = [];
    for (const op of ops) for (const c of op.calls) calls.push(c);
    const sentAt = this.now();
    const stall = setTimeout(() => {
      this.onWriteError(new StoreError(this.stallMessage(this.now() - sentAt)));
    }, this.stallMs);
    stall.unref();
    this.inFlight = { ops, sentAt, stall };
    this.worker().postMessage({ seq: ops[ops.length - 1]?.seq ?? 0, calls });
  }

  /** Waits (at most 10 s) for queued writes, then stops the writer; the kernel keeps every ban. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.retryTimer !== undefined) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    this.flush();
    // Never opened: nothing can be written; the kernel keeps the bans and the next start adopts them.
    if (this.opened && (this.inFlight !== undefined || this.pending.length > 0)) {
      const idle = new Promise<void>((resolve) => this.idleWaiters.push(resolve));
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CLOSE_WAIT_MS);
      });
      await Promise.race([idle, timeout]);
      clearTimeout(timer);
    }
    this.closed = true;
    const left = this.pending.length + (this.inFlight?.ops.length ?? 0);
    if (left > 0) this.onWriteError(new StoreError(`closing ${this.path} with ${left} writes not done (the kernel keeps those bans; the next start adopts them)`));
    if (this.inFlight !== undefined) clearTimeout(this.inFlight.stall);
    const error = new StoreError(`the ban database ${this.path} is closed`);
    for (const w of this.waiters) w.reject(error);
    this.waiters = [];
    this.failReads('it is closed');
    this.opening?.reject(new StoreError(`cannot open the ban database ${this.path}: it is closed`));
    this.opening = undefined;
    const w = this.writer;
    this.writer = undefined;
    if (w !== undefined) {
      // The database is closed by its thread (its lock released, the WAL folded in); a thread stuck
      // on a hung disk is ended without.
      const closed = new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, CLOSE_THREAD_MS);
        w.on('message', (r: Reply) => {
          if ('closed' in r) {
            clearTimeout(timer);
            resolve();
          }
        });
        w.once('exit', () => {
          clearTimeout(timer);
          resolve();
        });
      });
      w.postMessage({ close: true });
      await closed;
      await w.terminate();
    }
  }

  private enqueue(calls: readonly Call[], done?: (changes: number) => void, failed?: (err: StoreError) => void): void {
    if (this.closed) {
      const error = new StoreError(`the ban database ${this.path} is closed`);
      this.onWriteError(error);
      failed?.(error);
      return;
    }
    this.pending.push({ seq: this.nextSeq++, calls, ...(done === undefined ? {} : { done }), ...(failed === undefined ? {} : { failed }) });
    if (this.pending.length > MAX_PENDING) {
      // Writes have been failing for long: keep the newest; the kernel still holds the dropped bans.
      const gone = this.pending.splice(0, this.pending.length - MAX_PENDING);
      this.dropped += gone.length;
      const error = new StoreError(`${this.path}: ${gone.length} queued writes dropped (queue full while writes fail)`);
      for (const op of gone) op.failed?.(error);
    }
    if (this.inFlight === undefined && this.retryTimer === undefined) {
      this.flushScheduled ??= setImmediate(() => {
        this.flush();
      });
    }
  }

  private enqueueCounted(statement: 'expire' | 'purge', args: readonly number[]): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.enqueue([[statement, args]], resolve, reject);
    });
  }

  private worker(): Worker {
    if (this.writer !== undefined) return this.writer;
    const driver = createRequire(import.meta.url).resolve('better-sqlite3');
    const w = new Worker(WRITER, {
      eval: true,
      workerData: { dir: this.dir, path: this.path, driver, schema: SCHEMA, columns: COLUMNS, sql: SQL, reads: READS, raw: RAW_READS, nice: WRITER_NICE },
    });
    w.unref();
    w.on('message', (r: Reply) => {
      // A thread given up (it could not open, or the store closed) is not listened to.
      if (this.writer !== w) return;
      if ('opened' in r) this.opened_(w, r);
      else if ('read' in r) this.answerRead(r);
      else if ('seq' in r) this.settle(r);
    });
    w.on('error', (err) => {
      if (this.writer !== w) return;
      this.writer = undefined;
      const error = `writer thread failed: ${errorMessage(err)}`;
      this.failReads(error);
      this.opening?.reject(new StoreError(`cannot open the ban database ${this.path}: ${error}`));
      this.opening = undefined;
      this.settle({ seq: -1, error });
    });
    w.on('exit', () => {
      if (this.writer !== w) return;
      this.writer = undefined;
      // Its reads will not be answered (a write in flight fails through 'error' or the stall timer).
      this.failReads('the writer thread ended');
    });
    this.writer = w;
    return w;
  }

  /** A writer thread opened the database, or could not. */
  private opened_(w: Worker, r: Extract<Reply, { opened: boolean }>): void {
    if (r.opened) {
      // Values set before (by an earlier thread) are newer than the file's.
      if (!this.opened) for (const [key, value] of r.meta) this.metaValues.set(key, value);
      this.opened = true;
      this.opening?.resolve();
      this.opening = undefined;
      // Writes queued before it was open go now.
      if (this.pending.length > 0 && this.inFlight === undefined && this.retryTimer === undefined) this.flushScheduled ??= setImmediate(() => { this.flush(); });
      return;
    }
    this.writer = undefined;
    void w.terminate();
    const error = new StoreError(`cannot open the ban database ${this.path}: ${r.error}`);
    this.failReads(error.message);
    this.opening?.reject(error);
    this.opening = undefined;
    // A thread made again after one ended: its batch fails and is retried with backoff.
    this.settle({ seq: -1, error: r.error });
  }

  private answerRead(r: Extract<Reply, { read: number }>): void {
    const pending = this.reads.get(r.read);
    if (pending === undefined) return;
    this.reads.delete(r.read);
    if ('error' in r) pending.reject(r.error);
    else pending.resolve(JSON.parse(r.json) as unknown[]);
  }

  private failReads(error: string): void {
    const pending = [...this.reads.values()];
    this.reads.clear();
    for (const p of pending) p.reject(error);
  }

  private settle(r: Extract<Reply, { seq: number }>): void {
    const batch = this.inFlight;
    if (batch === undefined) return;
    this.inFlight = undefined;
    clearTimeout(batch.stall);
    if ('error' in r) {
      const error = new StoreError(`writing to the ban database ${this.path} failed: ${r.error}`);
      this.writeErrors++;
      this.lastError = error;
      this.onWriteError(error);
      // Oldest first: the failed batch goes back ahead of what came since.
      this.pending = batch.ops.concat(this.pending);
      const waiters = this.waiters;
      this.waiters = [];
      for (const w of waiters) w.reject(error);
      if (!this.closed) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          this.flush();
        }, this.retryMs);
        this.retryTimer.unref();
        this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
      }
      this.settleIdle();
      return;
    }
    this.lastError = undefined;
    this.retryMs = RETRY_MIN_MS;
    let i = 0;
    for (const op of batch.ops) {
      i += op.calls.length;
      op.done?.(r.changes[i - 1] ?? 0);
    }
    this.written = (batch.ops[batch.ops.length - 1]?.seq ?? -1) + 1;
    // What is written is counted by the database now.
    const left: Waiter[] = [];
    for (const w of this.waiters) {
      if (w.upTo <= this.written) w.resolve();
      else left.push(w);
    }
    this.waiters = left;
    if (this.pending.length > 0) this.flush();
    else this.settleIdle();
  }

  private settleIdle(): void {
    if (this.inFlight !== undefined || this.pending.length > 0) return;
    const idle = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of idle) resolve();
  }

  private notOpenMessage(): string {
    return `the ban database ${this.path} is not open yet: STATE_DIR does not answer (disk hung?)`;
  }

  private stallMessage(ms: number): string {
    return `a write to the ban database ${this.path} has not completed for ${Math.round(ms / 1000)} s (disk hung or full?)`;
  }

  /** A read on the writer thread, once the database is open; rejects with a StoreError naming the file. */
  private async query(what: string, name: ReadName | { readonly backup: string }, args: readonly (string | number)[] = []): Promise<unknown[]> {
    const fail = (why: string): StoreError => new StoreError(`${what} from ${this.path} failed: ${why}`);
    if (this.closed) throw fail('it is closed');
    if (!this.opened) {
      if (this.opening === undefined) throw fail(this.notOpenMessage());
      await this.opening.promise;
    }
    // Queued writes go first (unless a batch is running): a ban just decided is in its history.
    this.flush();
    const id = this.nextRead++;
    return new Promise<unknown[]>((resolve, reject) => {
      this.reads.set(id, {
        resolve,
        reject: (error) => {
          reject(fail(error));
        },
      });
      this.worker().postMessage(typeof name === 'string' ? { seq: id, read: name, args } : { seq: id, backup: name.backup });
    });
  }
}
