import { describe, expect, it } from 'vitest';
import { ExpiryQueue } from '../src/engine/expiry-queue.js';
import { ShardedMap } from '../src/common/sharded-map.js';
import { BanCounts } from '../src/engine/history.js';
import { lcg } from './helpers/random.js';

describe('ExpiryQueue', () => {
  it('gives back every entry in the order of its time, only once due, with its address', () => {
    const q = new ExpiryQueue();
    const random = lcg(11);
    const model: { until: number; ip: string }[] = [];
    let now = 0;
    for (let step = 0; step < 20_000; step++) {
      if (random() < 0.6) {
        // Times repeat and arrive out of order, as bans of different lengths do.
        const until = now + Math.floor(random() * 500);
        const ip = `10.0.${String(step >> 8 & 255)}.${String(step & 255)}`;
        q.push(until, ip);
        model.push({ until, ip });
      } else {
        now += Math.floor(random() * 40);
        for (let e = q.popDue(now); e !== undefined; e = q.popDue(now)) {
          expect(e.until).toBeLessThanOrEqual(now);
          const earliest = Math.min(...model.map((m) => m.until));
          expect(e.until).toBe(earliest);
          const i = model.findIndex((m) => m.until === e.until && m.ip === e.ip);
          expect(i).not.toBe(-1);
          model.splice(i, 1);
        }
        // What stays is not due.
        expect(model.every((m) => m.until > now)).toBe(true);
        expect(q.size).toBe(model.length);
      }
    }
    q.clear();
    expect(q.size).toBe(0);
    expect(q.popDue(Number.MAX_SAFE_INTEGER)).toBeUndefined();
  });
});

describe('BanCounts', () => {
  it('counts the starts within the kept history, one start or several, and forgets the older ones', () => {
    const h = new BanCounts(1000, [
      { ip: '192.0.2.1', startedAt: 100 },
      { ip: '192.0.2.2', startedAt: 100 },
      { ip: '192.0.2.2', startedAt: 900 },
    ]);
    expect(h.count('192.0.2.1', 1000)).toBe(1);
    expect(h.count('192.0.2.2', 1000)).toBe(2);
    expect(h.count('192.0.2.3', 1000)).toBe(0);
    // 100 has left the history at 1101; 900 has not.
    expect(h.count('192.0.2.1', 1101)).toBe(0);
    expect(h.count('192.0.2.2', 1101)).toBe(1);
    // A forgotten address starts again from one.
    h.add('192.0.2.1', 1200);
    expect(h.count('192.0.2.1', 1200)).toBe(1);
    h.add('192.0.2.1', 1300);
    h.add('192.0.2.1', 1400);
    expect(h.count('192.0.2.1', 1400)).toBe(3);
    expect(h.count('192.0.2.1', 2250)).toBe(2);
    expect(h.count('192.0.2.1', 5000)).toBe(0);
  });

  it('keeps everything when the history is kept forever', () => {
    const h = new BanCounts(Number.POSITIVE_INFINITY, [{ ip: '2001:db8::1', startedAt: 1 }]);
    h.add('2001:db8::1', 2);
    expect(h.count('2001:db8::1', Number.MAX_SAFE_INTEGER)).toBe(2);
  });
});

describe('ShardedMap', () => {
  it('holds what a Map holds, for address strings and 32-bit numbers alike', () => {
    const random = lcg(5);
    const sharded = new ShardedMap<string | number, number>();
    const model = new Map<string | number, number>();
    for (let step = 0; step < 50_000; step++) {
      const n = Math.floor(random() * 3000);
      // Strings and numbers, negative ones too (an IPv4 key above 127.255.255.255 is one).
      const key = random() < 0.5 ? `10.${String(n >> 8)}.${String(n & 255)}.1` : (n * 2_654_435_761) | 0;
      const r = random();
      if (r < 0.6) {
        expect(sharded.set(key, step)).toBe(sharded);
        model.set(key, step);
      } else if (r < 0.9) {
        expect(sharded.delete(key)).toBe(model.delete(key));
      } else {
        expect(sharded.get(key)).toBe(model.get(key));
        expect(sharded.has(key)).toBe(model.has(key));
      }
      expect(sharded.size).toBe(model.size);
    }
    expect(new Map(sharded)).toEqual(model);
    expect(new Set(sharded.keys())).toEqual(new Set(model.keys()));
    expect([...sharded.values()].sort()).toEqual([...model.values()].sort());
    const seen: [string | number, number][] = [];
    sharded.forEach((v, k) => seen.push([k, v]));
    expect(new Map(seen)).toEqual(model);
    sharded.clear();
    expect(sharded.size).toBe(0);
    expect([...sharded]).toEqual([]);
  });

  it('deletes the oldest entries of a map kept in time order, and only those', () => {
    const m = new ShardedMap<string, number>();
    for (let t = 0; t < 5000; t++) m.set(`192.0.${String(t >> 8)}.${String(t & 255)}`, t);
    m.deleteOldestWhile((at) => at < 3000);
    expect(m.size).toBe(2000);
    expect([...m.values()].every((at) => at >= 3000)).toBe(true);
    expect(m.get('192.0.11.184')).toBe(3000);
    expect(m.has('192.0.11.183')).toBe(false);
  });
});
