// Failures per address within the window, bounded, with O(1) eviction of the address whose last
// failure is oldest. A distributed scan puts a million addresses here with one failure each, so
// the common case is kept small: a lone failure is a bare number, not an object with arrays.

/** One failure: its time (ms) and the index of its event name, packed as time × 64 + index. */
type Packed = number;
const EVENT_SLOTS = 64;

interface Several {
  /** Oldest first; entries before `head` have left the window. */
  fails: Packed[];
  head: number;
}

type Entry = Packed | Several;

export function pack(time: number, event: number): Packed {
  return Math.floor(time) * EVENT_SLOTS + event;
}

function timeOf(p: Packed): number {
  return Math.floor(p / EVENT_SLOTS);
}

function lastOf(e: Entry): Packed {
  return typeof e === 'number' ? e : (e.fails[e.fails.length - 1] ?? 0);
}

export const MAX_EVENT_NAMES = EVENT_SLOTS;

export class FailureTable {
  private readonly entries = new Map<string, Entry>();
  /**
   * Addresses in the order of their failures, each with the failure's time: the front is the
   * oldest. An address failing again is pushed again; its older places are skipped as stale.
   */
  private queueIps: string[] = [];
  private queueTimes: number[] = [];
  private queueHead = 0;
  evicted = 0;

  constructor(private readonly maxTracked: number) {}

  get size(): number {
    return this.entries.size;
  }

  delete(ip: string): void {
    this.entries.delete(ip);
  }

  /**
   * Records a failure (failures at or after windowStart stay) and returns how many are in the
   * window. `ip` must be a detached string: it becomes a long-lived key.
   */
  add(ip: string, p: Packed, windowStart: number): number {
    const e = this.entries.get(ip);
    let count: number;
    if (e === undefined) {
      if (this.entries.size >= this.maxTracked) this.evictOldest();
      this.entries.set(ip, p);
      count = 1;
    } else if (typeof e === 'number') {
      if (timeOf(e) < windowStart) {
        this.entries.set(ip, p);
        count = 1;
      } else {
        this.entries.set(ip, { fails: [e, p], head: 0 });
        count = 2;
      }
    } else {
      slide(e, windowStart);
      e.fails.push(p);
      count = e.fails.length - e.head;
    }
    this.queueIps.push(ip);
    this.queueTimes.push(p);
    this.compactQueue();
    return count;
  }

  /** The event indexes of the failures in the window, and forgets the address. */
  take(ip: string): number[] {
    const e = this.entries.get(ip);
    this.entries.delete(ip);
    if (e === undefined) return [];
    if (typeof e === 'number') return [e % EVENT_SLOTS];
    return e.fails.slice(e.head).map((p) => p % EVENT_SLOTS);
  }

  /** Forgets addresses whose failures have all left the window (before windowStart). */
  prune(windowStart: number): void {
    while (this.queueHead < this.queueIps.length) {
      const t = this.queueTimes[this.queueHead] ?? 0;
      if (timeOf(t) >= windowStart) break;
      const ip = this.queueIps[this.queueHead] ?? '';
      this.queueHead++;
      const e = this.entries.get(ip);
      if (e !== undefined && lastOf(e) === t) this.entries.delete(ip);
    }
    this.compactQueue();
  }

  /** Keys, for a reload of the ignore list. */
  keys(): IterableIterator<string> {
    return this.entries.keys();
  }

  private evictOldest(): void {
    while (this.queueHead < this.queueIps.length) {
      const ip = this.queueIps[this.queueHead] ?? '';
      const t = this.queueTimes[this.queueHead] ?? 0;
      this.queueHead++;
      const e = this.entries.get(ip);
      // Stale places (the address failed again later, or is gone) are skipped.
      if (e !== undefined && lastOf(e) === t) {
        this.entries.delete(ip);
        this.evicted++;
        return;
      }
    }
  }

  /** Drops the consumed front, and stale places once they outnumber the live ones: amortized O(1). */
  private compactQueue(): void {
    const length = this.queueIps.length - this.queueHead;
    if (this.queueHead > 4096 && this.queueHead * 2 > this.queueIps.length) {
      this.queueIps = this.queueIps.slice(this.queueHead);
      this.queueTimes = this.queueTimes.slice(this.queueHead);
      this.queueHead = 0;
    } else if (length > 4096 && length > 2 * this.entries.size) {
      const ips: string[] = [];
      const times: number[] = [];
      for (let i = this.queueHead; i < this.queueIps.length; i++) {
        const ip = this.queueIps[i] ?? '';
        const t = this.queueTimes[i] ?? 0;
        const e = this.entries.get(ip);
        if (e !== undefined && lastOf(e) === t) {
          ips.push(ip);
          times.push(t);
        }
      }
      this.queueIps = ips;
      this.queueTimes = times;
      this.queueHead = 0;
    }
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
