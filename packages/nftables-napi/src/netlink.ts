// The fast path for the commonest transaction, adding and deleting single addresses in plain hash
// sets: the same libnftables JSON commands encoded straight into one nf_tables netlink batch.
// libnftables parses the JSON, refreshes its cache of the ruleset (several netlink dumps) and
// evaluates before it commits; for a few elements that is ~0.5 ms against ~30 µs for the commit.
// Anything else (other commands, intervals, maps, a failure) goes through libnftables, which also
// gives the error messages.
import { endianness } from 'node:os';

const NFNL_SUBSYS_NFTABLES = 10;
const NFT_MSG_NEWSET = 9;
const NFT_MSG_GETSET = 10;
const NFT_MSG_NEWSETELEM = 12;
const NFT_MSG_DELSETELEM = 14;
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const NLMSG_ERROR = 2;
const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLM_F_CREATE = 0x400;
const NLA_F_NESTED = 0x8000;
const NFTA_SET_ELEM_LIST_TABLE = 1;
const NFTA_SET_ELEM_LIST_SET = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
const NFTA_LIST_ELEM = 1;
const NFTA_SET_ELEM_KEY = 1;
const NFTA_SET_ELEM_TIMEOUT = 4;
const NFTA_DATA_VALUE = 1;
const NFTA_SET_TABLE = 1;
const NFTA_SET_NAME = 2;
const NFTA_SET_FLAGS = 3;
const NFTA_SET_KEY_LEN = 5;
/** Set flags that change what an element is: interval, map, object map, concatenation. */
const NOT_PLAIN = 0x4 | 0x8 | 0x40 | 0x80;
const NFT_SET_TIMEOUT = 0x10;
const FAMILIES: Readonly<Record<string, number>> = { ip: 2, ip6: 10, inet: 1 };
/** More messages than this could overflow the socket's queue of acknowledgements. */
const MAX_MESSAGES = 256;
/** Elements per message: an attribute's length is 16 bits (a nest of elements stays under 64 KiB). */
const PER_MESSAGE = 1000;
/** The kernel's limit on an element timeout is far below this; past it the JSON is not ours to judge. */
const MAX_TIMEOUT_S = 2 ** 40;

export const NETLINK_AVAILABLE = endianness() === 'LE';

/** The message type of an nf_tables request or answer. */
function nfTables(type: number): number {
  return (NFNL_SUBSYS_NFTABLES << 8) | type;
}

interface SetRef {
  readonly family: number;
  readonly table: string;
  readonly name: string;
  /** Bytes of the key: 4 for IPv4, 16 for IPv6. */
  readonly keyLen: number;
  readonly timeouts: boolean;
}

interface Message {
  readonly type: number;
  readonly set: SetRef;
  readonly keys: readonly Buffer[];
  readonly timeouts: readonly (number | undefined)[];
}

export interface ElementBatch {
  /** Every set the batch touches, each once. */
  readonly sets: readonly SetRef[];
  readonly messages: readonly Message[];
}

export function setKey(s: SetRef): string {
  return `${String(s.family)} ${s.table} ${s.name} ${String(s.keyLen)}`;
}

/** The commands as element messages, or undefined when any of them is something else. */
export function elementBatch(commands: readonly object[]): ElementBatch | undefined {
  if (!NETLINK_AVAILABLE || commands.length === 0 || commands.length > MAX_MESSAGES) return undefined;
  const sets = new Map<string, SetRef>();
  const messages: Message[] = [];
  for (const command of commands) {
    const keys = Object.keys(command);
    if (keys.length !== 1) return undefined;
    const verb = keys[0];
    if (verb !== 'add' && verb !== 'delete') return undefined;
    const body = (command as Record<string, unknown>)[verb] as { element?: unknown } | null;
    if (typeof body !== 'object' || body === null || Object.keys(body).length !== 1) return undefined;
    const el = body.element as { family?: unknown; table?: unknown; name?: unknown; elem?: unknown } | undefined;
    if (typeof el !== 'object' || typeof el.table !== 'string' || typeof el.name !== 'string' || !Array.isArray(el.elem)) return undefined;
    if (Object.keys(el).length !== 4 || el.elem.length === 0) return undefined;
    const family = typeof el.family === 'string' ? FAMILIES[el.family] : undefined;
    if (family === undefined || !nameOk(el.table) || !nameOk(el.name)) return undefined;
    const out: Buffer[] = [];
    const timeouts: (number | undefined)[] = [];
    let keyLen = 0;
    for (const item of el.elem as unknown[]) {
      let val: unknown = item;
      let timeout: number | undefined;
      if (typeof item === 'object' && item !== null) {
        const inner = (item as { elem?: unknown }).elem as { val?: unknown; timeout?: unknown } | undefined;
        if (Object.keys(item).length !== 1 || typeof inner !== 'object') return undefined;
        const fields = Object.keys(inner);
        if (!fields.every((f) => f === 'val' || f === 'timeout')) return undefined;
        val = inner.val;
        if (inner.timeout !== undefined) {
          if (typeof inner.timeout !== 'number' || !Number.isInteger(inner.timeout) || inner.timeout < 1 || inner.timeout > MAX_TIMEOUT_S) return undefined;
          timeout = inner.timeout;
        }
      }
      if (typeof val !== 'string') return undefined;
      const key = addressBytes(val);
      if (key === undefined || (keyLen !== 0 && key.length !== keyLen)) return undefined;
      keyLen = key.length;
      // A delete names the element by its key alone.
      if (verb === 'delete' && timeout !== undefined) return undefined;
      out.push(key);
      timeouts.push(timeout);
    }
    const ref: SetRef = { family, table: el.table, name: el.name, keyLen, timeouts: timeouts.some((t) => t !== undefined) };
    const k = setKey(ref);
    const known = sets.get(k);
    if (known === undefined) sets.set(k, ref);
    else if (ref.timeouts && !known.timeouts) sets.set(k, ref);
    const type = verb === 'add' ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM;
    for (let i = 0; i < out.length; i += PER_MESSAGE) {
      if (messages.length === MAX_MESSAGES) return undefined;
      messages.push({ type, set: ref, keys: out.slice(i, i + PER_MESSAGE), timeouts: timeouts.slice(i, i + PER_MESSAGE) });
    }
  }
  return { sets: [...sets.values()], messages };
}

function nameOk(s: string): boolean {
  return s.length > 0 && s.length < 256 && !s.includes('\0');
}

/** 4 or 16 bytes of an address in canonical or any valid text form; undefined otherwise. */
export function addressBytes(text: string): Buffer | undefined {
  if (text.includes(':')) return ipv6Bytes(text);
  return ipv4Bytes(text);
}

function ipv4Bytes(text: string): Buffer | undefined {
  // Digits read by char code: a split, a regular expression and a zero-filled buffer per address
  // were a tenth of the time a 100 000-ban batch spends here.
  const b = Buffer.allocUnsafe(4);
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 46; // the end closes the last part as a dot
    if (c === 46) {
      if (digits === 0 || part > 3) return undefined;
      b[part++] = value;
      value = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      // No leading zero (`01` is octal to some parsers), at most 255.
      if (digits === 1 && value === 0) return undefined;
      value = value * 10 + (c - 48);
      if (++digits > 3 || value > 255) return undefined;
    } else {
      return undefined;
    }
  }
  return part === 4 ? b : undefined;
}

function ipv6Bytes(text: string): Buffer | undefined {
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const groups = (s: string): number[] | undefined => {
    if (s === '') return [];
    const out: number[] = [];
    const parts = s.split(':');
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i] ?? '';
      if (i === parts.length - 1 && p.includes('.')) {
        const v4 = ipv4Bytes(p);
        if (v4 === undefined) return undefined;
        out.push(((v4[0] ?? 0) << 8) | (v4[1] ?? 0), ((v4[2] ?? 0) << 8) | (v4[3] ?? 0));
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return undefined;
        out.push(parseInt(p, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0] ?? '');
  const tail = halves.length === 2 ? groups(halves[1] ?? '') : [];
  if (head === undefined || tail === undefined) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...head, ...new Array<number>(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const b = Buffer.alloc(16);
  all.forEach((g, i) => b.writeUInt16BE(g, 2 * i));
  return b;
}

// ---- encoding ----

/** Builds messages in one buffer, kept and reused from one batch to the next. */
export class Writer {
  private buf = Buffer.alloc(16384);
  length = 0;

  reset(): this {
    this.length = 0;
    return this;
  }

  private room(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const grown = Buffer.alloc(size);
    this.buf.copy(grown, 0, 0, this.length);
    this.buf = grown;
  }

  /** Starts a message; returns where, for end(). */
  header(type: number, flags: number, seq: number, family: number, resId: number): number {
    this.room(20);
    const at = this.length;
    this.buf.writeUInt32LE(0, at);
    this.buf.writeUInt16LE(type, at + 4);
    this.buf.writeUInt16LE(flags, at + 6);
    this.buf.writeUInt32LE(seq, at + 8);
    this.buf.writeUInt32LE(0, at + 12);
    this.buf.writeUInt8(family, at + 16);
    this.buf.writeUInt8(0, at + 17);
    this.buf.writeUInt16BE(resId, at + 18);
    this.length += 20;
    return at;
  }

  end(at: number): void {
    this.buf.writeUInt32LE(this.length - at, at);
  }

  attr(type: number, data: Buffer): void {
    const len = 4 + data.length;
    const padded = (len + 3) & ~3;
    this.room(padded);
    this.buf.writeUInt16LE(len, this.length);
    this.buf.writeUInt16LE(type, this.length + 2);
    data.copy(this.buf, this.length + 4);
    this.buf.fill(0, this.length + len, this.length + padded);
    this.length += padded;
  }

  string(type: number, s: string): void {
    this.attr(type, Buffer.from(`${s}\0`, 'utf8'));
  }

  nest(type: number): number {
    this.room(4);
    const at = this.length;
    this.buf.writeUInt16LE(type | NLA_F_NESTED, at + 2);
    this.length += 4;
    return at;
  }

  close(at: number): void {
    this.buf.writeUInt16LE(this.length - at, at);
  }

  /** An attribute of 8 bytes: a 64-bit number, big-endian (exact up to 2^53). */
  u64(type: number, n: number): void {
    this.room(12);
    this.buf.writeUInt16LE(12, this.length);
    this.buf.writeUInt16LE(type, this.length + 2);
    this.buf.writeUInt32BE(Math.floor(n / 2 ** 32), this.length + 4);
    this.buf.writeUInt32BE(n >>> 0, this.length + 8);
    this.length += 12;
  }

  done(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

/** GETSET requests for the sets, with acknowledgements; sequence numbers from seq on. */
export function encodeSetQueries(sets: readonly SetRef[], seq: number, w = new Writer()): Buffer {
  sets.forEach((s, i) => {
    const at = w.header(nfTables(NFT_MSG_GETSET), NLM_F_REQUEST | NLM_F_ACK, seq + i, s.family, 0);
    w.string(NFTA_SET_TABLE, s.table);
    w.string(NFTA_SET_NAME, s.name);
    w.end(at);
  });
  return w.done();
}

/** One atomic batch: begin, a message per command (each acknowledged), end. */
export function encodeBatch(batch: ElementBatch, seq: number, w = new Writer()): Buffer {
  w.end(w.header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES));
  batch.messages.forEach((m, i) => {
    const create = m.type === NFT_MSG_NEWSETELEM ? NLM_F_CREATE : 0;
    const at = w.header(nfTables(m.type), NLM_F_REQUEST | NLM_F_ACK | create, seq + 1 + i, m.set.family, 0);
    w.string(NFTA_SET_ELEM_LIST_TABLE, m.set.table);
    w.string(NFTA_SET_ELEM_LIST_SET, m.set.name);
    const list = w.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
    m.keys.forEach((key, k) => {
      const item = w.nest(NFTA_LIST_ELEM);
      const keyNest = w.nest(NFTA_SET_ELEM_KEY);
      w.attr(NFTA_DATA_VALUE, key);
      w.close(keyNest);
      const t = m.timeouts[k];
      if (t !== undefined) w.u64(NFTA_SET_ELEM_TIMEOUT, t * 1000);
      w.close(item);
    });
    w.close(list);
    w.end(at);
  });
  w.end(w.header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 1 + batch.messages.length, 0, NFNL_SUBSYS_NFTABLES));
  return w.done();
}

// ---- decoding ----

export interface Reply {
  readonly seq: number;
  readonly type: number;
  readonly flags: number;
  /** For an acknowledgement or error: 0 or -errno. */
  readonly error: number | undefined;
  readonly attrs: ReadonlyMap<number, Buffer>;
}

export function decodeReplies(buf: Buffer): Reply[] | undefined {
  const out: Reply[] = [];
  let at = 0;
  while (at + 16 <= buf.length) {
    const len = buf.readUInt32LE(at);
    if (len < 16 || at + len > buf.length) return undefined;
    const type = buf.readUInt16LE(at + 4);
    const flags = buf.readUInt16LE(at + 6);
    const seq = buf.readUInt32LE(at + 8);
    if (type === NLMSG_ERROR) {
      if (len < 20) return undefined;
      out.push({ seq, type, flags, error: buf.readInt32LE(at + 16), attrs: new Map() });
    } else if (type === 3) {
      // NLMSG_DONE: the end of a dump.
      out.push({ seq, type, flags, error: undefined, attrs: new Map() });
    } else {
      const attrs = new Map<number, Buffer>();
      let a = at + 20;
      while (a + 4 <= at + len) {
        const alen = buf.readUInt16LE(a);
        if (alen < 4 || a + alen > at + len) break;
        attrs.set(buf.readUInt16LE(a + 2) & 0x3fff, buf.subarray(a + 4, a + alen));
        a += (alen + 3) & ~3;
      }
      out.push({ seq, type, flags, error: undefined, attrs });
    }
    at += (len + 3) & ~3;
  }
  return out;
}

const NLMSG_DONE = 3;
const NLM_F_DUMP_INTR = 0x10;

/**
 * The answer of type `type` to the acknowledged request `seq`; undefined when there is none or
 * the request failed (its errno, negative, in `error`).
 */
function answer(replies: readonly Reply[], seq: number, type: number): { reply: Reply | undefined; error: number | undefined } {
  const mine = replies.filter((r) => r.seq === seq);
  const error = mine.find((r) => r.error !== undefined)?.error;
  return { reply: error === 0 ? mine.find((r) => r.type === type) : undefined, error };
}

/** The messages of type `type` of the dump `seq`; undefined unless it is complete and undisturbed. */
function dump(replies: readonly Reply[], seq: number, type: number): Reply[] | undefined {
  const out: Reply[] = [];
  for (const r of replies) {
    if (r.seq !== seq) continue;
    if (r.type === NLMSG_DONE) return out;
    if (r.error !== undefined || (r.flags & NLM_F_DUMP_INTR) !== 0) return undefined;
    if (r.type === type) out.push(r);
  }
  return undefined;
}

/** Whether the kernel's answers to encodeSetQueries say every set holds plain addresses. */
export function setsArePlain(sets: readonly SetRef[], replies: readonly Reply[], seq: number): boolean {
  return sets.every((s, i) => {
    const desc = answer(replies, seq + i, nfTables(NFT_MSG_NEWSET)).reply;
    if (desc === undefined) return false;
    const flags = desc.attrs.get(NFTA_SET_FLAGS);
    const keyLen = desc.attrs.get(NFTA_SET_KEY_LEN);
    // The kernel leaves the flags out when there are none.
    if ((flags !== undefined && flags.length !== 4) || keyLen?.length !== 4) return false;
    const f = flags?.readUInt32BE(0) ?? 0;
    if ((f & NOT_PLAIN) !== 0 || (s.timeouts && (f & NFT_SET_TIMEOUT) === 0)) return false;
    return keyLen.readUInt32BE(0) === s.keyLen;
  });
}

/** Whether every message of the batch was acknowledged without error. */
export function batchDone(batch: ElementBatch, replies: readonly Reply[], seq: number): boolean {
  const acked = new Set<number>();
  for (const r of replies) {
    if (r.error === undefined) continue;
    if (r.error !== 0) return false;
    acked.add(r.seq);
  }
  for (let i = 0; i < batch.messages.length; i++) if (!acked.has(seq + 1 + i)) return false;
  return true;
}

// ---- reads: a named counter, the elements of a plain address set ----

const NFT_MSG_NEWOBJ = 18;
const NFT_MSG_GETOBJ = 19;
const NFT_MSG_GETSETELEM = 13;
const NLM_F_DUMP = 0x300;
const NFTA_OBJ_TABLE = 1;
const NFTA_OBJ_NAME = 2;
const NFTA_OBJ_TYPE = 3;
const NFTA_OBJ_DATA = 4;
const NFTA_OBJ_HANDLE = 6;
const NFT_OBJECT_COUNTER = 1;
const NFTA_COUNTER_BYTES = 1;
const NFTA_COUNTER_PACKETS = 2;
const NFTA_SET_KEY_TYPE = 4;
const NFTA_SET_HANDLE = 16;
const NFTA_SET_ELEM_EXPIRATION = 5;
/** nftables' datatypes of the keys it prints as addresses. */
const KEY_TYPES: Readonly<Record<number, { name: string; len: number }>> = { 7: { name: 'ipv4_addr', len: 4 }, 8: { name: 'ipv6_addr', len: 16 } };

/** `list counter` or `list set` of one named object, as libnftables JSON names it. */
export interface ReadRef {
  readonly what: 'counter' | 'set';
  readonly family: number;
  readonly familyName: string;
  readonly table: string;
  readonly name: string;
}

/** The command when it is a read this path answers; undefined otherwise. */
export function readQuery(commands: readonly object[]): ReadRef | undefined {
  if (!NETLINK_AVAILABLE || commands.length !== 1) return undefined;
  const list = (commands[0] as { list?: unknown }).list;
  if (Object.keys(commands[0] as object).length !== 1 || typeof list !== 'object' || list === null || Object.keys(list).length !== 1) return undefined;
  const what = Object.keys(list)[0];
  if (what !== 'counter' && what !== 'set') return undefined;
  const o = (list as Record<string, unknown>)[what] as { family?: unknown; table?: unknown; name?: unknown } | null;
  if (typeof o !== 'object' || o === null || Object.keys(o).length !== 3) return undefined;
  if (typeof o.family !== 'string' || typeof o.table !== 'string' || typeof o.name !== 'string') return undefined;
  const family = FAMILIES[o.family];
  if (family === undefined || !nameOk(o.table) || !nameOk(o.name)) return undefined;
  return { what, family, familyName: o.family, table: o.table, name: o.name };
}

export function encodeGetCounter(ref: ReadRef, seq: number, w = new Writer()): Buffer {
  const at = w.header(nfTables(NFT_MSG_GETOBJ), NLM_F_REQUEST | NLM_F_ACK, seq, ref.family, 0);
  w.string(NFTA_OBJ_TABLE, ref.table);
  w.string(NFTA_OBJ_NAME, ref.name);
  const type = Buffer.alloc(4);
  type.writeUInt32BE(NFT_OBJECT_COUNTER);
  w.attr(NFTA_OBJ_TYPE, type);
  w.end(at);
  return w.done();
}

/** libnftables' JSON for `list counter`, from the kernel's answer; undefined when it is not one. */
export function counterListing(ref: ReadRef, replies: readonly Reply[], seq: number): object | undefined {
  const obj = answer(replies, seq, nfTables(NFT_MSG_NEWOBJ)).reply;
  if (obj === undefined) return undefined;
  const data = obj.attrs.get(NFTA_OBJ_DATA);
  const handle = obj.attrs.get(NFTA_OBJ_HANDLE);
  if (data === undefined || handle?.length !== 8 || obj.attrs.get(NFTA_OBJ_TYPE)?.readUInt32BE(0) !== NFT_OBJECT_COUNTER) return undefined;
  const values = new Map(nested(data));
  const bytes = values.get(NFTA_COUNTER_BYTES);
  const packets = values.get(NFTA_COUNTER_PACKETS);
  if (bytes?.length !== 8 || packets?.length !== 8) return undefined;
  const counter = { family: ref.familyName, name: ref.name, table: ref.table, handle: u64(handle), packets: u64(packets), bytes: u64(bytes) };
  return { nftables: [{ counter }] };
}

/** The set's description (GETSET, acknowledged), then a dump of its elements (GETSETELEM). */
export function encodeListSet(ref: ReadRef, seq: number, w = new Writer()): Buffer {
  let at = w.header(nfTables(NFT_MSG_GETSET), NLM_F_REQUEST | NLM_F_ACK, seq, ref.family, 0);
  w.string(NFTA_SET_TABLE, ref.table);
  w.string(NFTA_SET_NAME, ref.name);
  w.end(at);
  at = w.header(nfTables(NFT_MSG_GETSETELEM), NLM_F_REQUEST | NLM_F_DUMP, seq + 1, ref.family, 0);
  w.string(NFTA_SET_ELEM_LIST_TABLE, ref.table);
  w.string(NFTA_SET_ELEM_LIST_SET, ref.name);
  w.end(at);
  return w.done();
}

/**
 * libnftables' JSON for `list set` of a set of addresses with no flag but `timeout`, from the
 * kernel's answers; undefined for any other set, an error, or a dump the kernel says was disturbed.
 */
export function setListing(ref: ReadRef, replies: readonly Reply[], seq: number): object | undefined {
  const desc = answer(replies, seq, nfTables(NFT_MSG_NEWSET)).reply;
  if (desc === undefined) return undefined;
  const flags = desc.attrs.get(NFTA_SET_FLAGS)?.readUInt32BE(0) ?? 0;
  const keyType = KEY_TYPES[desc.attrs.get(NFTA_SET_KEY_TYPE)?.readUInt32BE(0) ?? -1];
  const handle = desc.attrs.get(NFTA_SET_HANDLE);
  if (keyType === undefined || (flags & ~NFT_SET_TIMEOUT) !== 0 || handle?.length !== 8 || desc.attrs.get(NFTA_SET_KEY_LEN)?.readUInt32BE(0) !== keyType.len) return undefined;
  const messages = dump(replies, seq + 1, nfTables(NFT_MSG_NEWSETELEM));
  if (messages === undefined) return undefined;
  const elem: unknown[] = [];
  for (const r of messages) {
    const list = r.attrs.get(NFTA_SET_ELEM_LIST_ELEMENTS);
    for (const [type, item] of list === undefined ? [] : nested(list)) {
      if (type !== NFTA_LIST_ELEM) continue;
      const e = new Map(nested(item));
      const key = e.get(NFTA_SET_ELEM_KEY);
      const value = key === undefined ? undefined : new Map(nested(key)).get(NFTA_DATA_VALUE);
      if (value?.length !== keyType.len) return undefined;
      const val = addressText(value);
      const timeout = e.get(NFTA_SET_ELEM_TIMEOUT);
      const expiration = e.get(NFTA_SET_ELEM_EXPIRATION);
      if (timeout?.length !== 8) elem.push(val);
      else elem.push({ elem: { val, timeout: Math.floor(u64(timeout) / 1000), expires: Math.floor(u64(expiration ?? timeout) / 1000) } });
    }
  }
  const set: Record<string, unknown> = { family: ref.familyName, name: ref.name, table: ref.table, type: keyType.name, handle: u64(handle) };
  if (flags !== 0) set.flags = ['timeout'];
  if (elem.length > 0) set.elem = elem;
  return { nftables: [{ set }] };
}

function u64(b: Buffer): number {
  return Number(b.readBigUInt64BE(0));
}

/** The attributes inside a nested one, in order. */
function nested(buf: Buffer): [number, Buffer][] {
  const out: [number, Buffer][] = [];
  let a = 0;
  while (a + 4 <= buf.length) {
    const len = buf.readUInt16LE(a);
    if (len < 4 || a + len > buf.length) break;
    out.push([buf.readUInt16LE(a + 2) & 0x3fff, buf.subarray(a + 4, a + len)]);
    a += (len + 3) & ~3;
  }
  return out;
}

/** An address as inet_ntop writes it (as nft prints it): IPv6 with the longest zero run as `::`, IPv4-mapped dotted. */
export function addressText(b: Buffer): string {
  if (b.length === 4) return `${b[0] ?? 0}.${b[1] ?? 0}.${b[2] ?? 0}.${b[3] ?? 0}`;
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push(b.readUInt16BE(2 * i));
  let best = { base: -1, len: 0 };
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > best.len) best = { base: i, len: j - i };
    i = j;
  }
  const hex = (from: number, to: number): string => words.slice(from, to).map((w) => w.toString(16)).join(':');
  if (best.len < 2) return hex(0, 8);
  // ::ffff:a.b.c.d and ::a.b.c.d are written with the IPv4 part dotted, as glibc does.
  if (best.base === 0 && (best.len === 6 || (best.len === 5 && words[5] === 0xffff))) {
    return `::${best.len === 5 ? 'ffff:' : ''}${b[12] ?? 0}.${b[13] ?? 0}.${b[14] ?? 0}.${b[15] ?? 0}`;
  }
  return `${hex(0, best.base)}::${hex(best.base + best.len, 8)}`;
}

// ---- the ruleset's shape without its elements: table names, a chain's rule comments ----

const NFT_MSG_NEWTABLE = 0;
const NFT_MSG_GETTABLE = 1;
const NFT_MSG_NEWCHAIN = 3;
const NFT_MSG_GETCHAIN = 4;
const NFT_MSG_NEWRULE = 6;
const NFT_MSG_GETRULE = 7;
const NFTA_TABLE_NAME = 1;
const NFTA_CHAIN_TABLE = 1;
const NFTA_CHAIN_NAME = 3;
const NFTA_RULE_TABLE = 1;
const NFTA_RULE_CHAIN = 2;
const NFTA_RULE_USERDATA = 7;
/** libnftnl's type of a rule comment inside the rule's user data. */
const UDATA_RULE_COMMENT = 0;
const ENOENT = 2;

export function familyNumber(name: string): number | undefined {
  return FAMILIES[name];
}

export function encodeListTables(family: number, seq: number, w = new Writer()): Buffer {
  w.end(w.header(nfTables(NFT_MSG_GETTABLE), NLM_F_REQUEST | NLM_F_DUMP, seq, family, 0));
  return w.done();
}

/** The table names of a complete dump; undefined when it is not one. */
export function tableNames(replies: readonly Reply[], seq: number): string[] | undefined {
  return dump(replies, seq, nfTables(NFT_MSG_NEWTABLE))?.flatMap((r) => {
    const name = r.attrs.get(NFTA_TABLE_NAME);
    return name === undefined ? [] : [cString(name)];
  });
}

/** Asks whether the chain exists (acknowledged), then for a dump of its rules. */
export function encodeChainRules(family: number, table: string, chain: string, seq: number, w = new Writer()): Buffer {
  let at = w.header(nfTables(NFT_MSG_GETCHAIN), NLM_F_REQUEST | NLM_F_ACK, seq, family, 0);
  w.string(NFTA_CHAIN_TABLE, table);
  w.string(NFTA_CHAIN_NAME, chain);
  w.end(at);
  at = w.header(nfTables(NFT_MSG_GETRULE), NLM_F_REQUEST | NLM_F_DUMP, seq + 1, family, 0);
  w.string(NFTA_RULE_TABLE, table);
  w.string(NFTA_RULE_CHAIN, chain);
  w.end(at);
  return w.done();
}

/**
 * The comments of the chain's rules in order (a rule without one counts as ''), null when the
 * chain does not exist, undefined when the answers are not complete.
 */
export function ruleComments(replies: readonly Reply[], seq: number): string[] | null | undefined {
  const chain = answer(replies, seq, nfTables(NFT_MSG_NEWCHAIN));
  if (chain.error === -ENOENT) return null;
  if (chain.reply === undefined) return undefined;
  return dump(replies, seq + 1, nfTables(NFT_MSG_NEWRULE))?.map((r) => commentOf(r.attrs.get(NFTA_RULE_USERDATA)));
}

/** A rule's comment from its user data (type, length, value; the value NUL-terminated). */
function commentOf(udata: Buffer | undefined): string {
  for (let i = 0; udata !== undefined && i + 2 <= udata.length; ) {
    const type = udata[i] ?? 0;
    const len = udata[i + 1] ?? 0;
    if (i + 2 + len > udata.length) break;
    if (type === UDATA_RULE_COMMENT) return cString(udata.subarray(i + 2, i + 2 + len));
    i += 2 + len;
  }
  return '';
}

function cString(b: Buffer): string {
  const end = b.indexOf(0);
  return b.toString('utf8', 0, end === -1 ? b.length : end);
}

/** One element of a set asked for by its key (GETSETELEM, acknowledged; not a dump). */
export function encodeGetElement(family: number, table: string, set: string, key: Buffer, seq: number, w = new Writer()): Buffer {
  const at = w.header(nfTables(NFT_MSG_GETSETELEM), NLM_F_REQUEST | NLM_F_ACK, seq, family, 0);
  w.string(NFTA_SET_ELEM_LIST_TABLE, table);
  w.string(NFTA_SET_ELEM_LIST_SET, set);
  const list = w.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
  const item = w.nest(NFTA_LIST_ELEM);
  const keyNest = w.nest(NFTA_SET_ELEM_KEY);
  w.attr(NFTA_DATA_VALUE, key);
  w.close(keyNest);
  w.close(item);
  w.close(list);
  w.end(at);
  return w.done();
}

/** Whether the element is in the set (the kernel answered it), absent (ENOENT: no such element, set or table); undefined on any other answer. */
export function elementPresent(replies: readonly Reply[], seq: number): boolean | undefined {
  const { reply, error } = answer(replies, seq, nfTables(NFT_MSG_NEWSETELEM));
  if (error === -ENOENT) return false;
  return reply === undefined ? undefined : true;
}
