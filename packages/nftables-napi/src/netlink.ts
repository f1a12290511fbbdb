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
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  const b = Buffer.alloc(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i] ?? '';
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255) return undefined;
    b[i] = Number(p);
  }
  return b;
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
    const at = w.header((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSET, NLM_F_REQUEST | NLM_F_ACK, seq + i, s.family, 0);
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
    const at = w.header((NFNL_SUBSYS_NFTABLES << 8) | m.type, NLM_F_REQUEST | NLM_F_ACK | create, seq + 1 + i, m.set.family, 0);
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
    const seq = buf.readUInt32LE(at + 8);
    if (type === NLMSG_ERROR) {
      if (len < 20) return undefined;
      out.push({ seq, type, error: buf.readInt32LE(at + 16), attrs: new Map() });
    } else {
      const attrs = new Map<number, Buffer>();
      let a = at + 20;
      while (a + 4 <= at + len) {
        const alen = buf.readUInt16LE(a);
        if (alen < 4 || a + alen > at + len) break;
        attrs.set(buf.readUInt16LE(a + 2) & 0x3fff, buf.subarray(a + 4, a + alen));
        a += (alen + 3) & ~3;
      }
      out.push({ seq, type, error: undefined, attrs });
    }
    at += (len + 3) & ~3;
  }
  return out;
}

/** Whether the kernel's answers to encodeSetQueries say every set holds plain addresses. */
export function setsArePlain(sets: readonly SetRef[], replies: readonly Reply[], seq: number): boolean {
  return sets.every((s, i) => {
    const mine = replies.filter((r) => r.seq === seq + i);
    const desc = mine.find((r) => r.type === ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSET));
    const ack = mine.find((r) => r.error !== undefined);
    if (desc === undefined || ack?.error !== 0) return false;
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
