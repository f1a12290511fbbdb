// The fleet on real parts: redis-server, and ami2ban daemons each in its own network namespace
// with its own nftables and fake AMI.
import { afterEach, describe, expect, it } from 'vitest';
import type { BanView, FleetView } from '../src/control/api.js';
import { FleetHost, RedisServer } from './helpers/fleet.js';
import { assertPrivateNetns } from './helpers/kernel.js';

assertPrivateNetns();

let hosts: FleetHost[] = [];
let servers: RedisServer[] = [];

afterEach(async () => {
  await Promise.all(hosts.map((h) => h.close()));
  await Promise.all(servers.map((s) => s.kill()));
  hosts = [];
  servers = [];
});

async function redis(args: string[] = []): Promise<RedisServer> {
  const r = await RedisServer.start(args);
  servers.push(r);
  return r;
}

async function host(name: string, r: RedisServer, env: Record<string, string> = {}): Promise<FleetHost> {
  const h = new FleetHost(name, { FLEET_REDIS_URL: `redis://10.77.0.0:${String(r.port)}`, ...env });
  hosts.push(h);
  return h;
}

/** Starts hosts; each reaches Redis through its own link (the URL names its side of it). */
async function fleet(r: RedisServer, specs: readonly [string, Record<string, string>?][]): Promise<FleetHost[]> {
  const made: FleetHost[] = [];
  for (const [name, env] of specs) {
    const h = await host(name, r, env ?? {});
    made.push(h);
  }
  for (const h of made) {
    (h as unknown as { env: Record<string, string> }).env.FLEET_REDIS_URL = `redis://${h.hostAddress}:${String(r.port)}`;
    await h.start();
  }
  for (const h of made) await h.waitLog('fleet connected', (l) => l.message === 'fleet bus connected');
  return made;
}

async function until(what: string, ok: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const listOf = async (h: FleetHost): Promise<BanView[]> => (await h.api<{ bans: BanView[] }>('GET', '/v1/bans')).body.bans;

describe('a fleet of three hosts on one Redis', () => {
  it("an attack on A is in B's and C's kernels; B's ignore list holds; an unban on C is lifted everywhere", async () => {
    const r = await redis();
    const [a, b, c] = await fleet(r, [['pbx-a'], ['pbx-b', { BAN_IGNOREIP: '203.0.113.9' }], ['pbx-c']]);
    if (a === undefined || b === undefined || c === undefined) throw new Error('hosts');
    a.attack('203.0.113.7', 3);
    for (const h of [a, b, c]) await h.waitElements('203.0.113.7 banned', (e) => e.includes('203.0.113.7'));
    const onB = (await listOf(b)).find((x) => x.ip === '203.0.113.7');
    expect(onB).toMatchObject({ origin: 'pbx-a', reason: 'threshold' });
    expect((await listOf(a)).find((x) => x.ip === '203.0.113.7')).toMatchObject({ origin: null });
    await b.waitLog('the acknowledged remote ban', (l) => l.message === 'ban' && l.ip === '203.0.113.7');

    // In B's ignore list: banned on A and C, refused (and counted) on B.
    a.attack('203.0.113.9', 3);
    await c.waitElements('203.0.113.9 banned', (e) => e.includes('203.0.113.9'));
    await b.waitLog('the refusal', (l) => l.message === 'ban from another host not applied here' && l.ip === '203.0.113.9');
    expect(b.elements()).not.toContain('203.0.113.9');
    const fb = (await b.api<FleetView>('GET', '/v1/fleet')).body;
    expect(fb).toMatchObject({ enabled: true, state: 'connected', hostId: 'pbx-b', rejected: { 'ignore-list': 1 }, applied: { ban: 1 } });

    // An operator lifts it on C: lifted on A (its origin) and B.
    expect((await c.api('DELETE', '/v1/bans/203.0.113.7')).status).toBe(200);
    for (const h of [a, b, c]) await h.waitElements('203.0.113.7 lifted', (e) => !e.includes('203.0.113.7'));
    await a.waitLog('the unban', (l) => l.message === 'unban' && l.ip === '203.0.113.7' && l.reason === 'fleet');

    // A manual ban kept local is not shared.
    expect((await a.api('POST', '/v1/bans', { ip: '198.51.100.1', local: true })).status).toBe(201);
    expect((await a.api('POST', '/v1/bans', { ip: '198.51.100.2' })).status).toBe(201);
    await c.waitElements('the shared manual ban', (e) => e.includes('198.51.100.2'));
    expect(c.elements()).not.toContain('198.51.100.1');
    expect((await listOf(a)).find((x) => x.ip === '198.51.100.1')).toMatchObject({ local: true, origin: null });
    // Every host beats on connecting, then every second.
    await until('A sees every host', async () => (await a.api<FleetView>('GET', '/v1/fleet')).body.hosts.length === 3);
    const fa = (await a.api<FleetView>('GET', '/v1/fleet')).body;
    expect(fa.hosts.map((h) => h.id)).toEqual(['pbx-a', 'pbx-b', 'pbx-c']);
    expect(r.cli('HKEYS', 'ami2ban:hosts').split('\n').sort()).toEqual(['pbx-a', 'pbx-b', 'pbx-c']);
    expect(fa.published.ban).toBe(3);
    expect(fa.published.unban).toBe(0);
  });
});
