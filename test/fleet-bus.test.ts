import { afterEach, describe, expect, it, vi } from 'vitest';
import type { FleetBan } from '../src/fleet/decision.js';
import { MemoryLogger } from './helpers/memory-logger.js';

afterEach(() => {
  vi.doUnmock('@redis/client');
  vi.resetModules();
});

describe('the Redis bus when its client module cannot be loaded', () => {
  it('says so as the fleet error, keeps what it was to share in its bounded outbox, retries, and stops at once', async () => {
    // A broken install (the package missing or unreadable): the import itself fails.
    vi.resetModules();
    vi.doMock('@redis/client', () => {
      throw new Error('Cannot find package @redis/client');
    });
    const { RedisDecisionBus } = await import('../src/fleet/redis-bus.js');
    const states: string[] = [];
    const bus = new RedisDecisionBus({
      url: 'redis://127.0.0.1:6379',
      name: 'ami2ban',
      hostId: 'pbx-a',
      publish: true,
      streamMaxLen: 1000,
      outboxMax: 100,
      resyncMs: 60_000,
      cursor: { load: () => null, save: () => undefined },
      ownBans: (): FleetBan[] => [],
      logger: new MemoryLogger(),
    });
    bus.on('state', (s) => states.push(s));
    bus.start();
    await vi.waitFor(() => {
      expect(bus.status().state).toBe('degraded');
    });
    // The fleet's error is the import's own (vitest words it its way).
    const importError = await import('@redis/client').then(
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
    });
    // A reconnection backoff (up to 5 s) does not hold the shutdown.
    const t0 = performance.now();
    await bus.stop();
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(bus.status().state).toBe('stopped');
    expect(states).toContain('degraded');
  });
});
