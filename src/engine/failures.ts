// Failures per address within the window, bounded, with O(1) eviction of the address whose last
// failure is oldest. A distributed scan puts a million addresses here with one failure each, so
// the common case is kept small: a lone failure is a slot in a typed array, not an object with arrays.
import { detach } from '../common/ip.js';
import { ShardedMap } from '../common/sharded-map.js';

/**
 * One failure: its time (ms), its transport's code and the index of its event name, packed in one
 * number as (time × 8 + transport) × 64 + event (exact up to the year 2500): a lone failure stays a
 * bare number, whatever explain later shows of it.
 */
export type Packed = number;
const EVENT_SLOTS = 64;
const TRANSPORT_SLOTS = 8;

interface Several {
  /** Oldest first; entries before `head` have left the window. */
  fails: Packed[];
  head: number;
}

/** A lone failure is its slot in the table's LoneFailures. */
type Entry = number | Several;

export function pack(time: number, event: number, transport = 0): Packed {
  return (Math.floor(time) * TRANSPORT_SLOTS + transport) * EVENT_SLOTS + event;
}

export function timeOf(p: Packed): number {
  return Math.floor(p / (EVENT_SLOTS * TRANSPORT_SLOTS));
}

export function eventOf(p: Packed): number {
  return p % EVENT_SLOTS;
}

export function transportOf(p: Packed): number {
  return Math.floor(p / EVENT_SLOTS) % TRANSPORT_SLOTS;
}

/** Slots per chunk of LoneFailures (128 KiB). */
const CHUNK_BITS = 14;
const CHUNK_MASK = (1 << CHUNK_BITS) - 1;

/**
 * The lone failures' packed values, in typed arrays that the garbage collector never scans: the
 * table holds a small integer per address (its slot), where a packed value in it would be a
 * number boxed on the young heap per failure, copied by the next young collections under a scan.
 * Freed slots are reused; chunks are never moved, grown or released (at most BAN_MAX_TRACKED
 * slots of 8 bytes).
 */
class LoneFailures {
  private readonly chunks: Float64Array[] = [];
  private readonly freed: number[] = [];
  private next = 0;

  put(p: Packed): number {
    const slot = this.freed.pop() ?? this.next++;
    let chunk = this.chunks[slot >> CHUNK_BITS];
    if (chunk === undefined) {
      chunk = new Float64Array(CHUNK_MASK + 1);
      this.chunks.push(chunk);
    }
    chunk[slot & CHUNK_MASK] = p;
    return slot;
  }

  get(slot: number): Packed {
    return this.chunks[slot >> CHUNK_BITS]?.[slot & CHUNK_MASK] ?? 0;
  }

  set(slot: number, p: Packed): void {
    const chunk = this.chunks[slot >> CHUNK_BITS];
    if (chunk !== undefined) chunk[slot & CHUNK_MASK] = p;
  }

  free(slot: number): void {
    this.freed.push(slot);
  }

  /** Slots in use. */
  get used(): number {
    return this.next - this.freed.length;
  }
}

export const MAX_EVENT_NAMES = EVENT_SLOTS;

/**
 * The table's key of an address: an IPv4 address as its 32 bits in a small integer (no string
 * kept per address: a distributed scan is mostly IPv4), any other as a string of its own (not a
 * slice of the AMI frame it came in, which would keep the whole frame alive).
 */
type Key = number | string;

function keyOf(ip: string): Key {
  let n = 0;
  let octet = 0;
  let dots = 0;
  let digits = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 46) {
      if (digits === 0) return detach(ip);
      n = (n << 8) | octet;
      octet = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57 && digits < 3) {
      octet = octet * 10 + (c - 48);
      digits++;
    } else {
      return detach(ip);
    }
  }
  if (dots !== 3 || digits === 0 || octet > 255) return detach(ip);
  return (n << 8) | octet;
}

function textOf(k: Key): string {
  return typeof k === 'string' ? k : `${(k >>> 24) & 255}.${(k >>> 16) & 255}.${(k >>> 8) & 255}.${k & 255}`;
}

/** Places per queue segment: the most work one compaction step does. */
const SEGMENT = 4096;

/** A run of queue places, oldest first; places before `head` are consumed. */
interface Segment {
  ips: Key[];
  times: number[];
  head: number;
}

export class FailureTable {
  private readonly entries = new ShardedMap<Key, Entry>();
  private readonly lone = new LoneFailures();
  /**
   * Addresses in the order of their failures, each with the failure's time: the front is the
   * oldest. An address failing again is pushed again; its older places are skipped as stale.
   * Kept in segments so that dropping the front and removing stale places are done a segment at
   * a time, never as one pass over a million places.
   */
  private readonly segments: Segment[] = [{ ips: [], times: [], head: 0 }];
  /** Places in the queue (live and stale). */
  private places = 0;
  /** The segment the next compaction step filters. */
  private compactAt = 0;
  evicted = 0;

  constructor(private readonly maxTracked: number) {}

  get size(): number {
    return this.entries.size;
  }

  /** Lone failures' slots in use: one per address with a single failure (for tests). */
  get loneSlots(): number {
    return this.lone.used;
  }

  delete(ip: string): void {
    const key = keyOf(ip);
    const e = this.entries.get(key);
    if (e !== undefined) this.drop(key, e);
  }

  /**
   * Records a failure (failures at or after windowStart stay) and returns how many are in the
   * window. `ip` is an address as parseIp gives it.
   */
  add(text: string, p: Packed, windowStart: number): number {
    const ip = keyOf(text);
    const e = this.entries.get(ip);
    let count: number;
    if (e === undefined) {
      if (this.entries.size >= this.maxTracked) this.evictOldest();
      this.entries.set(ip, this.lone.put(p));
      count = 1;
    } else if (typeof e === 'number') {
      const first = this.lone.get(e);
      if (timeOf(first) < windowStart) {
        this.lone.set(e, p);
        count = 1;
      } else {
        this.lone.free(e);
        this.entries.set(ip, { fails: [first, p], head: 0 });
        count = 2;
      }
    } else {
      slide(e, windowStart);
      e.fails.push(p);
      count = e.fails.length - e.head;
    }
    this.push(ip, p);
    // Stale places outnumber live ones: filter one segment (bounded work per failure).
    if (this.places > SEGMENT && this.places > 2 * this.entries.size) this.compactStep();
    return count;
  }

  /** How many of the address's failures are at or after windowStart (nothing recorded). */
  count(text: string, windowStart: number): number {
    const e = this.entries.get(keyOf(text));
    if (e === undefined) return 0;
    if (typeof e === 'number') return timeOf(this.lone.get(e)) >= windowStart ? 1 : 0;
    let n = 0;
    for (let i = e.fails.length - 1; i >= e.head && timeOf(e.fails[i] ?? 0) >= windowStart; i--) n++;
    return n;
  }

  /** The failures in the window (oldest first), and forgets the address. */
  take(text: string): Packed[] {
    const ip = keyOf(text);
    const e = this.entries.get(ip);
    if (e === undefined) return [];
    const fails = typeof e === 'number' ? [this.lone.get(e)] : e.fails.slice(e.head);
    this.drop(ip, e);
    return fails;
  }

  /** Forgets addresses whose failures have all left the window (before windowStart). */
  prune(windowStart: number): void {
    for (;;) {
      const seg = this.front();
      if (seg === undefined) return;
      const t = seg.times[seg.head] ?? 0;
      if (timeOf(t) >= windowStart) return;
      const ip = seg.ips[seg.head] ?? '';
      this.consume(seg);
      const e = this.entries.get(ip);
      if (e !== undefined && this.lastOf(e) === t) this.drop(ip, e);
    }
  }

  /** The addresses tracked, as text (for a reload of the ignore list). */
  *keys(): IterableIterator<string> {
    for (const k of this.entries.keys()) yield textOf(k);
  }

  private evictOldest(): void {
    for (;;) {
      const seg = this.front();
      if (seg === undefined) return;
      const ip = seg.ips[seg.head] ?? '';
      const t = seg.times[seg.head] ?? 0;
      this.consume(seg);
      const e = this.entries.get(ip);
      // Stale places (the address failed again later, or is gone) are skipped.
      if (e !== undefined && this.lastOf(e) === t) {
        this.drop(ip, e);
        this.evicted++;
        return;
      }
    }
  }

  private lastOf(e: Entry): Packed {
    return typeof e === 'number' ? this.lone.get(e) : (e.fails[e.fails.length - 1] ?? 0);
  }

  private drop(ip: Key, e: Entry): void {
    if (typeof e === 'number') this.lone.free(e);
    this.entries.delete(ip);
  }

  private push(ip: Key, p: Packed): void {
    let last = this.segments[this.segments.length - 1];
    if (last === undefined || last.ips.length >= SEGMENT) {
      last = { ips: [], times: [], head: 0 };
      this.segments.push(last);
    }
    last.ips.push(ip);
    last.times.push(p);
    this.places++;
  }

  /** The oldest segment with an unconsumed place; emptied segments are dropped (O(1) each). */
  private front(): Segment | undefined {
    for (;;) {
      const seg = this.segments[0];
      if (seg === undefined) return undefined;
      if (seg.head < seg.ips.length) return seg;
      if (this.segments.length === 1) {
        this.segments[0] = { ips: [], times: [], head: 0 };
        return undefined;
      }
      this.segments.shift();
      if (this.compactAt > 0) this.compactAt--;
    }
  }

  private consume(seg: Segment): void {
    seg.head++;
    this.places--;
  }

  /** Removes the stale places of one segment, keeping the order of the live ones. */
  private compactStep(): void {
    if (this.compactAt >= this.segments.length) this.compactAt = 0;
    const seg = this.segments[this.compactAt];
    this.compactAt++;
    if (seg === undefined) return;
    let kept = 0;
    for (let i = seg.head; i < seg.ips.length; i++) {
      const ip = seg.ips[i] ?? '';
      const t = seg.times[i] ?? 0;
      const e = this.entries.get(ip);
      if (e !== undefined && this.lastOf(e) === t) {
        seg.ips[kept] = ip;
        seg.times[kept] = t;
        kept++;
      }
    }
    this.places -= seg.ips.length - seg.head - kept;
    seg.ips.length = kept;
    seg.times.length = kept;
    seg.head = 0;
  }
}

/** Drops failures before windowStart; compacts the array once half of it is dead. */
function slide(e: Several, windowStart: number): void {
  while (e.head < e.fails.length && timeOf(e.fails[e.head] ?? 0) < windowStart) e.head++;
  if (e.head > 16 && e.head * 2 > e.fails.length) {
    e.fails.splice(0, e.head);
    e.head = 0;
  }
}
