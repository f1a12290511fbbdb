import { describe, expect, it } from 'vitest';
import { FailureTable, eventOf, pack, timeOf, transportOf } from '../src/engine/failures.js';
import { lcg } from './helpers/random.js';

describe('FailureTable', () => {
  it('evicts exactly the address whose last failure is oldest, through many compactions', () => {
    const max = 500;
    const table = new FailureTable(max);
    // The model: address → time of its last failure.
    const model = new Map<string, number>();
    const random = lcg(7);
    for (let t = 1; t <= 200_000; t++) {
      const ip = `10.0.${Math.floor(random() * 8)}.${Math.floor(random() * 250)}`;
      if (random() < 0.05 && model.size > 0) {
        // A ban takes an address out.
        table.take(ip);
        model.delete(ip);
        continue;
      }
      if (!model.has(ip) && model.size >= max) {
        let oldest = '';
        let at = Infinity;
        for (const [k, v] of model) {
          if (v < at) {
            at = v;
            oldest = k;
          }
        }
        model.delete(oldest);
      }
      model.set(ip, t);
      // A window longer than the run: only eviction and take remove addresses.
      table.add(ip, pack(t, 0), 0);
      if (t % 10_000 === 0) expect(new Set(table.keys())).toEqual(new Set(model.keys()));
    }
    expect(table.size).toBe(model.size);
    expect(table.evicted).toBeGreaterThan(1000);
  });

  it('counts failures within the window and forgets addresses whose failures all left it', () => {
    const table = new FailureTable(1000);
    expect(table.add('192.0.2.1', pack(1000, 1), 0)).toBe(1);
    expect(table.add('192.0.2.1', pack(2000, 2), 0)).toBe(2);
    expect(table.add('192.0.2.2', pack(3000, 0), 0)).toBe(1);
    // A failure at 5000 with a window starting at 1500: the one at 1000 has left.
    expect(table.add('192.0.2.1', pack(5000, 3), 1500)).toBe(2);
    table.prune(4000);
    expect([...table.keys()]).toEqual(['192.0.2.1']);
    expect(table.take('192.0.2.1').map(eventOf)).toEqual([2, 3]);
    table.prune(10_000);
    expect(table.size).toBe(0);
  });

  it('counts as a model does through adds, windows, takes, deletes, prunes and evictions, reusing the lone failures\' slots', () => {
    const max = 250;
    const window = 300;
    const table = new FailureTable(max);
    // The model: address → its failures kept (times, oldest first), and whether it ever held two.
    const model = new Map<string, { fails: number[]; several: boolean }>();
    const random = lcg(11);
    const pool = Array.from({ length: 400 }, (_, i) => (i % 5 === 0 ? `2001:db8::${i.toString(16)}` : i % 5 === 1 ? `${200 + (i % 50)}.1.2.${i % 256}` : `10.9.${i >> 8}.${i & 255}`));
    for (let t = 1; t <= 60_000; t++) {
      const ip = pool[Math.floor(random() * pool.length)] ?? '';
      const start = t - window;
      const r = random();
      if (r < 0.03) {
        const m = model.get(ip);
        expect(table.take(ip).map(timeOf)).toEqual(m?.fails ?? []);
        model.delete(ip);
        continue;
      }
      if (r < 0.04) {
        table.delete(ip);
        model.delete(ip);
        continue;
      }
      if (r < 0.045) {
        table.prune(start);
        for (const [k, m] of model) if ((m.fails.at(-1) ?? 0) < start) model.delete(k);
        continue;
      }
      let m = model.get(ip);
      if (m === undefined) {
        if (model.size >= max) {
          let oldest = '';
          let at = Infinity;
          for (const [k, v] of model) {
            const last = v.fails.at(-1) ?? 0;
            if (last < at) {
              at = last;
              oldest = k;
            }
          }
          model.delete(oldest);
        }
        m = { fails: [t], several: false };
        model.set(ip, m);
      } else if (!m.several && (m.fails[0] ?? 0) < start) {
        m.fails = [t];
      } else {
        m.fails = [...m.fails.filter((f) => f >= start), t];
        m.several = true;
      }
      expect(table.add(ip, pack(t, 0), start)).toBe(m.fails.length);
      if (t % 5_000 === 0) {
        expect(new Set(table.keys())).toEqual(new Set(model.keys()));
        expect(table.loneSlots).toBe([...model.values()].filter((v) => !v.several).length);
      }
    }
    expect(table.size).toBe(model.size);
    expect(table.evicted).toBeGreaterThan(100);
  });

  it('keeps IPv4 addresses as numbers and gives every address back as the same text', () => {
    const table = new FailureTable(100);
    const ips = ['1.2.3.4', '255.255.255.254', '128.0.0.1', '0.0.0.1', '2001:db8::1', '::ffff:1.2.3.4', '10.0.0.10'];
    for (const [i, ip] of ips.entries()) table.add(ip, pack(1000 + i, 0), 0);
    // In no particular order (the table is sharded).
    expect([...table.keys()].sort()).toEqual([...ips].sort());
    expect(table.add('128.0.0.1', pack(2000, 5), 0)).toBe(2);
    expect(table.take('128.0.0.1').map(eventOf)).toEqual([0, 5]);
    table.delete('255.255.255.254');
    expect([...table.keys()].sort()).toEqual(['1.2.3.4', '0.0.0.1', '2001:db8::1', '::ffff:1.2.3.4', '10.0.0.10'].sort());
  });
});

describe('a packed failure', () => {
  it('holds its time (ms), transport code and event index exactly, until the year 2500', () => {
    for (const t of [0, 1_764_000_000_123, Date.parse('2499-12-31T23:59:59.999Z')]) {
      for (const [transport, event] of [[0, 0], [5, 63], [3, 17]] as const) {
        const p = pack(t, event, transport);
        expect([timeOf(p), transportOf(p), eventOf(p)]).toEqual([t, transport, event]);
        expect(Number.isSafeInteger(p)).toBe(true);
      }
    }
  });
});
