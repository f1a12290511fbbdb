// Typed loader for the libnftables binding. Commands are libnftables JSON objects, validated here
// before they cross into native code; one call is in flight per context.
import { createRequire } from 'node:module';
import {
  type ElementBatch,
  type ReadRef,
  type Reply,
  Writer,
  addressBytes,
  batchDone,
  counterListing,
  decodeReplies,
  elementBatch,
  elementPresent,
  encodeBatch,
  encodeChainRules,
  encodeGetElement,
  encodeListTables,
  familyNumber,
  encodeGetCounter,
  encodeListSet,
  encodeSetQueries,
  readQuery,
  ruleComments,
  setKey,
  setListing,
  setsArePlain,
  tableNames,
} from './netlink.js';

export interface NativeContext {
  run(json: string): Promise<string>;
  /** Sends netlink messages to nf_tables on the calling thread; returns the replies. */
  netlink?(request: Buffer): Buffer;
  close(): void;
}

export interface NativeBinding {
  readonly Context: new () => NativeContext;
  /** TCP_QUICKACK on a connected TCP socket's descriptor, once; false when it cannot be set. */
  readonly quickAck?: (fd: number) => boolean;
}

/** A libnftables JSON command list: `{ "nftables": [ { "add": { … } }, … ] }`. */
export interface NftCommands {
  readonly nftables: readonly object[];
}

export class NftablesError extends Error {
  readonly code = 'NFT_COMMAND_FAILED';
  /** libnftables' return code, when it ran. */
  readonly nftCode: number | undefined;

  constructor(message: string, nftCode?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NftablesError';
    this.nftCode = nftCode;
  }
}

export type BindingLoad = { readonly binding: NativeBinding } | { readonly error: Error };

/** Loads the compiled addon; reports why when it is not there. */
export function loadBinding(): BindingLoad {
  const require = createRequire(import.meta.url);
  try {
    return { binding: require('../build/Release/nftables_napi.node') as NativeBinding };
  } catch (err) {
    const cause = err instanceof Error ? err : new Error(String(err));
    return {
      error: new Error(
        `the libnftables addon is not built (${cause.message.split('\n')[0] ?? ''}); ` +
          'install libnftables-dev and pkg-config, then run `npm rebuild @ami2ban/nftables-napi`',
        { cause },
      ),
    };
  }
}

/**
 * The addon's TCP_QUICKACK (one setsockopt) for the AMI connection, or undefined when the addon is
 * not built. Not nftables, but the one other thing ami2ban needs from native code.
 */
export function tcpQuickAck(load: () => BindingLoad = loadBinding): ((fd: number) => boolean) | undefined {
  const loaded = load();
  return 'binding' in loaded ? loaded.binding.quickAck : undefined;
}

function validate(commands: unknown): asserts commands is NftCommands {
  if (typeof commands !== 'object' || commands === null || !Array.isArray((commands as { nftables?: unknown }).nftables)) {
    throw new TypeError('run(commands) expects an object { nftables: [ … ] } of libnftables JSON commands');
  }
  for (const c of (commands as { nftables: unknown[] }).nftables) {
    if (typeof c !== 'object' || c === null || Array.isArray(c)) throw new TypeError('every libnftables command must be an object');
  }
}

export class Nftables {
  private readonly ctx: NativeContext;
  private tail: Promise<unknown> = Promise.resolve();
  private inFlight = 0;
  private closed = false;
  private seq = 1;
  /** Sets the kernel said hold plain addresses; forgotten on any other command or a failure. */
  private readonly plainSets = new Set<string>();
  private readonly writer = new Writer();
  /** Transactions committed and reads answered by netlink, and those handed to libnftables. */
  readonly fastPath = { committed: 0, read: 0, declined: 0 };

  /** Throws when the addon is not built; pass a binding to substitute it (tests). */
  constructor(binding?: NativeBinding) {
    let b = binding;
    if (b === undefined) {
      const loaded = loadBinding();
      if ('error' in loaded) throw loaded.error;
      b = loaded.binding;
    }
    this.ctx = new b.Context();
  }

  /** Runs one transaction; resolves with libnftables' parsed JSON output (null when it printed nothing). */
  run(commands: NftCommands): Promise<unknown> {
    validate(commands);
    if (this.closed) return Promise.reject(new NftablesError('the libnftables context is closed'));
    const fast = this.netlinkFor(commands.nftables);
    // Element commands on plain sets, and reads of a counter or of a plain set, go straight to the
    // kernel: now if nothing is in flight (order is kept), else in their turn.
    const now = fast !== undefined && this.inFlight === 0;
    if (now) {
      const done = fast();
      if (done !== undefined) return Promise.resolve(done.value);
    }
    const json = JSON.stringify(commands);
    this.inFlight++;
    const call = (): Promise<unknown> => {
      const done = fast !== undefined && !now ? fast() : undefined;
      return done !== undefined ? Promise.resolve(done.value) : this.call(json);
    };
    const next = this.tail.then(call, call);
    this.tail = next
      .catch(() => undefined)
      .finally(() => {
        this.inFlight--;
      });
    return next;
  }

  /**
   * The names of a family's tables, read from the kernel now (libnftables 1.0.6 reads every set
   * element for `list tables`); undefined when it cannot be done here (then ask libnftables).
   */
  tableNames(family: string): string[] | undefined {
    const f = familyNumber(family);
    return f === undefined ? undefined : this.read((seq) => encodeListTables(f, seq, this.writer.reset()), (replies, seq) => tableNames(replies, seq));
  }

  /**
   * The comments of a chain's rules in order ('' for a rule without one), read from the kernel
   * now; null when the chain does not exist; undefined when it cannot be done here.
   */
  ruleComments(family: string, table: string, chain: string): string[] | null | undefined {
    const f = familyNumber(family);
    return f === undefined ? undefined : this.read((seq) => encodeChainRules(f, table, chain, seq, this.writer.reset()), (replies, seq) => ruleComments(replies, seq));
  }

  /**
   * Whether an address is an element of a set now, asked of the kernel for that one key (a
   * `get element` through libnftables 1.0.6 reads the whole set first). false when the element,
   * the set or the table is absent; undefined when it cannot be asked here.
   */
  hasElement(family: string, table: string, set: string, address: string): boolean | undefined {
    const f = familyNumber(family);
    const key = addressBytes(address);
    if (f === undefined || key === undefined) return undefined;
    return this.read((seq) => encodeGetElement(f, table, set, key, seq, this.writer.reset()), (replies, seq) => elementPresent(replies, seq));
  }

  private read<T>(request: (seq: number) => Buffer, answer: (replies: Reply[], seq: number) => T | undefined): T | undefined {
    const send = this.ctx.netlink?.bind(this.ctx);
    if (send === undefined || this.closed) return undefined;
    try {
      const seq = this.nextSeq(2);
      const replies = decodeReplies(send(request(seq)));
      const value = replies === undefined ? undefined : answer(replies, seq);
      if (value === undefined) this.fastPath.declined++;
      else this.fastPath.read++;
      return value;
    } catch {
      this.fastPath.declined++;
      return undefined;
    }
  }

  /** How these commands can be done by netlink (undefined: only by libnftables). */
  private netlinkFor(commands: readonly object[]): (() => { value: unknown } | undefined) | undefined {
    const batch = elementBatch(commands);
    if (batch !== undefined) return () => (this.tryNetlink(batch) ? { value: null } : undefined);
    const read = readQuery(commands);
    if (read !== undefined) return () => this.tryRead(read);
    // Anything else may change what sets are.
    this.plainSets.clear();
    return undefined;
  }

  /** libnftables' JSON answer to a read, made from the kernel's; undefined when it cannot, for libnftables to answer. */
  private tryRead(ref: ReadRef): { value: unknown } | undefined {
    const value = this.read(
      (seq) => (ref.what === 'counter' ? encodeGetCounter(ref, seq, this.writer.reset()) : encodeListSet(ref, seq, this.writer.reset())),
      (replies, seq) => (ref.what === 'counter' ? counterListing(ref, replies, seq) : setListing(ref, replies, seq)),
    );
    return value === undefined ? undefined : { value };
  }

  /** Commits the batch by netlink; false (nothing committed) when it cannot, for libnftables to run it and tell why. */
  private tryNetlink(batch: ElementBatch): boolean {
    const send = this.ctx.netlink?.bind(this.ctx);
    if (send === undefined || this.closed) return false;
    try {
      const unknown = batch.sets.filter((s) => !this.plainSets.has(setKey(s)));
      if (unknown.length > 0) {
        const seq = this.nextSeq(unknown.length);
        const replies = decodeReplies(send(encodeSetQueries(unknown, seq, this.writer.reset())));
        if (replies === undefined || !setsArePlain(unknown, replies, seq)) return this.declined();
        for (const s of unknown) this.plainSets.add(setKey(s));
      }
      const seq = this.nextSeq(batch.messages.length + 2);
      const replies = decodeReplies(send(encodeBatch(batch, seq, this.writer.reset())));
      if (replies === undefined || !batchDone(batch, replies, seq)) return this.declined();
      this.fastPath.committed++;
      return true;
    } catch {
      return this.declined();
    }
  }

  private declined(): false {
    this.plainSets.clear();
    this.fastPath.declined++;
    return false;
  }

  private nextSeq(n: number): number {
    const seq = this.seq;
    this.seq = (this.seq + n) % 0x7fffffff || 1;
    return seq;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    void this.tail.then(() => {
      this.ctx.close();
    });
  }

  private async call(json: string): Promise<unknown> {
    let out: string;
    try {
      out = await this.ctx.run(json);
    } catch (err) {
      const e = err as { message?: string; nftCode?: number };
      throw new NftablesError(e.message ?? String(err), e.nftCode, { cause: err });
    }
    const text = out.trim();
    return text === '' ? null : (JSON.parse(text) as unknown);
  }
}
