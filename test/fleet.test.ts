// The fleet on real parts: redis-server, and ami2ban daemons each in its own network namespace
// with its own nftables and fake AMI.
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { BanView, FleetView } from '../src/control/api.js';
import { ROOT } from './helpers/cli.js';
import { FleetHost, RedisServer, SERVICE_ADDRESS, SentinelGroup, addServiceAddress, makeCertificates } from '../src/demo/fleet-lab.js';
import { assertPrivateNetns } from './helpers/kernel.js';

assertPrivateNetns();
// Failovers, partitions and reconnection backoffs take seconds.
vi.setConfig({ testTimeout: 60_000, hookTimeout: 30_000 });

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

/** Starts hosts; each reaches Redis through its own link (the URL names its side of it). */
async function fleet(r: RedisServer, specs: readonly [string, Record<string, string>?][]): Promise<FleetHost[]> {
  const made: FleetHost[] = [];
  for (const [name, env] of specs) {
    const h = new FleetHost(name, { ...env });
    h.env.FLEET_REDIS_URL = `redis://${h.hostAddress}:${String(r.port)}`;
    hosts.push(h);
    made.push(h);
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

const listOf = async (h: FleetHost): Promise<BanView[]> => ((await h.api('GET', '/v1/bans')).body as { bans: BanView[] }).bans;
const fleetOf = async (h: FleetHost): Promise<FleetView> => (await h.api('GET', '/v1/fleet')).body as FleetView;

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
    const fb = (await fleetOf(b));
    expect(fb).toMatchObject({ enabled: true, state: 'connected', hostId: 'pbx-b', rejected: { 'ignore-list': 1 }, applied: { ban: 1 } });

    // IPv6: an address, and a network banned by hand on B, in every host's own sets.
    a.attack('2001:db8::7', 3);
    for (const h of [a, b, c]) await h.waitElements('2001:db8::7 banned', (e) => e.includes('2001:db8::7'), 'ipv6_addr');
    expect((await b.api('POST', '/v1/bans', { ip: '2001:db8:1::/64' })).status).toBe(201);
    for (const h of [a, c]) await h.waitElements('2001:db8:1::/64 banned', (e) => e.some((x) => x.includes('2001:db8:1::') && x.includes('64')), 'ipv6_net');
    expect((await listOf(c)).find((x) => x.ip === '2001:db8:1::/64')).toMatchObject({ origin: 'pbx-b' });

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
    await until('A sees every host', async () => (await fleetOf(a)).hosts.length === 3);
    const fa = (await fleetOf(a));
    expect(fa.hosts.map((h) => h.id)).toEqual(['pbx-a', 'pbx-b', 'pbx-c']);
    expect(r.cli('HKEYS', 'ami2ban:hosts').split('\n').sort()).toEqual(['pbx-a', 'pbx-b', 'pbx-c']);
    expect(fa.published.ban).toBe(4);
    expect(fa.published.unban).toBe(0);
  });
});

/** Addresses 198.18.x.y, i-th. */
const addr = (i: number): string => `198.18.${String((i >> 8) & 255)}.${String(i & 255)}`;

/** The ACL line the README gives for one host (only the fleet's keys, only the commands it sends), for another user. */
const ACL = (user: string, password: string): string[] => {
  const line = /^ACL SETUSER pbx1 on >CHANGE-ME .*$/m.exec(readFileSync(`${ROOT}README.md`, 'utf8'))?.[0] ?? 'the README has no ACL line';
  return line.replace('pbx1', user).replace('>CHANGE-ME', `>${password}`).split(' ');
};

describe('a host with its own Redis ACL user', () => {
  it('works with only what the README grants it, and can touch nothing outside the prefix', async () => {
    const r = await redis();
    expect(r.cli(...ACL('pbx-a', 'pw-a'))).toBe('OK');
    const h = new FleetHost('pbx-a', {});
    h.env.FLEET_REDIS_URL = `redis://pbx-a:pw-a@${h.hostAddress}:${String(r.port)}`;
    hosts.push(h);
    await h.start();
    await h.waitLog('fleet connected', (l) => l.message === 'fleet bus connected');
    h.attack('203.0.113.7', 3);
    await until('the ban shared', () => r.cli('ZRANGE', 'ami2ban:bans', '0', '-1') === '203.0.113.7');
    expect(r.cli('--user', 'pbx-a', '--pass', 'pw-a', '--no-auth-warning', 'SET', 'other', 'x')).toMatch(/NOPERM/);
    expect(r.cli('--user', 'pbx-a', '--pass', 'pw-a', '--no-auth-warning', 'FLUSHALL')).toMatch(/NOPERM/);
    // The password never reaches a log line.
    expect(JSON.stringify(h.lines)).not.toContain('pw-a');
  });
});

describe('TLS (rediss://)', () => {
  it('with FLEET_REDIS_CA_FILE a host shares its bans over TLS; without the CA it refuses the server and stays local', async () => {
    addServiceAddress();
    const tls = makeCertificates();
    const r = await RedisServer.start([], undefined, tls);
    servers.push(r);
    const url = `rediss://${SERVICE_ADDRESS}:${String(r.port)}`;
    const a = new FleetHost('pbx-a', { FLEET_REDIS_URL: url, FLEET_REDIS_CA_FILE: tls.ca });
    const b = new FleetHost('pbx-b', { FLEET_REDIS_URL: url });
    hosts.push(a, b);
    await a.start();
    await b.start();
    await a.connected();
    a.attack('203.0.113.7', 3);
    await until('the ban shared over TLS', () => r.cli('ZRANGE', 'ami2ban:bans', '0', '-1') === '203.0.113.7');
    // B does not trust the server's CA: never connected, says why, bans on its own.
    await until("B's first attempt to be refused", async () => (await fleetOf(b)).state !== 'connecting');
    const fb = await fleetOf(b);
    expect(fb.state).toBe('degraded');
    expect(fb.lastError).toMatch(/certificate/i);
    b.attack('203.0.113.8', 3);
    await b.waitElements('its own ban', (e) => e.includes('203.0.113.8'));
    expect(b.elements()).not.toContain('203.0.113.7');
  });
});

describe('partitions and restarts', () => {
  it('B cut off while A bans and unbans: on rejoin B converges exactly, from the stream and, once trimmed past it, from the snapshot', async () => {
    const r = await redis();
    const [a, b] = await fleet(r, [['pbx-a', { FLEET_STREAM_MAXLEN: '100' }], ['pbx-b']]);
    if (a === undefined || b === undefined) throw new Error('hosts');
    a.attack('203.0.113.7', 3);
    await b.waitElements('the first ban', (e) => e.includes('203.0.113.7'));

    // A short partition: what B missed is still on the stream.
    b.linkDown();
    await b.waitLog('the bus lost', (l) => l.message.startsWith('fleet bus unreachable'));
    for (let i = 0; i < 50; i++) a.attack(addr(i), 3);
    expect((await a.api('DELETE', '/v1/bans/203.0.113.7')).status).toBe(200);
    await a.waitElements('50 bans', (e) => e.length === 50);
    const status = (await b.api('GET', '/v1/status')).body as { fleet: { state: string } };
    expect(status.fleet.state).toBe('degraded');
    expect((await b.api('GET', '/readyz')).status).toBe(200);
    b.linkUp();
    await b.waitElements('the same bans as A', (e) => e.join() === a.elements().join(), 'ipv4_addr', 20_000);
    const afterShort = (await fleetOf(b));
    expect(afterShort.snapshots).toBe(1);

    // A long one: A bans 1 000 addresses, far more than the stream keeps (FLEET_STREAM_MAXLEN=100).
    b.linkDown();
    await until('B degraded', async () => (await fleetOf(b)).state === 'degraded');
    expect((await a.api('DELETE', `/v1/bans/${addr(0)}`)).status).toBe(200);
    for (let i = 1000; i < 2000; i++) a.attack(addr(i), 3);
    await a.waitElements('1 049 bans', (e) => e.length === 1049, 'ipv4_addr', 20_000);
    expect(Number(r.cli('XLEN', 'ami2ban:stream'))).toBeLessThan(300);
    b.linkUp();
    await b.waitElements('the same 1 049 bans as A', (e) => e.join() === a.elements().join(), 'ipv4_addr', 30_000);
    const fb = (await fleetOf(b));
    expect(fb.snapshots).toBe(2);
    expect(fb.state).toBe('connected');
    expect(b.elements()).not.toContain(addr(0));
  });

  it('Redis restarted empty: local bans go on meanwhile, and the fleet converges after, nothing doubled', async () => {
    const r = await redis();
    const [a, b] = await fleet(r, [['pbx-a'], ['pbx-b']]);
    if (a === undefined || b === undefined) throw new Error('hosts');
    for (let i = 0; i < 20; i++) a.attack(addr(i), 3);
    await b.waitElements('20 bans', (e) => e.length === 20);
    await r.kill();
    await a.waitLog('the bus lost', (l) => l.message.startsWith('fleet bus unreachable'));
    // Banned here while Redis is down: logged (kernel and database), and queued for the others.
    const before = a.lines.length;
    for (let i = 20; i < 30; i++) a.attack(addr(i), 3);
    await a.waitElements('30 bans', (e) => e.length === 30);
    await until('10 ban lines', () => a.lines.slice(before).filter((l) => l.message === 'ban').length === 10);
    expect((await fleetOf(a)).outbox).toBe(10);
    // A host stops cleanly while Redis is down (its reconnection backoff does not hold the stop).
    const c = new FleetHost('pbx-c', { FLEET_REDIS_URL: `redis://10.77.0.0:${String(r.port)}` });
    c.env.FLEET_REDIS_URL = `redis://${c.hostAddress}:${String(r.port)}`;
    hosts.push(c);
    await c.start();
    // Long enough for its backoff to reach the 5 s cap.
    await new Promise((res) => setTimeout(res, 6000));
    const stoppedAt = Date.now();
    expect(await c.stopDaemon()).toBe(0);
    expect(Date.now() - stoppedAt).toBeLessThan(2000);
    await r.restart();
    await b.waitLog('the snapshot of a Redis that lost its data', (l) => l.message.startsWith('fleet bus lost its data'), 20_000);
    await b.waitElements('the same 30 bans as A', (e) => e.join() === a.elements().join(), 'ipv4_addr', 20_000);
    // No ban of B's went missing meanwhile: none was lifted.
    expect(b.lines.filter((l) => l.message === 'unban')).toEqual([]);
    // The 10 queued, and the 20 re-asserted (anti-entropy) because the new Redis lacked them: each once.
    await until('30 ban keys', () => Number(r.cli('ZCARD', 'ami2ban:bans')) === 30);
    expect(Number(r.cli('XLEN', 'ami2ban:stream'))).toBe(30);
    expect((await listOf(b))).toHaveLength(30);
  });

  it('SIGKILL and a flushed ruleset on one host: its restart restores its own and the remote bans', async () => {
    const r = await redis();
    const [a, b] = await fleet(r, [['pbx-a'], ['pbx-b']]);
    if (a === undefined || b === undefined) throw new Error('hosts');
    a.attack('203.0.113.7', 3);
    b.attack('203.0.113.8', 3);
    for (const h of [a, b]) await h.waitElements('both bans', (e) => e.join() === '203.0.113.7,203.0.113.8');
    await b.stopDaemon('SIGKILL');
    b.inside('nft', 'flush', 'ruleset');
    expect(b.elements()).toEqual([]);
    await b.startDaemon();
    await b.waitElements('both bans back', (e) => e.join() === '203.0.113.7,203.0.113.8');
    const list = (await listOf(b));
    expect(list.map((x) => [x.ip, x.origin])).toEqual([
      ['203.0.113.7', 'pbx-a'],
      ['203.0.113.8', null],
    ]);
  });
});

describe('Redis Sentinel', () => {
  let group: SentinelGroup | undefined;
  afterEach(async () => {
    await group?.stop();
    group = undefined;
  });

  it('the primary killed: no local ban waits for the failover, and the fleet converges on the new primary, nothing doubled', async () => {
    group = await SentinelGroup.start();
    const g = group;
    const env = { FLEET_REDIS_SENTINELS: g.list, FLEET_REDIS_MASTER: 'mymaster' };
    const made: FleetHost[] = [];
    for (const name of ['pbx-a', 'pbx-b']) {
      const h = new FleetHost(name, env);
      hosts.push(h);
      made.push(h);
      await h.start();
    }
    const [a, b] = made;
    if (a === undefined || b === undefined) throw new Error('hosts');
    for (const h of made) await h.waitLog('fleet connected', (l) => l.message === 'fleet bus connected');
    for (let i = 0; i < 10; i++) a.attack(addr(i), 3);
    await b.waitElements('10 bans', (e) => e.length === 10);
    const before = g.primaryPort();
    await g.primary.kill();
    const linesBefore = a.lines.length;
    const attackedAt = Date.now();
    for (let i = 10; i < 20; i++) a.attack(addr(i), 3);
    // Local bans do not wait for the bus: all in A's kernel and logged well before a failover ends.
    await a.waitElements('20 bans', (e) => e.length === 20);
    await until('10 more ban lines', () => a.lines.slice(linesBefore).filter((l) => l.message === 'ban').length === 10);
    const localMs = Date.now() - attackedAt;
    await until('the sentinels to promote the replica', () => g.primaryPort() !== before, 20_000);
    expect(localMs).toBeLessThan(1000);
    await b.waitElements('the same 20 bans as A', (e) => e.join() === a.elements().join(), 'ipv4_addr', 20_000);
    for (const h of made) expect((await fleetOf(h)).state).toBe('connected');
    // Each ban once on B: applied, never applied again by the re-assertion after the failover.
    const banLines = b.lines.filter((l) => l.message === 'ban').map((l) => l.ip);
    expect(banLines.sort()).toEqual([...new Set(banLines)].sort());
    expect(banLines).toHaveLength(20);
  });
});

describe('fleet-wide threshold and bad input', () => {
  it('three hosts each see 2 failures (maxretry 3 each): FLEET_MAXRETRY=5 bans everywhere', async () => {
    const r = await redis();
    const env = { FLEET_MAXRETRY: '5' };
    const hs = await fleet(r, [['pbx-a', env], ['pbx-b', env], ['pbx-c', env]]);
    hs.forEach((h, i) => {
      h.attack('203.0.113.50', 2, i * 10);
    });
    for (const h of hs) await h.waitElements('the fleet-wide ban', (e) => e.includes('203.0.113.50'));
    const reasons = await Promise.all(hs.map(async (h) => (await listOf(h)).find((x) => x.ip === '203.0.113.50')));
    // One host decided it (reason fleet); the others have it from that host.
    const decider = reasons.filter((x) => x?.origin === null);
    expect(decider).toHaveLength(1);
    expect(decider[0]?.reason).toBe('fleet');
    expect(reasons.filter((x) => x?.origin !== null && x?.reason === 'fleet')).toHaveLength(2);

    // Under it on every host and across the fleet: nobody bans.
    hs.forEach((h, i) => {
      h.attack('203.0.113.51', 1, i * 10);
    });
    await new Promise((res) => setTimeout(res, 1000));
    for (const h of hs) expect(h.elements()).not.toContain('203.0.113.51');
  });

  it('malformed entries, a /0, a self address and a flood over the cap: refused, counted, never applied', async () => {
    const r = await redis();
    const [a, b] = await fleet(r, [['pbx-a'], ['pbx-b', { FLEET_REMOTE_BURST: '20', FLEET_REMOTE_RATE: '1' }]]);
    if (a === undefined || b === undefined) throw new Error('hosts');
    const now = Date.now();
    const add = (d: string): string => r.cli('XADD', 'ami2ban:stream', '*', 'd', d);
    const entry = (ip: string): string => JSON.stringify({ v: 1, op: 'ban', ip, until: now + 3_600_000, at: now, origin: 'rogue', reason: 'threshold' });
    add('not json');
    add('{"v":1,"op":"ban"}');
    add(JSON.stringify({ v: 1, op: 'ban', ip: '203.0.113.1', until: 'soon', at: now, origin: 'rogue', reason: 'x' }));
    add(JSON.stringify({ v: 1, op: 'ban', ip: '203.0.113.1', until: now + 1000, at: now, origin: 'bad host!', reason: 'threshold' }));
    add('x'.repeat(100_000));
    add(entry('not-an-address'));
    add(entry('0.0.0.0/0'));
    // More refused entries than the burst: they must not use up its room (each gives its token back).
    for (let i = 0; i < 25; i++) add(entry(b.hostAddress));
    r.cli('XADD', 'ami2ban:stream', '*', 'other', 'field');
    const t0 = Date.now();
    for (let i = 0; i < 100; i++) add(entry(addr(i)));
    // Each valid one applied or refused over the cap (a burst of 20, then 1 per second).
    await until('B counted them', async () => {
      const f = await fleetOf(b);
      return f.applied.ban + (f.rejected['rate-cap'] ?? 0) === 100;
    });
    const seconds = Math.ceil((Date.now() - t0) / 1000);
    const f = await fleetOf(b);
    expect(f.rejected).toMatchObject({ malformed: 6, 'invalid-address': 1, 'too-wide': 1, self: 25 });
    expect(f.applied.ban).toBeGreaterThanOrEqual(20);
    expect(f.applied.ban).toBeLessThanOrEqual(20 + seconds);
    expect(f.rejected['rate-cap']).toBe(100 - f.applied.ban);
    const elements = b.elements();
    expect(elements).not.toContain(b.hostAddress);
    expect(elements.length).toBe(f.applied.ban);
    expect(b.elements('ipv4_net')).toEqual([]);
    // Still alive and serving; A (no cap) took every valid one.
    expect((await b.api('GET', '/readyz')).status).toBe(200);
    // (B's AMI host is B's own, not A's.)
    await a.waitElements('the 100 valid bans', (e) => e.length === 101 && e.includes(b.hostAddress));
    const metrics = (await b.api('GET', '/metrics')).body;
    expect(metrics).toMatch(/ami2ban_fleet_rejected_total\{reason="rate-cap"\} (\d+)/);
  });
});
