// The nftables backend: our own table, per-family timeout sets, batched transactions, reconcile.
import type { IpFamily } from '../common/ip.js';
import { FirewallError, errorMessage } from '../errors.js';
import type { Logger } from '../log/logger.js';
import type { BanItem, ExistingBan, Firewall } from './firewall.js';
import {
  COUNTER_NAME,
  type CounterValues,
  type ListedElement,
  type NftCommand,
  PROBE_SET,
  type RulesetOptions,
  NET_SET_NAME,
  SET_NAME,
  banValue,
  setOf,
  chainName,
  element,
  elementCommand,
  expectedRuleComments,
  listedChains,
  listedCounter,
  listedElements,
  setupCommands,
} from './ruleset.js';
import type { NftRunner } from './runner.js';

export interface NftablesFirewallOptions extends RulesetOptions {
  readonly runner: NftRunner;
  /**
   * A second context for reads made for observers (counters for /metrics, the periodic check).
   * libnftables 1.0.6 reads every set element for those: on their own context they never make a
   * ban wait behind them. Defaults to `runner`.
   */
  readonly observerRunner?: NftRunner;
  readonly logger: Logger;
  readonly cleanupOnExit: boolean;
  /** How often the table is checked for an operator's flush; 0 = never. */
  readonly checkIntervalMs: number;
  /** Most elements per transaction. */
  readonly maxBatch?: number;
  /** How long decisions are gathered before a transaction is committed. */
  readonly flushDelayMs?: number;
  readonly now?: () => number;
  /** Told of every element transaction: its duration, size and outcome (metrics). */
  readonly onTransaction?: (seconds: number, elements: number, ok: boolean) => void;
  /**
   * The bans in force, from their owner (the service): re-added when the table has to be
   * recreated (an operator's `nft flush ruleset`). The firewall keeps no ban state of its own.
   */
  readonly bansInForce?: () => Iterable<ExistingBan>;
}

/** set: the element ends up with exactly this timeout, present before or not; add: a present one is left as it is. */
type OpKind = 'set' | 'add' | 'delete';

/** Told how the ops it was given ended, by their index. */
interface Outcome {
  ok(index: number): void;
  failed(index: number, err: Error): void;
}

interface Op {
  readonly kind: OpKind;
  readonly ip: string;
  readonly family: IpFamily;
  readonly seconds: number;
  readonly outcome: Outcome;
  readonly index: number;
}

/** For ops nobody waits on (the bans re-applied after a repair). */
const NO_OUTCOME: Outcome = { ok: () => undefined, failed: () => undefined };

/** The outcome of one op: a promise. */
function single(resolve: () => void, reject: (err: Error) => void): Outcome {
  return { ok: resolve, failed: (_, err) => { reject(err); } };
}

/** The outcomes of many ops: one promise, each one's error message or null. */
function many(n: number, resolve: (results: (string | null)[]) => void): Outcome {
  const results = new Array<string | null>(n).fill(null);
  let left = n;
  return {
    ok: () => {
      if (--left === 0) resolve(results);
    },
    failed: (i, err) => {
      results[i] = err.message;
      if (--left === 0) resolve(results);
    },
  };
}

export interface BatchStats {
  transactions: number;
  elements: number;
  failedTransactions: number;
  failedElements: number;
  repairs: number;
}

const FAMILIES: readonly IpFamily[] = ['ipv4', 'ipv6'];
/** Listings of an address set at most, while each gives some element twice. */
const MAX_LISTINGS = 4;
const RULES_CHECK_EVERY = 10;
/** How stale the dropped-packet counters shown in /metrics may be. */
const COUNTERS_MAX_AGE_MS = 30_000;

export class NftablesFirewall implements Firewall {
  readonly name: string;
  readonly stats: BatchStats = { transactions: 0, elements: 0, failedTransactions: 0, failedElements: 0, repairs: 0 };
  private queue: Op[] = [];
  private flushTimer: { cancel(): void } | undefined;
  private flushing: Promise<void> | undefined;
  private checkTimer: NodeJS.Timeout | undefined;
  private readonly maxBatch: number;
  private readonly now: () => number;
  private readonly log: Logger;
  private readonly observer: NftRunner;
  private checks = 0;
  private checking = false;
  private countersInFlight: Promise<Record<IpFamily, CounterValues>> | undefined;
  private countersCache: { readonly values: Record<IpFamily, CounterValues>; readonly at: number } | undefined;

  constructor(private readonly o: NftablesFirewallOptions) {
    this.name = `nftables (${o.runner.backend})`;
    // Bounded chunks: a failing one is split by halves, and one chunk never holds the loop long.
    this.maxBatch = o.maxBatch ?? 500;
    this.now = o.now ?? Date.now;
    this.log = o.logger;
    this.observer = o.observerRunner ?? o.runner;
  }

  async start(): Promise<readonly ExistingBan[]> {
    let listedV4: unknown;
    try {
      listedV4 = await this.ownTableListing();
      await this.ensureStructure();
    } catch (err) {
      if (err instanceof FirewallError) throw err;
      throw new FirewallError(
        `cannot set up table inet ${this.o.table} (ami2ban needs CAP_NET_ADMIN in Asterisk's network namespace): ${errorMessage(err)}`,
        err,
      );
    }
    const existing = await this.listBans(listedV4);
    if (this.o.checkIntervalMs > 0) {
      this.checkTimer = setInterval(() => {
        void this.periodicCheck();
      }, this.o.checkIntervalMs);
      this.checkTimer.unref();
    }
    this.log.info('nftables ready', {
      backend: this.o.runner.backend,
      table: `inet ${this.o.table}`,
      chain: chainName(this.o.blockType),
      blockType: this.o.blockType,
      adopted: existing.length,
    });
    return existing;
  }

  ban(ip: string, family: IpFamily, seconds: number, replace = false): Promise<void> {
    return this.enqueue(replace ? 'set' : 'add', ip, family, seconds);
  }

  banMany(items: readonly BanItem[]): Promise<(string | null)[]> {
    if (items.length === 0) return Promise.resolve([]);
    return new Promise((resolve) => {
      const outcome = many(items.length, resolve);
      for (const [index, b] of items.entries()) this.queue.push({ kind: b.replace ? 'set' : 'add', ip: b.ip, family: b.family, seconds: b.seconds, outcome, index });
      this.queued(true);
    });
  }

  ensure(ip: string, family: IpFamily, seconds: number): Promise<void> {
    // A plain add: the kernel leaves an element that is there as it is, and adds a missing one.
    return this.enqueue('add', ip, family, seconds);
  }

  unban(ip: string, family: IpFamily): Promise<void> {
    return this.enqueue('delete', ip, family, 0);
  }

  async stop(): Promise<void> {
    if (this.checkTimer !== undefined) clearInterval(this.checkTimer);
    await this.flush();
    if (this.o.cleanupOnExit) {
      try {
        await this.o.runner.run({ nftables: [{ delete: { table: { family: 'inet', name: this.o.table } } }] });
        this.log.info('nftables table removed (NFT_CLEANUP_ON_EXIT)', { table: `inet ${this.o.table}` });
      } catch (err) {
        this.log.error('nftables table removal failed', { error: errorMessage(err) });
      }
    }
    this.o.runner.close();
    if (this.observer !== this.o.runner) this.observer.close();
  }

  /** The check on the observer's context; only a repair goes through the ban queue's. */
  private async periodicCheck(): Promise<void> {
    // One check at a time: a repair slower than the interval must not be started again beside itself.
    if (this.checking) return;
    this.checking = true;
    try {
      await this.checkOnce();
    } finally {
      this.checking = false;
    }
  }

  private async checkOnce(): Promise<void> {
    // In libnftables 1.0.6 any listing dumps every set element (0.4 s with 100 000 bans, and bans
    // committed meanwhile wait): the rules are listed only every RULES_CHECK_EVERY-th check; the
    // others add an element to the unused probe set, which fails at once when the table is gone.
    const full = ++this.checks % RULES_CHECK_EVERY === 0;
    if (full ? await this.rulesCurrent(this.observer) : await this.tableAlive()) return;
    await this.repairIfBroken('periodic check');
  }

  private async tableAlive(): Promise<boolean> {
    try {
      await this.observer.run({ nftables: [elementCommand('add', this.o.table, 'ipv4', [element('255.255.255.255', 1)], PROBE_SET)] });
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Packets and bytes dropped (or rejected) per family. libnftables 1.0.6 dumps every set element
   * to read a counter (0.4–0.7 s with 100 000 bans; the addon reads it by netlink instead), so a
   * scrape gets the last values at once and a read is started in the background when they are
   * older than COUNTERS_MAX_AGE_MS.
   */
  counters(): Promise<Record<IpFamily, CounterValues>> {
    const now = this.now();
    const cached = this.countersCache;
    if (cached === undefined || now - cached.at >= COUNTERS_MAX_AGE_MS) {
      this.countersInFlight ??= this.readCounters()
        .then((values) => {
          this.countersCache = { values, at: this.now() };
          return values;
        })
        .finally(() => {
          this.countersInFlight = undefined;
        });
    }
    return cached === undefined ? this.countersInFlight ?? Promise.resolve({ ipv4: { packets: 0, bytes: 0 }, ipv6: { packets: 0, bytes: 0 } }) : Promise.resolve(cached.values);
  }

  private async readCounters(): Promise<Record<IpFamily, CounterValues>> {
    const t = { family: 'inet', table: this.o.table };
    const out: Record<IpFamily, CounterValues> = { ipv4: { packets: 0, bytes: 0 }, ipv6: { packets: 0, bytes: 0 } };
    for (const f of FAMILIES) {
      const listed = await this.observer.run({ nftables: [{ list: { counter: { ...t, name: COUNTER_NAME[f] } } }] });
      out[f] = listedCounter(listed) ?? out[f];
    }
    return out;
  }

  /** Resolves when everything queued so far is committed (or has failed). */
  async flush(): Promise<void> {
    if (this.flushTimer !== undefined) {
      this.flushTimer.cancel();
      this.flushTimer = undefined;
    }
    while (this.flushing !== undefined) await this.flushing;
    if (this.queue.length === 0) return;
    this.flushing = this.drain();
    try {
      await this.flushing;
    } finally {
      this.flushing = undefined;
      // Anything queued while the last transaction was finishing gets its own flush.
      if (this.queue.length > 0) void this.flush();
    }
  }

  /** Checks our chain is intact; if not (ruleset flushed), recreates it and re-adds active bans. */
  async repairIfBroken(why: string): Promise<boolean> {
    if (await this.rulesCurrent()) return false;
    this.stats.repairs++;
    this.log.warn('nftables table or chain missing (ruleset flushed?): recreating and re-adding active bans', {
      table: `inet ${this.o.table}`,
      why,
    });
    try {
      await this.ensureStructure();
      await this.reapplyActive();
      return true;
    } catch (err) {
      this.log.error('nftables repair failed', { error: errorMessage(err) });
      return false;
    }
  }

  /** Whether our chain holds exactly the rules these settings make (listing rules only, not elements). */
  private async rulesCurrent(runner: NftRunner = this.o.runner): Promise<boolean> {
    try {
      const chain = chainName(this.o.blockType);
      const have = ((await this.chainRuleComments(runner, chain)) ?? []).slice().sort();
      const want = expectedRuleComments(this.o).sort();
      return have.length === want.length && have.every((c, i) => c === want[i]);
    } catch {
      return false;
    }
  }

  private enqueue(kind: OpKind, ip: string, family: IpFamily, seconds: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ kind, ip, family, seconds, outcome: single(resolve, reject), index: 0 });
      this.queued();
    });
  }

  /**
   * A transaction now when a batch is full or whole (`banMany`), else once the code that queued
   * it has run (or after flushDelayMs): bans decided in one slice of input share a transaction,
   * and it is sent before the loop turns to anything else (database, fleet, other input).
   */
  private queued(whole = false): void {
    if (this.queue.length >= this.maxBatch || (whole && this.flushing === undefined)) {
      void this.flush();
    } else if (this.flushTimer === undefined && this.flushing === undefined) {
      let cancelled = false;
      const go = (): void => {
        if (cancelled) return;
        this.flushTimer = undefined;
        void this.flush();
      };
      const delay = this.o.flushDelayMs ?? 0;
      if (delay > 0) {
        const t = setTimeout(go, delay);
        this.flushTimer = { cancel: () => { clearTimeout(t); } };
      } else {
        queueMicrotask(go);
        this.flushTimer = { cancel: () => { cancelled = true; } };
      }
    }
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      await this.commit(batch);
    }
  }

  private async commit(batch: readonly Op[], repaired = false): Promise<void> {
    if (batch.length === 1 && batch[0] !== undefined && repaired) {
      await this.commitOne(batch[0]);
      return;
    }
    const t0 = performance.now();
    try {
      await this.o.runner.run({ nftables: this.commands(batch) });
      this.o.onTransaction?.((performance.now() - t0) / 1000, batch.length, true);
      this.stats.transactions++;
      this.stats.elements += batch.length;
      for (const op of batch) op.outcome.ok(op.index);
    } catch (err) {
      this.o.onTransaction?.((performance.now() - t0) / 1000, batch.length, false);
      this.stats.failedTransactions++;
      this.log.warn('nftables transaction failed, retrying it in halves', { elements: batch.length, error: errorMessage(err) });
      // A flushed ruleset fails every chunk: check (and repair) once; then bad elements are found by halving.
      if (!repaired && (await this.repairIfBroken('a transaction failed'))) {
        await this.commit(batch, true);
        return;
      }
      const half = Math.ceil(batch.length / 2);
      await this.commit(batch.slice(0, half), true);
      if (half < batch.length) await this.commit(batch.slice(half), true);
    }
  }

  private async commitOne(op: Op): Promise<void> {
    try {
      await this.o.runner.run({ nftables: this.commands([op]) });
      op.outcome.ok(op.index);
      return;
    } catch (error) {
      this.stats.failedElements++;
      this.log.error('nftables element failed', { op: op.kind, ip: op.ip, family: op.family, error: errorMessage(error) });
      op.outcome.failed(op.index, new FirewallError(`${op.kind} ${op.ip}: ${errorMessage(error)}`, error));
    }
  }

  /** Commands for ops in order; consecutive ops of one verb and set share one command. */
  private commands(ops: readonly Op[]): NftCommand[] {
    const out: NftCommand[] = [];
    let verb: 'add' | 'delete' | undefined;
    let family: IpFamily | undefined;
    let set = '';
    let elems: unknown[] = [];
    const push = (v: 'add' | 'delete', op: Op, e: unknown): void => {
      const s = setOf(op.ip, op.family);
      if (v !== verb || s !== set) {
        if (verb !== undefined && family !== undefined) out.push(elementCommand(verb, this.o.table, family, elems, set));
        verb = v;
        family = op.family;
        set = s;
        elems = [];
      }
      elems.push(e);
    };
    for (const op of ops) {
      // set = add, delete, add: the first add makes sure there is an element to delete (adding a
      // present one changes nothing), and re-adding is what sets the new timeout on every kernel.
      if (op.kind === 'set') push('add', op, element(op.ip, op.seconds));
      if (op.kind !== 'add') push('delete', op, banValue(op.ip));
      if (op.kind !== 'delete') push('add', op, element(op.ip, op.seconds));
    }
    if (verb !== undefined && family !== undefined) out.push(elementCommand(verb, this.o.table, family, elems, set));
    return out;
  }

  /** The comments of a chain's commented rules; null when it does not exist (or the table does not). */
  private async chainRuleComments(runner: NftRunner, chain: string): Promise<string[] | null> {
    const read = runner.ruleComments?.('inet', this.o.table, chain);
    if (read !== undefined) return read?.filter((c) => c !== '') ?? null;
    try {
      const listed = await runner.run({ nftables: [{ list: { chain: { family: 'inet', table: this.o.table, name: chain } } }] });
      return listedChains(listed).get(chain) ?? [];
    } catch {
      return null;
    }
  }

  private async ensureStructure(): Promise<void> {
    // Only the other block type's chain is looked for: listing the table would list every element.
    const other = chainName(this.o.blockType === 'drop' ? 'reject' : 'drop');
    const stale = (await this.chainRuleComments(this.o.runner, other)) === null ? undefined : other;
    // Rules already current are left alone: nothing of ours is flushed without need.
    await this.o.runner.run({ nftables: setupCommands(this.o, stale, !(await this.rulesCurrent())) });
  }

  /**
   * A table of that name that we did not make (no ipv4_addr set with timeouts: Debian's `filter`,
   * firewalld's, another tool's) is refused, never taken over. Returns the listing of our IPv4 set
   * when the table is ours already, so that start lists it once.
   */
  private async ownTableListing(): Promise<unknown> {
    let names = this.o.runner.tableNames?.('inet');
    if (names === undefined) {
      const tables = await this.o.runner.run({ nftables: [{ list: { tables: { family: 'inet' } } }] });
      const items = (tables as { nftables?: { table?: { family?: string; name?: string } }[] } | null)?.nftables ?? [];
      names = items.filter((i) => i.table?.family === 'inet').map((i) => i.table?.name ?? '');
    }
    if (!names.includes(this.o.table)) return undefined;
    let listed: unknown;
    try {
      listed = await this.o.runner.run({ nftables: [{ list: { set: { family: 'inet', table: this.o.table, name: SET_NAME.ipv4 } } }] });
    } catch {
      listed = undefined;
    }
    const set = ((listed as { nftables?: { set?: { type?: unknown; flags?: unknown } }[] } | undefined)?.nftables ?? []).find((i) => i.set !== undefined)?.set;
    if (set?.type !== 'ipv4_addr' || !Array.isArray(set.flags) || !set.flags.includes('timeout')) {
      throw new FirewallError(
        `table inet ${this.o.table} exists and was not made by ami2ban (it has no set ${SET_NAME.ipv4} with timeouts); refusing to take it over: set NFT_TABLE to a table of ours`,
      );
    }
    return listed;
  }

  private async listBans(listedV4?: unknown): Promise<ExistingBan[]> {
    const t = { family: 'inet', table: this.o.table };
    const now = this.now();
    const out: ExistingBan[] = [];
    for (const f of FAMILIES) {
      const list = (): Promise<unknown> => this.o.runner.run({ nftables: [{ list: { set: { ...t, name: SET_NAME[f] } } }] });
      const addresses = await this.wholeListing(f === 'ipv4' && listedV4 !== undefined ? listedV4 : await list(), list);
      const networks = await this.o.runner.run({ nftables: [{ list: { set: { ...t, name: NET_SET_NAME[f] } } }] });
      for (const e of [...addresses, ...listedElements(networks)]) {
        out.push({ ip: e.ip, family: f, expiresAt: e.expiresIn === Number.POSITIVE_INFINITY ? e.expiresIn : now + e.expiresIn * 1000 });
      }
    }
    return out;
  }

  /**
   * Every element of an address set. A set's dump comes in parts, each skipping as many elements
   * as were given before it; while the kernel resizes the set's hash table (after a large insert,
   * or when many elements expire) the order changes between parts, and the dump gives some
   * elements twice and misses as many (seen on Linux 6.18: 33 000 listed, 31 394 different, every
   * one there when looked up). A listing that gives one twice is taken again; all are joined.
   */
  private async wholeListing(first: unknown, list: () => Promise<unknown>): Promise<ListedElement[]> {
    const all = new Map<string, ListedElement>();
    let listed = first;
    for (let n = 1; ; n++) {
      const elements = listedElements(listed);
      let distinct: number;
      if (n === 1) {
        for (const e of elements) all.set(e.ip, e);
        distinct = all.size;
      } else {
        const ips = new Set<string>();
        for (const e of elements) {
          ips.add(e.ip);
          all.set(e.ip, e);
        }
        distinct = ips.size;
      }
      if (distinct === elements.length || n === MAX_LISTINGS) {
        if (n > 1) this.log.info('nftables set listed again: a listing gave elements twice (the kernel was resizing the set)', { listings: n, elements: all.size });
        return [...all.values()];
      }
      listed = await list();
    }
  }

  private async reapplyActive(): Promise<void> {
    const now = this.now();
    const ops: Op[] = [];
    for (const b of this.o.bansInForce?.() ?? []) {
      if (b.expiresAt <= now) continue;
      const seconds = b.expiresAt === Number.POSITIVE_INFINITY ? b.expiresAt : (b.expiresAt - now) / 1000;
      ops.push({ kind: 'add', ip: b.ip, family: b.family, seconds, outcome: NO_OUTCOME, index: 0 });
    }
    for (let i = 0; i < ops.length; i += this.maxBatch) {
      await this.o.runner.run({ nftables: this.commands(ops.slice(i, i + this.maxBatch)) });
    }
    this.log.info('nftables bans re-applied', { count: ops.length });
  }

}
