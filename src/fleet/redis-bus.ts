// The DecisionBus on Redis (node-redis). Key schema under FLEET_NAME (documented in the README):
//   <name>:ban:<ip>        one key per ban in force, the decision's JSON, expiring at its end (PXAT)
//   <name>:bans            sorted set of the bans in force by end (ms; +inf = permanent)
//   <name>:stream          every ban and unban, in order (XADD MAXLEN ~)
//   <name>:hosts           hash of host id → last heartbeat (ms)
//   <name>:fail:<ip>:<n>   failures of an address in time bucket n, across the fleet (FLEET_MAXRETRY)
//   <name>:lock:<ip>       the host that bans an address for the fleet
//   <name>:epoch           this Redis's data generation (gone with its data: a restart empty, a lost failover)
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log/logger.js';
import type { BusEvents, BusState, BusStatus, DecisionBus, FleetHost } from './bus.js';
import { type DecodeError, type FleetBan, type FleetDecision, decode, encode } from './decision.js';

export interface RedisEndpoint {
  readonly host: string;
  readonly port: number;
}

export interface RedisBusOptions {
  /** `redis://` or `rediss://` (TLS), with user and password if any; with sentinels: credentials, TLS and db only. */
  readonly url: string | undefined;
  readonly password?: string;
  /** PEM text of the CA to trust for rediss://. */
  readonly ca?: string;
  /** Redis Sentinel: the primary is asked of them at every connection. */
  readonly sentinels?: readonly RedisEndpoint[];
  readonly master?: string;
  readonly name: string;
  readonly hostId: string;
  readonly publish: boolean;
  readonly streamMaxLen: number;
  readonly outboxMax: number;
  /** How often this host's bans are re-asserted (anti-entropy). */
  readonly resyncMs: number;
  /** Fleet-wide threshold; absent = off. */
  readonly threshold?: { readonly maxRetry: number; readonly findTimeMs: number };
  /** The stream position (`epoch/id`), kept between runs. */
  readonly cursor: { load(): string | null; save(position: string): void };
  /** This host's shared bans in force (re-asserted: what a failover lost comes back). */
  readonly ownBans: () => Iterable<FleetBan>;
  readonly logger: Logger;
  readonly now?: () => number;
  /** Heartbeat period; a heartbeat unanswered for 2 periods drops the connection. */
  readonly heartbeatMs?: number;
}

const READ_COUNT = 1000;
const CHUNK = 1000;
/** Reads in flight for one part of a snapshot (PART_READS × CHUNK bans). */
const PART_READS = 10;
// Decisions per publishing script: a burst reaches the readers in replies of this many.
const PUBLISH_BATCH = 250;
const BLOCK_MS = 1000;
const RETRY_MIN_MS = 200;
const RETRY_MAX_MS = 5000;
const CONNECT_TIMEOUT_MS = 3000;
const FAIL_FLUSH_MS = 250;
// Addresses counted per flush (4 per second): a scan of more is counted in part (the local threshold still holds).
const MAX_COUNTED = 10_000;

// Decisions in order, in one script: the hosts reading the stream get them in one reply, not one
// each. KEYS: the sorted set, the stream, then each decision's key; ARGV: MAXLEN, '1' when
// re-asserting, then op, ip, until ('inf': permanent) or the unban's time, entry per decision.
// A ban is stored unless a longer one of the address is (or, re-asserting, any); last writer wins
// for an unban (a ban decided after it stays). Every stored decision goes on the stream; 1 or 0 each.
const PUBLISH = `
local out = {}
for k = 3, #KEYS do
  local a = 3 + (k - 3) * 4
  local op, ip, t, entry = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local cur = redis.call('GET', KEYS[k])
  local ok, old = false, nil
  if cur then ok, old = pcall(cjson.decode, cur) end
  local keep = false
  if op == 'ban' then
    if cur and (ARGV[2] == '1' or (ok and type(old) == 'table' and (old['until'] == cjson.null or (t ~= 'inf' and type(old['until']) == 'number' and old['until'] >= tonumber(t))))) then keep = true end
    if not keep then
      if t == 'inf' then redis.call('SET', KEYS[k], entry) else redis.call('SET', KEYS[k], entry, 'PXAT', t) end
      redis.call('ZADD', KEYS[1], t, ip)
    end
  else
    if cur and ok and type(old) == 'table' and type(old['at']) == 'number' and old['at'] > tonumber(t) then keep = true end
    if not keep then
      if cur then redis.call('DEL', KEYS[k]) end
      redis.call('ZREM', KEYS[1], ip)
    end
  end
  if keep then
    out[#out + 1] = 0
  else
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'd', entry)
    out[#out + 1] = 1
  end
end
return out
`;

// Adds this host's failures to the current bucket and sums the window; the first host over the
// threshold takes the lock and bans for everyone (returns the sum), the others get 0.
const COUNT_FAILURES = `
local total = redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
for i = 3, #KEYS do total = total + tonumber(redis.call('GET', KEYS[i]) or '0') end
if total >= tonumber(ARGV[3]) and redis.call('SET', KEYS[1], ARGV[5], 'NX', 'PX', ARGV[4]) then return total end
return 0
`;

/** What we use of a node-redis client (RESP2 replies: arrays and strings). */
interface Client {
  connect(): Promise<unknown>;
  sendCommand<T>(args: readonly string[]): Promise<T>;
  duplicate(): Client;
  destroy(): void;
  on(event: 'error', listener: (err: unknown) => void): unknown;
}

// node-redis' client class, loaded only with a fleet (a daemon without one never pays for it). A
// bus starts loading it when it is made, so that it loads while the daemon's start waits on
// nftables, not after. Its own module, not the package's index: the index also loads the cluster,
// sentinel, pool and multi-database clients (0.24 s against 0.16 s, on the start's main thread).
type RedisClientClass = new (options: object) => unknown;
let redisClient: Promise<RedisClientClass> | undefined;

function redisModule(): Promise<RedisClientClass> {
  if (redisClient === undefined) {
    redisClient = import('@redis/client/dist/lib/client/index.js').then((m) => {
      // A CommonJS module whose `exports.default` is the class: node gives the exports object as
      // the default, vitest's interop the class itself.
      const d: unknown = m.default;
      return (typeof d === 'function' ? d : (d as { default: unknown }).default) as RedisClientClass;
    });
    // A failure is the first connection's to report; this one only must not go unhandled.
    redisClient.catch(() => undefined);
  }
  return redisClient;
}

async function newClient(options: { url?: string; password?: string; disableOfflineQueue?: boolean; socket: Record<string, unknown> }): Promise<Client> {
  const RedisClient = await redisModule();
  // The plain class, not createClient(): that one first builds a subclass with a method per Redis
  // command (0.13 s of a start, and its garbage), and we send every command with sendCommand.
  return new RedisClient({ ...options, RESP: 2 }) as Client;
}

/** The stream's first and newest ids ('0-0' and null when it does not exist). */
interface StreamEnds {
  readonly first: string | null;
  readonly last: string;
}

/** What prepare() reads before start(): where the stream was, then the bans in force. */
interface ReadAhead {
  readonly ends: StreamEnds;
  readonly members: readonly string[];
  readonly firstPart: Promise<(string | null)[]>;
}

interface Connection {
  readonly cmd: Client;
  readonly reader: Client;
  readonly sha: { readonly publish: string; readonly count: string };
  /** The data generation of this Redis (set by the first host after it started empty). */
  readonly epoch: string;
}

/** Stream ids compared as (ms, seq). */
export function compareIds(a: string, b: string): number {
  const [am = 0, as = 0] = a.split('-').map(Number);
  const [bm = 0, bs = 0] = b.split('-').map(Number);
  return am !== bm ? am - bm : as - bs;
}

function idTime(id: string): number {
  return Number(id.split('-')[0]);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

export class RedisDecisionBus extends EventEmitter<BusEvents> implements DecisionBus {
  private readonly keys: { readonly bans: string; readonly stream: string; readonly hosts: string };
  private readonly now: () => number;
  private conn: Connection | undefined;
  private state: BusState = 'connecting';
  private stopped = false;
  private running: Promise<void> | undefined;
  /** A connection opened by prepare(), for run() to take over. */
  private early: Promise<Connection> | undefined;
  /** The start's snapshot, begun on that connection by prepare(). */
  private ahead: Promise<ReadAhead> | undefined;
  private cursor: string | null = null;
  /** The bus's data generation the cursor belongs to (a key Redis loses with its data). */
  private epoch: string | null = null;
  private connectedSince: number | null = null;
  private lastError: string | null = null;
  private outbox: FleetDecision[] = [];
  private outboxDropped = 0;
  private flushing = false;
  private flushScheduled = false;
  private lagMs = 0;
  private readonly published = { ban: 0, unban: 0 };
  private snapshots = 0;
  private reconnects = 0;
  private hosts: FleetHost[] = [];
  private heartbeat: NodeJS.Timeout | undefined;
  private resync: NodeJS.Timeout | undefined;
  private failures = new Map<string, number>();
  private failTimer: NodeJS.Timeout | undefined;
  /** Resolves on stop(): a reconnection backoff does not hold the shutdown. */
  private readonly stopSignal: Promise<void>;
  private signalStop: () => void = () => undefined;

  constructor(private readonly o: RedisBusOptions) {
    super();
    this.keys = { bans: `${o.name}:bans`, stream: `${o.name}:stream`, hosts: `${o.name}:hosts` };
    this.now = o.now ?? Date.now;
    this.stopSignal = new Promise((resolve) => {
      this.signalStop = resolve;
    });
    void redisModule();
  }

  /**
   * Connects while the daemon's own start waits on nftables and the database (the client's
   * creation and five round trips), so that start() begins with the snapshot. Its failure is the
   * first connection attempt's, reported by start().
   */
  prepare(): void {
    if (this.stopped || this.running !== undefined || this.early !== undefined) return;
    this.early = this.connect();
    this.early.catch(() => undefined);
    // The start always takes a snapshot: Redis reads its first part meanwhile too.
    this.ahead = this.early.then((conn) => this.readAhead(conn));
    this.ahead.catch(() => undefined);
  }

  start(): void {
    if (this.running === undefined) {
      // Read here, not when made: a daemon started without its database starts its bus once that opens.
      const [epoch, id] = (this.o.cursor.load() ?? '').split('/');
      this.epoch = epoch !== undefined && id !== undefined ? epoch : null;
      this.cursor = epoch !== undefined && id !== undefined ? id : null;
    }
    this.running ??= this.run();
    const every = this.o.heartbeatMs ?? 1000;
    this.heartbeat = setInterval(() => {
      void this.beat(every * 2);
    }, every);
    this.heartbeat.unref();
    this.resync = setInterval(() => {
      void this.reassert();
    }, this.o.resyncMs);
    this.resync.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.signalStop();
    clearInterval(this.heartbeat);
    clearInterval(this.resync);
    clearTimeout(this.failTimer);
    // What is queued goes out if the connection is up; the rest is re-asserted at the next start.
    if (this.conn !== undefined && this.state === 'connected') await Promise.race([this.flushOutbox(), sleep(2000)]);
    this.setState('stopped', null);
    this.drop();
    // Prepared, never started (the daemon's start failed): its connection is closed once open.
    const early = this.early;
    this.early = undefined;
    this.ahead = undefined;
    void early?.then(
      (c) => {
        c.cmd.destroy();
        c.reader.destroy();
      },
      () => undefined,
    );
    // A connection attempt to an unreachable server may still be pending: it is not waited for.
    await Promise.race([this.running, sleep(500)]);
  }

  publish(d: FleetDecision): void {
    if (!this.o.publish || this.stopped) return;
    this.outbox.push(d);
    if (this.outbox.length > this.o.outboxMax) {
      // The oldest go, a hundredth at a time: one shift per decision would cost the whole array each.
      const n = this.outbox.length - this.o.outboxMax + Math.ceil(this.o.outboxMax / 100);
      this.outbox.splice(0, n);
      this.outboxDropped += n;
    }
    if (this.flushScheduled || this.state !== 'connected') return;
    // Once the code that decided it has run (the decisions of one slice go together), after the
    // kernel's transaction, which was queued first.
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      void this.flushOutbox();
    });
  }

  countFailures(ip: string, n: number): void {
    if (this.o.threshold === undefined || this.stopped) return;
    if (this.failures.size >= MAX_COUNTED && !this.failures.has(ip)) return;
    this.failures.set(ip, (this.failures.get(ip) ?? 0) + n);
    this.failTimer ??= setTimeout(() => {
      this.failTimer = undefined;
      void this.flushFailures();
    }, FAIL_FLUSH_MS);
  }

  status(): BusStatus {
    return {
      state: this.state,
      hostId: this.o.hostId,
      server: this.describe(),
      connectedSince: this.connectedSince,
      lastError: this.lastError,
      outbox: this.outbox.length,
      outboxDropped: this.outboxDropped,
      lagMs: this.lagMs,
      cursor: this.cursor,
      published: { ...this.published },
      snapshots: this.snapshots,
      reconnects: this.reconnects,
      hosts: this.hosts,
    };
  }

  private describe(): string {
    if (this.o.sentinels !== undefined && this.o.sentinels.length > 0) {
      return `sentinel ${this.o.master ?? 'mymaster'}@${this.o.sentinels.map((s) => `${s.host}:${String(s.port)}`).join(',')}`;
    }
    try {
      const u = new URL(this.o.url ?? '');
      return `${u.protocol}//${u.host}${u.pathname === '/' ? '' : u.pathname}`;
    } catch {
      return '(invalid url)';
    }
  }

  private setState(state: BusState, error: string | null): void {
    if (error !== null) this.lastError = error;
    if (state === this.state) return;
    this.state = state;
    this.emit('state', state, error);
  }

  private async run(): Promise<void> {
    let delay = RETRY_MIN_MS;
    let first = true;
    while (!this.stopped) {
      try {
        const early = this.early;
        const ahead = this.ahead;
        this.early = undefined;
        this.ahead = undefined;
        const conn = await (early ?? this.connect());
        this.conn = conn;
        await this.catchUp(conn, first, ahead);
        first = false;
        this.connectedSince = this.now();
        this.setState('connected', null);
        delay = RETRY_MIN_MS;
        void this.flushOutbox();
        void this.reassert();
        void this.beat((this.o.heartbeatMs ?? 1000) * 2);
        await this.readLoop(conn, ahead !== undefined);
      } catch (err) {
        if (!this.isStopped()) this.setState('degraded', errorMessage(err));
      }
      this.drop();
      // (stop() may have come meanwhile: the loop's condition is read again after each await.)
      if (this.isStopped()) break;
      await Promise.race([sleep(delay * (0.5 + Math.random() / 2)), this.stopSignal]);
      delay = Math.min(RETRY_MAX_MS, delay * 2);
      this.reconnects++;
    }
  }

  /** Closes the connection (a blocked read ends with an error). */
  private drop(): void {
    const c = this.conn;
    this.conn = undefined;
    this.connectedSince = null;
    if (c === undefined) return;
    c.cmd.destroy();
    c.reader.destroy();
  }

  private isStopped(): boolean {
    return this.stopped;
  }

  private lost(err: unknown): void {
    if (this.stopped) return;
    this.setState('degraded', errorMessage(err));
    this.drop();
  }

  private async primary(): Promise<string> {
    const sentinels = this.o.sentinels ?? [];
    const base = this.o.url ?? 'redis://localhost';
    if (sentinels.length === 0) return base;
    const master = this.o.master ?? 'mymaster';
    const errors: string[] = [];
    for (const s of sentinels) {
      const c = await newClient({ socket: { host: s.host, port: s.port, connectTimeout: 1000, reconnectStrategy: false } });
      c.on('error', () => undefined);
      try {
        await c.connect();
        const addr = await c.sendCommand<[string, string] | null>(['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', master]);
        if (addr !== null) {
          const u = new URL(base);
          u.hostname = addr[0].includes(':') ? `[${addr[0]}]` : addr[0];
          u.port = addr[1];
          return u.toString();
        }
        errors.push(`${s.host}:${String(s.port)} knows no primary named ${master}`);
      } catch (err) {
        errors.push(`${s.host}:${String(s.port)}: ${errorMessage(err)}`);
      } finally {
        c.destroy();
      }
    }
    throw new Error(`no sentinel answered with the primary: ${errors.join('; ')}`);
  }

  private async connect(): Promise<Connection> {
    const url = await this.primary();
    const cmd = await newClient({
      url,
      ...(this.o.password === undefined ? {} : { password: this.o.password }),
      disableOfflineQueue: true,
      socket: { connectTimeout: CONNECT_TIMEOUT_MS, reconnectStrategy: false, ...(this.o.ca !== undefined && url.startsWith('rediss:') ? { tls: true, ca: this.o.ca } : {}) },
    });
    const reader = cmd.duplicate();
    for (const c of [cmd, reader]) {
      c.on('error', (err: unknown) => {
        if (this.conn?.cmd === cmd) this.lost(err);
      });
    }
    try {
      await Promise.all([cmd.connect(), reader.connect()]);
      // After a failover the old primary comes back as a replica: never write there.
      const role = await cmd.sendCommand<unknown[]>(['ROLE']);
      if (role[0] !== 'master') throw new Error(`${this.describe()} is a ${String(role[0])}, not the primary`);
      const [publish, count] = await Promise.all([PUBLISH, COUNT_FAILURES].map((s) => cmd.sendCommand<string>(['SCRIPT', 'LOAD', s])));
      await cmd.sendCommand(['SET', `${this.o.name}:epoch`, randomUUID(), 'NX']);
      const epoch = (await cmd.sendCommand<string | null>(['GET', `${this.o.name}:epoch`])) ?? '';
      return { cmd, reader, sha: { publish: publish ?? '', count: count ?? '' }, epoch };
    } catch (err) {
      cmd.destroy();
      reader.destroy();
      throw err;
    }
  }

  private async streamEnds(conn: Connection): Promise<StreamEnds> {
    const [first, last] = await Promise.all([
      conn.cmd.sendCommand<[string, unknown][]>(['XRANGE', this.keys.stream, '-', '+', 'COUNT', '1']),
      conn.cmd.sendCommand<[string, unknown][]>(['XREVRANGE', this.keys.stream, '+', '-', 'COUNT', '1']),
    ]);
    return { first: first[0]?.[0] ?? null, last: last[0]?.[0] ?? '0-0' };
  }

  /**
   * At start, and when entries this host had not read were trimmed: a snapshot. A stream behind
   * our position is another one (Redis lost its data): its snapshot is not the whole truth.
   */
  private async catchUp(conn: Connection, always: boolean, ahead?: Promise<ReadAhead>): Promise<void> {
    const read = await ahead;
    const ends = read?.ends ?? (await this.streamEnds(conn));
    const c = this.cursor;
    // Another generation of the data (Redis restarted empty): our position means nothing there.
    const foreign = c !== null && (this.epoch !== conn.epoch || compareIds(c, ends.last) > 0);
    const trimmed = c !== null && ends.first !== null && compareIds(c, ends.first) < 0;
    this.epoch = conn.epoch;
    if (always || c === null || trimmed || foreign) await this.snapshot(conn, ends.last, !foreign, read);
  }

  /** The stream's ends, then the bans in force and the snapshot's first part, read ahead of start(). */
  private async readAhead(conn: Connection): Promise<ReadAhead> {
    const ends = await this.streamEnds(conn);
    const members = await this.inForce(conn);
    const firstPart = this.part(conn, members, 0);
    firstPart.catch(() => undefined);
    return { ends, members, firstPart };
  }

  private inForce(conn: Connection): Promise<string[]> {
    return conn.cmd.sendCommand<string[]>(['ZRANGE', this.keys.bans, String(this.now()), '+inf', 'BYSCORE']);
  }

  /** The values of a part's bans: PART_READS reads of CHUNK keys in flight (null: ended since). */
  private async part(conn: Connection, members: readonly string[], start: number): Promise<(string | null)[]> {
    const reads: Promise<(string | null)[]>[] = [];
    for (let i = start; i < Math.min(members.length, start + PART_READS * CHUNK); i += CHUNK) {
      reads.push(conn.cmd.sendCommand<(string | null)[]>(['MGET', ...members.slice(i, i + CHUNK).map((ip) => this.banKey(ip))]));
    }
    return (await Promise.all(reads)).flat();
  }

  /**
   * Every ban in force, then the stream from an id taken before it was read. A part is handed over
   * as soon as it is read, and the host applies it while the next is read.
   */
  private async snapshot(conn: Connection, from: string, complete: boolean, read?: ReadAhead): Promise<void> {
    const members = read?.members ?? (await this.inForce(conn));
    const size = PART_READS * CHUNK;
    let next = read?.firstPart ?? this.part(conn, members, 0);
    for (let i = 0; ; i += size) {
      const values = await next;
      const last = i + size >= members.length;
      // Redis reads the next part while this one is decoded and applied.
      if (!last) next = this.part(conn, members, i + size);
      const bans: FleetBan[] = [];
      for (const v of values) {
        if (v === null) continue; // ended since the range was read
        const d = decode(v);
        if (typeof d === 'string') this.refuse(d);
        else if (d.op === 'ban' && d.origin !== this.o.hostId) bans.push(d);
      }
      if (last) {
        this.snapshots++;
        this.setCursor(from);
        this.lagMs = 0;
      }
      this.emit('snapshot', bans, complete, i === 0, last);
      if (last) return;
    }
  }

  private refuse(reason: DecodeError): void {
    this.emit('rejected', reason);
  }

  private setCursor(id: string): void {
    this.cursor = id;
    this.o.cursor.save(`${this.epoch ?? ''}/${id}`);
  }

  /** `readAhead`: the position came from a snapshot read ahead of a start, maybe long before it. */
  private async readLoop(conn: Connection, readAhead: boolean): Promise<void> {
    // Then checked first as when behind: the stream may have been trimmed past that position
    // while the start waited (for its database, say).
    let full = readAhead;
    while (!this.stopped && this.conn === conn) {
      if (full) {
        // Behind: entries not yet read may have been trimmed meanwhile.
        const ends = await this.streamEnds(conn);
        this.lagMs = Math.max(0, idTime(ends.last) - idTime(this.cursor ?? '0-0'));
        if (ends.first !== null && this.cursor !== null && compareIds(this.cursor, ends.first) < 0) {
          await this.snapshot(conn, ends.last, true);
          full = false;
          continue;
        }
      }
      const reply = await conn.reader.sendCommand<[string, [string, string[]][]][] | null>([
        'XREAD',
        'COUNT',
        String(READ_COUNT),
        'BLOCK',
        String(BLOCK_MS),
        'STREAMS',
        this.keys.stream,
        this.cursor ?? '$',
      ]);
      const entries = reply?.[0]?.[1] ?? [];
      full = entries.length >= READ_COUNT;
      if (!full) this.lagMs = 0;
      if (entries.length === 0) continue;
      const decisions: FleetDecision[] = [];
      for (const [, fields] of entries) {
        const d = decode(fields[fields.indexOf('d') + 1]);
        if (typeof d === 'string') this.refuse(d);
        else if (d.origin !== this.o.hostId) decisions.push(d);
      }
      // Told before the position is saved: their kernel transaction goes first, their rows are
      // queued before the position (a crash between the two reads them again, which changes nothing).
      if (decisions.length > 0) this.emit('decisions', decisions);
      const last = entries[entries.length - 1];
      if (last !== undefined) this.setCursor(last[0]);
    }
  }

  private banKey(ip: string): string {
    return `${this.o.name}:ban:${ip}`;
  }

  /** Decisions in order, PUBLISH_BATCH per script (one stream reply for the readers); 1 or 0 each (stored or not). */
  private async send(conn: Connection, ds: readonly FleetDecision[], onlyIfMissing: boolean): Promise<number[]> {
    const calls: Promise<number[]>[] = [];
    for (let i = 0; i < ds.length; i += PUBLISH_BATCH) {
      const keys: string[] = [this.keys.bans, this.keys.stream];
      const args: string[] = [String(this.o.streamMaxLen), onlyIfMissing ? '1' : '0'];
      for (const d of ds.slice(i, i + PUBLISH_BATCH)) {
        keys.push(this.banKey(d.ip));
        const t = d.op === 'unban' ? String(d.at) : d.until === Number.POSITIVE_INFINITY ? 'inf' : String(Math.round(d.until));
        args.push(d.op, d.ip, t, encode(d));
      }
      calls.push(conn.cmd.sendCommand<number[]>(['EVALSHA', conn.sha.publish, String(keys.length), ...keys, ...args]));
    }
    return (await Promise.all(calls)).flat();
  }

  private async flushOutbox(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.outbox.length > 0) {
        const conn = this.conn;
        if (conn === undefined || this.state !== 'connected') return;
        const batch = this.outbox.splice(0, CHUNK);
        try {
          await this.send(conn, batch, false);
        } catch (err) {
          // Kept, oldest first, for the next connection.
          this.outbox = batch.concat(this.outbox);
          this.lost(err);
          return;
        }
        for (const d of batch) this.published[d.op]++;
      }
    } finally {
      this.flushing = false;
    }
  }

  /** Re-asserts this host's bans the fleet no longer holds (a failover lost them, or Redis restarted empty). */
  private async reassert(): Promise<void> {
    const conn = this.conn;
    if (conn === undefined || this.state !== 'connected' || !this.o.publish) return;
    try {
      await conn.cmd.sendCommand(['ZREMRANGEBYSCORE', this.keys.bans, '-inf', String(this.now())]);
      let chunk: FleetBan[] = [];
      let restored = 0;
      const send = async (): Promise<void> => {
        const r = await this.send(conn, chunk, true);
        restored += r.filter((n) => n === 1).length;
        chunk = [];
      };
      const now = this.now();
      for (const b of this.o.ownBans()) {
        if (b.until <= now) continue;
        chunk.push(b);
        if (chunk.length >= CHUNK) await send();
      }
      if (chunk.length > 0) await send();
      if (restored > 0) this.o.logger.info('fleet: re-published bans of this host the bus had lost', { bans: restored });
    } catch (err) {
      this.lost(err);
    }
  }

  private async flushFailures(): Promise<void> {
    const t = this.o.threshold;
    const conn = this.conn;
    const counts = this.failures;
    this.failures = new Map();
    // Counted only while connected: the local threshold still holds meanwhile.
    if (t === undefined || conn === undefined || this.state !== 'connected') return;
    const bucketMs = Math.max(1000, Math.ceil(t.findTimeMs / 10));
    const now = this.now();
    const current = Math.floor(now / bucketMs);
    const oldest = Math.floor((now - t.findTimeMs) / bucketMs) + 1;
    const ttl = String(t.findTimeMs + bucketMs);
    const lockMs = String(Math.min(t.findTimeMs, 60_000));
    try {
      await Promise.all(
        [...counts].map(async ([ip, n]) => {
          const keys = [`${this.o.name}:lock:${ip}`, `${this.o.name}:fail:${ip}:${String(current)}`];
          for (let b = oldest; b < current; b++) keys.push(`${this.o.name}:fail:${ip}:${String(b)}`);
          const won = await conn.cmd.sendCommand<number>(['EVALSHA', conn.sha.count, String(keys.length), ...keys, String(n), ttl, String(t.maxRetry), lockMs, this.o.hostId]);
          if (won > 0) this.emit('threshold', ip, won);
        }),
      );
    } catch (err) {
      this.lost(err);
    }
  }

  private async beat(timeoutMs: number): Promise<void> {
    const conn = this.conn;
    if (conn === undefined || this.state !== 'connected') return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new Error(`no answer from ${this.describe()} within ${String(timeoutMs)} ms`));
      }, timeoutMs);
    });
    try {
      // A write: a primary turned replica (failover) answers with an error, and we look again.
      const beat = conn.cmd.sendCommand(['HSET', this.keys.hosts, this.o.hostId, String(this.now())]);
      const hosts = conn.cmd.sendCommand<string[]>(['HGETALL', this.keys.hosts]);
      const [, list] = await Promise.race([Promise.all([beat, hosts]), timeout]);
      const seen: FleetHost[] = [];
      for (let i = 0; i + 1 < list.length; i += 2) seen.push({ id: list[i] ?? '', lastSeen: Number(list[i + 1]) });
      this.hosts = seen.sort((a, b) => a.id.localeCompare(b.id));
    } catch (err) {
      if (this.conn === conn) this.lost(err);
    } finally {
      clearTimeout(timer);
    }
  }
}
