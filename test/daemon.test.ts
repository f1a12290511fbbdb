import { EventEmitter } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeAmiServer, eventBlocks } from '../src/demo/fake-ami-server.js';
import { MemoryFirewall } from '../src/firewall/memory.js';
import type { BusStatus, DecisionBus } from '../src/fleet/bus.js';
import type { FleetBan } from '../src/fleet/decision.js';
import { buildDaemon } from '../src/service/build.js';
import { FleetLink } from '../src/service/fleet-link.js';
import { BanStore } from '../src/store/store.js';
import type { Daemon } from '../src/service/daemon.js';
import { EXPECTED_BANS, fixture } from './helpers/fixtures.js';
import { MemoryLogger } from './helpers/memory-logger.js';
import { DnsStub } from './helpers/dns-stub.js';
import { fillUp, smallTmpfs } from './helpers/filesystems.js';
import { config } from './helpers/policy.js';

describe('daemon: AMI → engine → firewall', () => {
  let server: FakeAmiServer | undefined;
  let daemon: Daemon | undefined;

  afterEach(async () => {
    await daemon?.stop();
    await server?.stop();
  });

  async function runCapture(name: string, env: Record<string, string> = {}): Promise<{ firewall: MemoryFirewall; log: MemoryLogger }> {
    server = new FakeAmiServer({ username: 'ami2ban', secret: 'ami2ban-secret' });
    const port = await server.start();
    const log = new MemoryLogger([], false);
    const firewall = new MemoryFirewall();
    // The tests' namespace carries fd00::2 and fd00::3 on lo (so that they can send): not self here.
    const cfg = config({ AMI_PORT: String(port), BAN_IGNOREIP: '', BAN_IGNORESELF: 'false', STATE_DIR: mkdtempSync(join(tmpdir(), 'ami2ban-')), ...env });
    daemon = buildDaemon(cfg, log, 'test', { firewall }).daemon;
    const subscribed = server.nextSubscription();
    await daemon.start();
    await subscribed;
    const blocks = eventBlocks(fixture(name));
    server.broadcast(Buffer.concat(blocks));
    const d = daemon;
    await expectEventually(() => d.counters.events + 0 >= blocks.filter((b) => b.includes('Privilege: security')).length);
    await d.idle();
    return { firewall, log };
  }

  it('bans exactly the attackers of the captured run, one log line each', async () => {
    const { firewall, log } = await runCapture('ami-ami2ban-events-security.raw');
    expect([...firewall.elements.keys()].sort()).toEqual([...EXPECTED_BANS].sort());
    expect([...firewall.elements.values()].every((e) => e.seconds === 3600)).toBe(true);
    const banLines = log.lines.filter((l) => l.message === 'ban');
    expect(banLines.length).toBe(8);
    expect(banLines.find((l) => l.meta.ip === 'fd00::2')?.meta).toMatchObject({
      family: 'ipv6',
      reason: 'threshold',
      failures: 3,
      events: 'InvalidAccountID×2,ChallengeResponseFailed×1',
      duration: '1h',
      banSeconds: 3600,
    });
  });

  it('with the default ignore list, loopback attackers are left alone', async () => {
    const { firewall } = await runCapture('ami-ami2ban-events-security.raw', { BAN_IGNOREIP: '127.0.0.1/8,::1' });
    expect([...firewall.elements.keys()].sort()).toEqual(['fd00::2', 'fd00::3']);
  });

  it('the slow scanner: banned by its unanswered challenges once their timeout has passed', async () => {
    const { firewall, log } = await runCapture('attack-tools/v2-slow-scanner-register-unknown.raw', { BAN_CHALLENGE_TIMEOUT: '1' });
    await expectEventually(() => firewall.elements.has('127.0.0.36'), 4000);
    await daemon?.idle();
    expect(log.lines.find((l) => l.message === 'ban')?.meta).toMatchObject({ ip: '127.0.0.36', reason: 'unanswered', failures: 10, events: 'UnansweredChallenge×10' });
  });

  it('non-security noise from a read=all user changes nothing', async () => {
    const { firewall } = await runCapture('ami-amiall-events-on.raw');
    expect([...firewall.elements.keys()].sort()).toEqual([...EXPECTED_BANS].sort());
  });
});

async function expectEventually(check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('daemon start: store and firewall reconciled', () => {
  it('re-adds what the kernel lost or holds for less time than recorded, adopts what only the kernel has', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ami2ban-'));
    const now = Date.now();
    const store = await BanStore.open(dir, { historyKeepMs: 30 * 86400_000 });
    const row = (ip: string, seconds: number): Parameters<BanStore['recordBan']>[0] => ({
      ip,
      family: 'ipv4',
      at: now - 1000,
      banSeconds: seconds,
      until: now - 1000 + seconds * 1000,
      reason: 'threshold',
      failures: 3,
      events: {},
      previousBans: 0,
    });
    store.recordBan(row('192.0.2.1', 3600)); // lost from the kernel
    store.recordBan(row('192.0.2.2', 3600)); // in the kernel for only a minute more
    store.recordBan(row('192.0.2.3', 3600)); // in the kernel as recorded
    store.recordBan({ ...row('192.0.2.5', 60), at: now - 7200_000, until: now - 7140_000 }); // ended while down
    await store.close();
    const firewall = new MemoryFirewall();
    firewall.existing = [
      { ip: '192.0.2.2', family: 'ipv4', expiresAt: now + 60_000 },
      { ip: '192.0.2.3', family: 'ipv4', expiresAt: now + 3599_000 },
      { ip: '192.0.2.4', family: 'ipv4', expiresAt: now + 600_000 }, // unknown to the store
    ];
    const server = new FakeAmiServer({ username: 'ami2ban', secret: 'ami2ban-secret' });
    const port = await server.start();
    const log = new MemoryLogger([], false);
    const { daemon } = buildDaemon(config({ AMI_PORT: String(port), STATE_DIR: dir }), log, 'test', { firewall });
    await daemon.start();
    try {
      const restored = firewall.operations.map((o) => o.split(' ').slice(0, 2).join(' ')).sort();
      expect(restored).toEqual(['ban 192.0.2.1', 'ban 192.0.2.2']);
      for (const ip of ['192.0.2.1', '192.0.2.2']) expect(firewall.elements.get(ip)?.seconds).toBeGreaterThan(3590);
      expect(log.lines.find((l) => l.message === 'ami2ban started')?.meta).toMatchObject({ activeBans: 4, restoredToFirewall: 2, adoptedFromFirewall: 1 });
      expect(daemon.bans().map((b) => `${b.ip} ${b.reason}`).sort()).toEqual(['192.0.2.1 threshold', '192.0.2.2 threshold', '192.0.2.3 threshold', '192.0.2.4 adopted']);
      // The ban that ended while it was down is closed in the database, after the start.
      await expectEventually(() => log.lines.some((l) => l.message === 'bans that ended while ami2ban was down closed in the database' && l.meta.bans === 1));
    } finally {
      await daemon.stop();
      await server.stop();
    }
    const after = await BanStore.open(dir, { historyKeepMs: 30 * 86400_000 });
    expect((await after.historyOf('192.0.2.5')).map((h) => h.endReason)).toEqual(['expired']);
    await after.close();
  });
});

describe('daemon start: a ban database that cannot be written', () => {
  it('the start does not wait for it: closing the bans that ended meanwhile fails (a full disk), is logged, and is done once it can be', async () => {
    const m = smallTmpfs(1024);
    const dir = m.dir;
    const now = Date.now();
    const store = await BanStore.open(dir, { historyKeepMs: 30 * 86400_000 });
    store.recordBan({ ip: '192.0.2.5', family: 'ipv4', at: now - 7200_000, banSeconds: 60, until: now - 7140_000, reason: 'threshold', failures: 3, events: {}, previousBans: 0 });
    await store.close();
    // Reads go on; every write fails.
    const free = fillUp(dir);
    const server = new FakeAmiServer({ username: 'ami2ban', secret: 'ami2ban-secret' });
    const port = await server.start();
    const log = new MemoryLogger([], false);
    const { daemon } = buildDaemon(config({ AMI_PORT: String(port), STATE_DIR: dir }), log, 'test', { firewall: new MemoryFirewall() });
    const closed = (): boolean => log.lines.some((l) => l.message === 'bans that ended while ami2ban was down closed in the database' && l.meta.bans === 1);
    try {
      await daemon.start();
      expect(log.lines.some((l) => l.message === 'ami2ban started')).toBe(true);
      await expectEventually(() => log.lines.some((l) => l.message === 'ban database write failed' && /database or disk is full/.test(String(l.meta.error))));
      expect(closed()).toBe(false);
      free();
      await expectEventually(closed, 10_000);
    } finally {
      await daemon.stop();
      await server.stop();
      m.cleanup();
    }
  });
});

describe('daemon start without its database (STATE_DIR did not answer)', () => {
  it('bans go to the kernel at once, acknowledged once the database opens; then the stored bans are reconciled with what was done meanwhile', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ami2ban-'));
    const now = Date.now();
    const before = await BanStore.open(dir, { historyKeepMs: 30 * 86400_000 });
    const row = (ip: string, reason = 'threshold'): Parameters<BanStore['recordBan']>[0] => ({ ip, family: 'ipv4', at: now - 1000, banSeconds: 3600, until: now + 3599_000, reason, failures: 3, events: {}, previousBans: 0 });
    before.recordBan(row('192.0.2.1')); // lost from the kernel: restored once the database opens
    before.recordBan(row('192.0.2.2', 'manual')); // in the kernel: taken as it is, then known as manual
    before.recordBan(row('192.0.2.3')); // in the kernel, now ignored: lifted at once, closed once it opens
    before.recordBan(row('192.0.2.6')); // in the kernel, unbanned meanwhile: stays unbanned
    // Banned before (ended): its next ban is twice as long once the history is read.
    before.recordBan({ ...row('198.51.100.8'), at: now - 86400_000, until: now - 86400_000 + 3600_000 });
    await before.close();
    const firewall = new MemoryFirewall();
    const existing = (ip: string): { ip: string; family: 'ipv4'; expiresAt: number } => ({ ip, family: 'ipv4', expiresAt: now + 3599_000 });
    firewall.existing = ['192.0.2.2', '192.0.2.3', '192.0.2.4', '192.0.2.6'].map(existing);
    const server = new FakeAmiServer({ username: 'ami2ban', secret: 'ami2ban-secret' });
    const port = await server.start();
    const log = new MemoryLogger([], false);
    const { daemon } = buildDaemon(config({ AMI_PORT: String(port), STATE_DIR: dir, BAN_IGNOREIP: '192.0.2.3', BAN_INCREMENT: 'true' }), log, 'test', { firewall });
    const attack = (ip: string, session: string): void => {
      server.broadcast([0, 1, 2].map((n) => `Event: InvalidPassword\r\nPrivilege: security,all\r\nSeverity: Error\r\nService: AMI\r\nSessionID: 0x${session}${n}\r\nRemoteAddress: IPV4/TCP/${ip}/5038\r\n\r\n`).join(''));
    };
    const reasons = (): string[] => daemon.bans().map((b) => `${b.ip} ${b.reason}`).sort();
    const acked = (ip: string): boolean => log.lines.some((l) => l.message === 'ban' && l.meta.ip === ip);
    try {
      const subscribed = server.nextSubscription();
      await daemon.start([], { withoutStore: true });
      await subscribed;
      expect(log.lines.find((l) => l.message === 'ami2ban started')?.meta).toMatchObject({ activeBans: 3, adoptedFromFirewall: 3, liftedAsExcluded: 1 });
      expect(firewall.operations).toEqual(['unban 192.0.2.3']);
      expect(reasons()).toEqual(['192.0.2.2 adopted', '192.0.2.4 adopted', '192.0.2.6 adopted']);
      expect(daemon.status().store.healthy).toBe(false);
      expect(daemon.status().store.lastError).toMatch(/is not open yet: STATE_DIR does not answer/);
      const unexplained = await daemon.explain('192.0.2.2');
      expect(unexplained.kind === 'failed' ? unexplained.message : '').toMatch(/not open yet/);
      attack('198.51.100.7', 'a');
      await expectEventually(() => firewall.elements.has('198.51.100.7'));
      // In the kernel, not durable: not acknowledged. An unban is done in the kernel, not answered as done.
      expect(await daemon.unban('192.0.2.6')).toMatchObject({ kind: 'failed', status: 503 });
      expect(firewall.elements.has('192.0.2.6')).toBe(false);
      // So is a manual ban: in the kernel at once, answered as not written yet (503, not 201).
      const manual = await daemon.ban('203.0.113.50', '1h', false);
      expect(manual).toMatchObject({ kind: 'failed', status: 503 });
      expect(manual.kind === 'failed' ? manual.message : '').toMatch(/^203\.0\.113\.50 is blocked in the kernel, but the ban database failed \(retrying\): not written within 2 s \(the ban database .* is not open yet/);
      expect(firewall.elements.has('203.0.113.50')).toBe(true);
      expect(acked('198.51.100.7') || acked('203.0.113.50')).toBe(false);

      await daemon.openStore();
      await expectEventually(() => acked('198.51.100.7') && acked('203.0.113.50'));
      await expectEventually(() => firewall.elements.has('192.0.2.1'));
      expect(log.lines.find((l) => l.message === 'the ban database answers: its bans reconciled with the kernel')?.meta).toMatchObject({
        stored: 3,
        restoredToFirewall: 1,
        adoptedFromFirewall: 1,
        liftedAsExcluded: 1,
      });
      expect(reasons()).toEqual(['192.0.2.1 threshold', '192.0.2.2 manual', '192.0.2.4 adopted', '198.51.100.7 threshold', '203.0.113.50 manual']);
      expect([...firewall.elements.keys()].sort()).toEqual(['192.0.2.1', '198.51.100.7', '203.0.113.50']);
      expect(daemon.status().store).toMatchObject({ healthy: true, lastError: null });
      expect(await daemon.explain('192.0.2.2')).toMatchObject({ kind: 'explained', history: [{ rule: 'manual', ended: null }] });
      attack('198.51.100.8', 'b');
      await expectEventually(() => firewall.elements.has('198.51.100.8'));
      expect(firewall.elements.get('198.51.100.8')?.seconds).toBe(7200);
      expect(firewall.elements.get('198.51.100.7')?.seconds).toBe(3600);
    } finally {
      await daemon.stop();
      await server.stop();
    }
    const after = await BanStore.open(dir, { historyKeepMs: 30 * 86400_000 });
    const ends = async (ip: string): Promise<(string | null)[]> => (await after.historyOf(ip)).map((h) => h.endReason);
    expect(await ends('192.0.2.3')).toEqual(['ignored']);
    expect(await ends('192.0.2.6')).toEqual(['manual']);
    expect((await after.activeBans(Date.now())).map((b) => `${b.ip} ${b.reason}`).sort()).toEqual(['192.0.2.1 threshold', '192.0.2.2 manual', '192.0.2.4 adopted', '198.51.100.7 threshold', '198.51.100.8 threshold', '203.0.113.50 manual']);
    await after.close();
  });
});

describe('daemon start without its database, with a fleet', () => {
  it('the fleet joins once the database opens (its stream position is kept there)', async () => {
    const server = new FakeAmiServer({ username: 'ami2ban', secret: 'ami2ban-secret' });
    const port = await server.start();
    const log = new MemoryLogger([], false);
    // Nothing listens on port 1: the bus, once started, says it is unreachable.
    const cfg = config({ AMI_PORT: String(port), STATE_DIR: mkdtempSync(join(tmpdir(), 'ami2ban-')), FLEET_REDIS_URL: 'redis://127.0.0.1:1', FLEET_HOST_ID: 'pbx-1' });
    const { daemon } = buildDaemon(cfg, log, 'test', { firewall: new MemoryFirewall() });
    try {
      await daemon.start([], { withoutStore: true });
      await new Promise((r) => setTimeout(r, 300));
      expect(log.lines.some((l) => l.message.startsWith('fleet bus unreachable'))).toBe(false);
      await daemon.openStore();
      await expectEventually(() => log.lines.some((l) => l.message.startsWith('fleet bus unreachable')));
    } finally {
      await daemon.stop();
      await server.stop();
    }
  });
});

describe('daemon: what the firewall is asked to do', () => {
  it('a new ban is added; a ban of an address banned now, or a moment ago, replaces its element', async () => {
    const server = new FakeAmiServer({ username: 'ami2ban', secret: 'ami2ban-secret' });
    const port = await server.start();
    const firewall = new MemoryFirewall();
    const { daemon } = buildDaemon(config({ AMI_PORT: String(port), STATE_DIR: mkdtempSync(join(tmpdir(), 'ami2ban-')) }), new MemoryLogger([], false), 'test', { firewall });
    await daemon.start();
    try {
      expect(await daemon.ban('192.0.2.50', '1h', false)).toMatchObject({ kind: 'banned' });
      expect(await daemon.ban('192.0.2.50', '2h', false)).toMatchObject({ kind: 'banned' });
      expect(await daemon.unban('192.0.2.50')).toEqual({ kind: 'unbanned' });
      expect(await daemon.ban('192.0.2.50', '1h', false)).toMatchObject({ kind: 'banned' });
      expect(firewall.operations).toEqual(['ban 192.0.2.50 3600', 'ban 192.0.2.50 7200 replace', 'unban 192.0.2.50', 'ban 192.0.2.50 3600 replace']);
    } finally {
      await daemon.stop();
      await server.stop();
    }
  });
});

describe('daemon: trunks by name in the ignore list (a DNS server on loopback)', () => {
  it('resolves A and AAAA at start and on refresh, follows a change, keeps the last answer when DNS fails', async () => {
    const dns = new DnsStub();
    const dnsPort = await dns.start();
    dns.answers.set('trunk.example', { a: ['198.51.100.10'], aaaa: ['2001:db8::10'] });
    const server = new FakeAmiServer({ username: 'ami2ban', secret: 'ami2ban-secret' });
    const port = await server.start();
    const firewall = new MemoryFirewall();
    const log = new MemoryLogger([], false);
    const cfg = config({
      AMI_PORT: String(port),
      BAN_IGNOREIP: '127.0.0.1, trunk.example',
      BAN_DNS_SERVERS: `127.0.0.1:${dnsPort}`,
      BAN_DNS_REFRESH: '1',
      STATE_DIR: mkdtempSync(join(tmpdir(), 'ami2ban-')),
    });
    const { daemon } = buildDaemon(cfg, log, 'test', { firewall });
    const subscribed = server.nextSubscription();
    await daemon.start();
    await subscribed;
    let sid = 0;
    const attack = async (ip: string): Promise<void> => {
      const family = ip.includes(':') ? 'IPV6' : 'IPV4';
      const before = daemon.counters.events;
      server.broadcast([0, 1, 2].map(() => `Event: InvalidPassword\r\nPrivilege: security,all\r\nSeverity: Error\r\nService: AMI\r\nSessionID: 0x${++sid}\r\nRemoteAddress: ${family}/TCP/${ip}/5038\r\n\r\n`).join(''));
      await expectEventually(() => daemon.counters.events >= before + 3);
      await daemon.idle();
    };
    try {
      expect(log.lines.find((l) => l.message === 'ignore-list host resolved')?.meta).toMatchObject({ host: 'trunk.example', addresses: '198.51.100.10,2001:db8::10' });
      await attack('198.51.100.10');
      await attack('2001:db8::10');
      await attack('198.51.100.11');
      expect([...firewall.elements.keys()]).toEqual(['198.51.100.11']);

      // The provider moves the trunk: the new address is ignored, the old one no longer.
      dns.answers.set('trunk.example', { a: ['198.51.100.12'] });
      await expectEventually(() => log.lines.some((l) => l.message === 'ignore-list host resolved' && l.meta.added === '198.51.100.12'), 4000);
      await attack('198.51.100.12');
      await attack('198.51.100.10');
      expect([...firewall.elements.keys()].sort()).toEqual(['198.51.100.10', '198.51.100.11']);

      // DNS fails: the last good answer stays.
      dns.answers.set('trunk.example', 'servfail');
      await expectEventually(() => log.lines.some((l) => l.message === 'could not resolve an ignore-list host; its last addresses stay ignored'), 8000);
      expect(log.lines.find((l) => l.message === 'could not resolve an ignore-list host; its last addresses stay ignored')?.meta).toMatchObject({ host: 'trunk.example', kept: '198.51.100.12' });
      await attack('198.51.100.12');
      expect(firewall.elements.has('198.51.100.12')).toBe(false);
    } finally {
      await daemon.stop();
      await server.stop();
      dns.stop();
    }
  });
});

describe("daemon: other hosts' bans (the fleet's path)", () => {
  it('refused by this host\'s rules, kept when longer here, and acknowledged only once in the kernel: a refusing kernel is retried', async () => {
    const server = new FakeAmiServer({ username: 'ami2ban', secret: 'ami2ban-secret' });
    const port = await server.start();
    const firewall = new MemoryFirewall();
    const log = new MemoryLogger([], false);
    const cfg = config({ AMI_PORT: String(port), BAN_IGNOREIP: '198.51.100.0/24', BAN_IGNORESELF: 'false', STATE_DIR: mkdtempSync(join(tmpdir(), 'ami2ban-')) });
    const { daemon } = buildDaemon(cfg, log, 'test', { firewall });
    try {
      await daemon.start();
      const now = Date.now();
      const ban = (ip: string, until = now + 3_600_000): { ip: string; until: number; at: number; origin: string; reason: string } => ({ ip, until, at: now, origin: 'pbx-a', reason: 'threshold' });
      expect((await daemon.ban('203.0.113.8', '2h', false)).kind).toBe('banned');
      const r = daemon.applyRemoteBans([ban('203.0.113.7'), ban('198.51.100.9'), ban('0.0.0.0/0'), ban('10.0.0.0/8'), ban('203.0.113.8'), ban('203.0.113.9', now - 1), ban('203.0.113.10', Number.POSITIVE_INFINITY)]);
      expect(r.outcomes).toEqual(['applied', 'ignore-list', 'too-wide', 'too-wide', 'unchanged', 'expired', 'applied']);
      expect(await r.acknowledged).toEqual([true, false, false, false, false, false, true]);
      await daemon.idle();
      expect([...firewall.elements.keys()].sort()).toEqual(['203.0.113.10', '203.0.113.7', '203.0.113.8']);
      expect(log.lines.filter((l) => l.message === 'ban' && l.meta.origin === 'pbx-a').map((l) => l.meta.ip)).toEqual(['203.0.113.7', '203.0.113.10']);
      expect(daemon.bans().find((b) => b.ip === '203.0.113.8')).toMatchObject({ origin: null });

      // The kernel refuses: not acknowledged, counted, retried until it takes it.
      firewall.failWith = new Error('netlink: Operation not permitted');
      const refused = daemon.applyRemoteBans([ban('203.0.113.11')]);
      expect(await refused.acknowledged).toEqual([false]);
      expect(log.lines.some((l) => l.message === 'ban' && l.meta.ip === '203.0.113.11')).toBe(false);
      expect(daemon.status().firewall).toMatchObject({ unenforced: 1, lastError: 'netlink: Operation not permitted' });
      firewall.failWith = undefined;
      await expectEventually(() => firewall.elements.has('203.0.113.11'));
      await expectEventually(() => log.lines.some((l) => l.message === 'ban' && l.meta.ip === '203.0.113.11'));
      expect(daemon.status().firewall.unenforced).toBe(0);

      // One refused among several: only that one waits (its answer comes back in its place).
      firewall.refuse = (ip) => (ip === '203.0.113.13' ? new Error('refused: 203.0.113.13') : undefined);
      const mixed = daemon.applyRemoteBans([ban('203.0.113.12'), ban('203.0.113.13'), ban('203.0.113.14')]);
      expect(await mixed.acknowledged).toEqual([true, false, true]);
      expect(daemon.status().firewall).toMatchObject({ unenforced: 1, lastError: 'refused: 203.0.113.13' });
      firewall.refuse = undefined;
      await expectEventually(() => firewall.elements.has('203.0.113.13'));

      // A network, then a wider one holding it, in one slice: the first goes to the kernel before
      // the second lifts it (queued in the slice's order), so it does not stay there.
      const net = daemon.applyRemoteBans([ban('192.0.2.128/25'), ban('192.0.2.0/24')]);
      expect(net.outcomes).toEqual(['applied', 'applied']);
      // The /25 is not acknowledged: the /24 replaced it before it was recorded.
      expect(await net.acknowledged).toEqual([false, true]);
      await daemon.idle();
      expect(firewall.elements.has('192.0.2.0/24')).toBe(true);
      expect(firewall.elements.has('192.0.2.128/25')).toBe(false);
    } finally {
      await daemon.stop();
      await server.stop();
    }
  });
});

/** A bus that emits what the test tells it to. */
class ScriptedBus extends EventEmitter implements DecisionBus {
  prepare(): void {}
  start(): void {}
  stop(): Promise<void> {
    return Promise.resolve();
  }
  publish(): void {}
  countFailures(): void {}
  status(): BusStatus {
    return { state: 'connected', server: 'test', hostId: 'pbx-b', lastError: null, connectedSince: 0, outbox: 0, outboxDropped: 0, lagMs: 0, cursor: null, published: { ban: 0, unban: 0 }, snapshots: 0, reconnects: 0, hosts: [] };
  }
}

describe("daemon: the fleet's snapshot, applied part by part as it is read", () => {
  it('applies each part as it comes, lifts what the last part leaves out, and starts over at a first part (a snapshot cut short)', async () => {
    const server = new FakeAmiServer({ username: 'ami2ban', secret: 'ami2ban-secret' });
    const port = await server.start();
    const firewall = new MemoryFirewall();
    const log = new MemoryLogger([], false);
    const cfg = config({ AMI_PORT: String(port), BAN_IGNOREIP: '', BAN_IGNORESELF: 'false', STATE_DIR: mkdtempSync(join(tmpdir(), 'ami2ban-')) });
    const { daemon, metrics } = buildDaemon(cfg, log, 'test', { firewall });
    const bus = new ScriptedBus();
    const link = new FleetLink({ bus, hostId: 'pbx-b', apply: true, publish: false, rate: 1000, burst: 1000, metrics, logger: log });
    try {
      await daemon.start();
      link.start(daemon);
      const until = Date.now() + 3_600_000;
      const ban = (ip: string): FleetBan => ({ op: 'ban', ip, until, at: Date.now(), origin: 'pbx-a', reason: 'threshold' });
      const inKernel = (): string[] => [...firewall.elements.keys()].sort();
      const part = (ips: string[], first: boolean, last: boolean): void => {
        bus.emit('snapshot', ips.map(ban), true, first, last);
      };

      part(['192.0.2.1', '192.0.2.2'], true, true);
      await expectEventually(() => inKernel().join() === '192.0.2.1,192.0.2.2');

      // Three parts: the first two are applied before the last comes; nothing is lifted until then.
      part(['192.0.2.2'], true, false);
      part(['192.0.2.3'], false, false);
      await expectEventually(() => inKernel().includes('192.0.2.3'));
      await daemon.idle();
      expect(inKernel()).toEqual(['192.0.2.1', '192.0.2.2', '192.0.2.3']);
      part([], false, true);
      await expectEventually(() => inKernel().join() === '192.0.2.2,192.0.2.3');
      expect(log.lines.filter((l) => l.message === 'fleet snapshot applied').map((l) => l.meta)).toEqual([
        { bansInFleet: 2, remoteLiftedHere: 0 },
        { bansInFleet: 2, remoteLiftedHere: 1 },
      ]);

      // A snapshot cut short (its connection lost): the next one starts over, and only it counts.
      part(['192.0.2.4'], true, false);
      await expectEventually(() => inKernel().includes('192.0.2.4'));
      const acknowledged = (ip: string): boolean => log.lines.some((l) => l.message === 'ban' && l.meta.ip === ip);
      await daemon.idle();
      expect(acknowledged('192.0.2.4')).toBe(false); // recorded after the last part, which does not come
      // The stream goes on without a new snapshot: the cut-short part is recorded first.
      bus.emit('decisions', [ban('192.0.2.5')]);
      await expectEventually(() => acknowledged('192.0.2.4') && acknowledged('192.0.2.5'));
      // Stream decisions go to the kernel as the bus hands them over, before the loop goes on.
      bus.emit('decisions', [ban('192.0.2.6')]);
      expect(inKernel()).toContain('192.0.2.6');
      part(['192.0.2.3'], true, true);
      await expectEventually(() => inKernel().join() === '192.0.2.3');
    } finally {
      await daemon.stop();
      await server.stop();
    }
  });
});
