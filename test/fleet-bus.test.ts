import { afterEach, describe, expect, it, vi } from 'vitest';
import { RedisServer } from '../src/demo/fleet-lab.js';
import type { FleetBan } from '../src/fleet/decision.js';
import { RedisDecisionBus, type RedisBusOptions } from '../src/fleet/redis-bus.js';
import { MemoryLogger } from './helpers/memory-logger.js';

/** Connecting and loading the client can take seconds while the whole suite runs. */
const WAIT = { timeout: 10_000 };

afterEach(() => {
  vi.doUnmock('@redis/client/dist/lib/client/index.js');
  vi.resetModules();
});

describe('the Redis bus when its client module cannot be loaded', () => {
  it('says so as the fleet error, keeps what it was to share in its bounded outbox, retries, and stops at once', async () => {
    // A broken install (the package missing or unreadable): the import itself fails.
    vi.resetModules();
    vi.doMock('@redis/client/dist/lib/client/index.js', () => {
      throw new Error('Cannot find package @redis/client');
    });
    const { RedisDecisionBus: Unloadable } = await import('../src/fleet/redis-bus.js');
    const states: string[] = [];
    const bus = new Unloadable(options('redis://127.0.0.1:6379', 'pbx-a'));
    bus.on('state', (s) => states.push(s));
    bus.start();
    await vi.waitFor(() => {
      expect(bus.status().state).toBe('degraded');
    }, WAIT);
    // The fleet's error is the import's own (vitest words it its way).
    const importError = await import('@redis/client/dist/lib/client/index.js').then(
      () => 'loaded',
      (err: unknown) => (err instanceof Error ? err.message : String(err)),
    );
    expect(importError).not.toBe('loaded');
    expect(bus.status().lastError).toBe(importError);
    // The local path never waits on the bus: publishing only queues, and the queue is bounded.
    for (let i = 0; i < 150; i++) bus.publish({ op: 'ban', ip: `192.0.2.${String(i)}`, until: Date.now() + 60_000, at: Date.now(), origin: 'pbx-a', reason: 'threshold' });
    expect(bus.status().outbox).toBeLessThanOrEqual(100);
    expect(bus.status().outbox + bus.status().outboxDropped).toBe(150);
    // It keeps trying, never throws.
    await vi.waitFor(() => {
      expect(bus.status().reconnects).toBeGreaterThan(0);
    }, WAIT);
    // A reconnection backoff (up to 5 s) does not hold the shutdown.
    const t0 = performance.now();
    await bus.stop();
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(bus.status().state).toBe('stopped');
    expect(states).toContain('degraded');
  });
});

function options(url: string, hostId: string, extra: Partial<RedisBusOptions> = {}): RedisBusOptions {
  return {
    url,
    name: 'ami2ban',
    hostId,
    publish: true,
    streamMaxLen: 1000,
    outboxMax: 100,
    resyncMs: 60_000,
    cursor: { load: () => null, save: () => undefined },
    ownBans: (): FleetBan[] => [],
    logger: new MemoryLogger(),
    ...extra,
  };
}

describe('the Redis bus opened ahead of its start (prepare)', () => {
  it('connects and reads the snapshot ahead but hands nothing over before start(); start() takes the connection over; a bus prepared and never started closes it', async () => {
    const redis = await RedisServer.start();
    const url = `redis://127.0.0.1:${String(redis.port)}`;
    const clients = (): string[] => redis.cli('CLIENT', 'LIST').split('\n').filter((l) => l.includes('cmd='));
    try {
      const base = clients().length;
      redis.cli('SET', 'ami2ban:ban:192.0.2.9', JSON.stringify({ v: 1, op: 'ban', ip: '192.0.2.9', until: Date.now() + 60_000, at: Date.now(), origin: 'pbx-a', reason: 'threshold' }), 'PX', '60000');
      redis.cli('ZADD', 'ami2ban:bans', String(Date.now() + 60_000), '192.0.2.9');
      const bus = new RedisDecisionBus(options(url, 'pbx-b'));
      const parts: string[][] = [];
      bus.on('snapshot', (bans) => parts.push(bans.map((b) => b.ip)));
      bus.prepare();
      // Its two connections (commands and the blocking reader) are open, and the snapshot's first
      // part was read…
      await vi.waitFor(() => {
        expect(clients().length).toBe(base + 2);
        expect(clients().some((l) => l.includes('cmd=mget'))).toBe(true);
      }, WAIT);
      // …but nothing was handed over meanwhile.
      await new Promise((r) => setTimeout(r, 100));
      expect(parts).toEqual([]);
      expect(bus.status().state).toBe('connecting');
      bus.start();
      await vi.waitFor(() => {
        expect(bus.status().state).toBe('connected');
      }, WAIT);
      expect(parts).toEqual([['192.0.2.9']]);
      // The prepared connection was taken over, not doubled.
      expect(clients().length).toBe(base + 2);
      await bus.stop();
      await vi.waitFor(() => {
        expect(clients().length).toBe(base);
      }, WAIT);

      // Prepared, then stopped without a start (the daemon's own start failed): nothing stays open.
      const unstarted = new RedisDecisionBus(options(url, 'pbx-c'));
      unstarted.prepare();
      await vi.waitFor(() => {
        expect(clients().length).toBe(base + 2);
      }, WAIT);
      await unstarted.stop();
      await vi.waitFor(() => {
        expect(clients().length).toBe(base);
      }, WAIT);
      expect(unstarted.status().state).toBe('stopped');
    } finally {
      await redis.kill();
    }
  });

  it("a read-ahead that fails: the start is degraded with Redis' own error, retries without it, and connects once Redis answers", async () => {
    const redis = await RedisServer.start();
    const url = `redis://127.0.0.1:${String(redis.port)}`;
    const bus = new RedisDecisionBus(options(url, 'pbx-b'));
    try {
      // Not a sorted set: the read-ahead's ZRANGE is refused.
      redis.cli('SET', 'ami2ban:bans', 'not a sorted set');
      const parts: number[] = [];
      bus.on('snapshot', (bans) => parts.push(bans.length));
      bus.prepare();
      await new Promise((r) => setTimeout(r, 200));
      bus.start();
      await vi.waitFor(() => {
        expect(bus.status().state).toBe('degraded');
      }, WAIT);
      expect(bus.status().lastError).toMatch(/WRONGTYPE/);
      expect(parts).toEqual([]);
      redis.cli('DEL', 'ami2ban:bans');
      await vi.waitFor(() => {
        expect(bus.status().state).toBe('connected');
      }, WAIT);
      expect(bus.status().reconnects).toBeGreaterThan(0);
      expect(parts).toEqual([0]);
    } finally {
      await bus.stop();
      await redis.kill();
    }
  });

  it('started long after its read-ahead, with the stream trimmed past that point meanwhile: takes the snapshot again, and misses no ban', async () => {
    const redis = await RedisServer.start();
    const url = `redis://127.0.0.1:${String(redis.port)}`;
    const origin = new RedisDecisionBus(options(url, 'pbx-a', { outboxMax: 10_000 }));
    const late = new RedisDecisionBus(options(url, 'pbx-b'));
    try {
      origin.start();
      await vi.waitFor(() => {
        expect(origin.status().state).toBe('connected');
      }, WAIT);
      origin.publish({ op: 'ban', ip: '192.0.2.1', until: Date.now() + 600_000, at: Date.now(), origin: 'pbx-a', reason: 'threshold' });
      await vi.waitFor(() => {
        expect(origin.status().published.ban).toBe(1);
      }, WAIT);
      late.prepare();
      await vi.waitFor(() => {
        expect(redis.cli('CLIENT', 'LIST').includes('cmd=mget')).toBe(true);
      }, WAIT);
      // While the late host waits (its database, say): 3 000 bans, three times the stream's MAXLEN.
      const ips = Array.from({ length: 3000 }, (_, i) => `198.51.${String(100 + (i >> 8))}.${String(i & 255)}`);
      for (const ip of ips) origin.publish({ op: 'ban', ip, until: Date.now() + 600_000, at: Date.now(), origin: 'pbx-a', reason: 'threshold' });
      await vi.waitFor(() => {
        expect(origin.status().published.ban).toBe(3001);
      }, WAIT);
      expect(redis.cli('XRANGE', 'ami2ban:stream', '-', '+', 'COUNT', '1')).not.toContain(ips[0]);
      const got = new Set<string>();
      late.on('snapshot', (bans) => {
        for (const b of bans) got.add(b.ip);
      });
      late.on('decisions', (ds) => {
        for (const d of ds) got.add(d.ip);
      });
      late.start();
      await vi.waitFor(() => {
        expect(got.size).toBe(3001);
      }, WAIT);
      expect(late.status().snapshots).toBe(2);
    } finally {
      await late.stop();
      await origin.stop();
      await redis.kill();
    }
  });
});

describe('the Redis bus publishing', () => {
  it('sends what was decided together in one script, in order: a longer ban kept, last writer wins, permanent bans; a reader gets them in one reply', async () => {
    const redis = await RedisServer.start();
    const url = `redis://127.0.0.1:${String(redis.port)}`;
    const a = new RedisDecisionBus(options(url, 'pbx-a'));
    const b = new RedisDecisionBus(options(url, 'pbx-b'));
    const replies: string[][] = [];
    b.on('decisions', (ds) => replies.push(ds.map((d) => `${d.op} ${d.ip}`)));
    try {
      a.start();
      b.start();
      await vi.waitFor(() => {
        expect([a.status().state, b.status().state]).toEqual(['connected', 'connected']);
      }, WAIT);
      const now = Date.now();
      const ban = (ip: string, until: number, at = now): FleetBan => ({ op: 'ban', ip, until, at, origin: 'pbx-a', reason: 'threshold' });
      a.publish(ban('192.0.2.1', now + 7_200_000));
      a.publish(ban('192.0.2.4', now + 3_600_000, now + 10));
      await vi.waitFor(() => {
        expect(replies.flat()).toEqual(['ban 192.0.2.1', 'ban 192.0.2.4']);
      }, WAIT);
      replies.length = 0;

      a.publish(ban('192.0.2.1', now + 3_600_000)); // shorter than the one in force: kept as it is
      a.publish(ban('192.0.2.2', Number.POSITIVE_INFINITY));
      a.publish(ban('192.0.2.3', now + 3_600_000));
      a.publish({ op: 'unban', ip: '192.0.2.3', at: now + 1, origin: 'pbx-a' });
      a.publish({ op: 'unban', ip: '192.0.2.4', at: now + 5, origin: 'pbx-a' }); // older than the ban: the ban stays
      await vi.waitFor(() => {
        expect(a.status().published).toEqual({ ban: 5, unban: 2 });
        expect(replies.length).toBeGreaterThan(0);
      }, WAIT);
      expect(replies).toEqual([['ban 192.0.2.2', 'ban 192.0.2.3', 'unban 192.0.2.3']]);
      expect(JSON.parse(redis.cli('GET', 'ami2ban:ban:192.0.2.1')) as FleetBan).toMatchObject({ until: now + 7_200_000 });
      expect(redis.cli('ZRANGE', 'ami2ban:bans', '0', '-1', 'WITHSCORES').split('\n')).toEqual(['192.0.2.4', String(now + 3_600_000), '192.0.2.1', String(now + 7_200_000), '192.0.2.2', 'inf']);
      expect(redis.cli('PTTL', 'ami2ban:ban:192.0.2.2')).toBe('-1');
      expect(Number(redis.cli('PTTL', 'ami2ban:ban:192.0.2.1'))).toBeGreaterThan(7_000_000);
      expect(redis.cli('EXISTS', 'ami2ban:ban:192.0.2.3')).toBe('0');
      expect(redis.cli('XLEN', 'ami2ban:stream')).toBe('5');
    } finally {
      await a.stop();
      await b.stop();
      await redis.kill();
    }
  });
});
