// A Map that never stops the event loop to grow. A Map grows by copying every entry into a table
// twice its size, in one step: 29 ms at 131 072 entries and 130 ms at 524 288 on this 2-core
// machine, and the engine's bans, their history and the daemon's records, one entry per ban each,
// all grew at the same ban (a 60 ms stall in bench:flood A). Split by a hash of the key into
// SHARDS maps, each copy is a sixteenth of that and they come at different times.

const SHARDS = 16;
const SHIFT = 28; // the top 4 bits of a 32-bit hash pick the shard

/** FNV-1a over the characters (a key's own hash is not reachable from JS); numbers mixed by a multiply. */
function shardOf(key: string | number): number {
  if (typeof key === 'number') return Math.imul(key | 0, 0x9e3779b1) >>> SHIFT;
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h >>> SHIFT;
}

/**
 * Map's interface for what we use of it. Iteration goes shard by shard: entries come in the order
 * they were added within a shard, not across shards.
 */
export class ShardedMap<K extends string | number, V> implements ReadonlyMap<K, V> {
  private readonly shards: Map<K, V>[] = Array.from({ length: SHARDS }, () => new Map<K, V>());
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(key: K): V | undefined {
    return this.shard(key).get(key);
  }

  has(key: K): boolean {
    return this.shard(key).has(key);
  }

  set(key: K, value: V): this {
    const m = this.shard(key);
    const before = m.size;
    m.set(key, value);
    this.count += m.size - before;
    return this;
  }

  delete(key: K): boolean {
    const deleted = this.shard(key).delete(key);
    if (deleted) this.count--;
    return deleted;
  }

  clear(): void {
    for (const m of this.shards) m.clear();
    this.count = 0;
  }

  /**
   * Deletes, in each shard, its oldest entries (first added) as long as `old` says so: for a map
   * kept in time order, what one pass over the whole map would do with `break` at the first young one.
   */
  deleteOldestWhile(old: (value: V, key: K) => boolean): void {
    for (const m of this.shards) {
      for (const [k, v] of m) {
        if (!old(v, k)) break;
        m.delete(k);
        this.count--;
      }
    }
  }

  forEach(fn: (value: V, key: K, map: ReadonlyMap<K, V>) => void): void {
    for (const [k, v] of this) fn(v, k, this);
  }

  *entries(): MapIterator<[K, V]> {
    for (const m of this.shards) yield* m.entries();
  }

  *keys(): MapIterator<K> {
    for (const m of this.shards) yield* m.keys();
  }

  *values(): MapIterator<V> {
    for (const m of this.shards) yield* m.values();
  }

  [Symbol.iterator](): MapIterator<[K, V]> {
    return this.entries();
  }

  private shard(key: K): Map<K, V> {
    return this.shards[shardOf(key)] as Map<K, V>;
  }
}
