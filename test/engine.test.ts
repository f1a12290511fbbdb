import { describe, expect, it } from 'vitest';
import { nextBanSeconds } from '../src/engine/ban-time.js';
import { FailureAccounts } from '../src/engine/details.js';
import { Engine, type EngineEvent, type Outcome } from '../src/engine/engine.js';
import { policy } from './helpers/policy.js';

const S = 1000;
let session = 0;

function ev(ip: string | null, over: Partial<EngineEvent> = {}): EngineEvent {
  return { name: 'InvalidAccountID', severity: 'Error', service: 'PJSIP', sessionId: `call-${++session}`, ip, aclName: null, account: '', transport: 'UDP', ...over };
}

function engine(env: Record<string, string> = {}, random = () => 0.5): Engine {
  return new Engine(policy({ BAN_IGNOREIP: '', ...env }), { random });
}

function feed(e: Engine, ip: string, times: readonly number[], over: Partial<EngineEvent> = {}): Outcome[] {
  return times.map((t) => e.observe(ev(ip, over), t));
}

describe('threshold and sliding window', () => {
  it('bans on the maxretry-th failure within findtime and reports why', () => {
    const e = engine();
    const out = feed(e, '198.51.100.7', [0, 1 * S, 2 * S]);
    expect(out.slice(0, 2)).toEqual([
      { kind: 'counted', ip: '198.51.100.7', failures: 1 },
      { kind: 'counted', ip: '198.51.100.7', failures: 2 },
    ]);
    expect(out[2]).toMatchObject({
      kind: 'banned',
      decision: { type: 'ban', ip: '198.51.100.7', family: 'ipv4', at: 2 * S, banSeconds: 3600, until: 2 * S + 3600 * S, reason: 'threshold', failures: 3, events: { InvalidAccountID: 3 }, previousBans: 0 },
    });
  });

  it("fail2ban's window edge: a failure exactly findtime after the first still counts", () => {
    const e = engine();
    feed(e, '198.51.100.7', [0, 300 * S]);
    expect(e.observe(ev('198.51.100.7'), 600 * S).kind).toBe('banned');
    const e2 = engine();
    feed(e2, '198.51.100.7', [0, 300 * S]);
    expect(e2.observe(ev('198.51.100.7'), 600 * S + 1)).toEqual({ kind: 'counted', ip: '198.51.100.7', failures: 2 });
  });

  it('slides: old failures leave the window one by one', () => {
    const e = engine();
    const out = feed(e, '198.51.100.7', [0, 500 * S, 700 * S, 1000 * S]);
    // at 700 s the failure at 0 is gone: 2 in window; at 1000 s: 500, 700, 1000 → ban
    expect(out.map((o) => o.kind)).toEqual(['counted', 'counted', 'counted', 'banned']);
  });

  it('clears pending failures on ban and does not re-ban a banned address', () => {
    const e = engine();
    feed(e, '198.51.100.7', [0, 1, 2]);
    expect(e.observe(ev('198.51.100.7'), 3)).toEqual({ kind: 'ignored', reason: 'already-banned' });
    expect(e.stats()).toMatchObject({ tracked: 0, activeBans: 1 });
    // After the ban ends, counting starts from zero.
    expect(e.expire(3600 * S + 2).map((d) => [d.type, d.ip, d.reason])).toEqual([['unban', '198.51.100.7', 'expired']]);
    expect(e.observe(ev('198.51.100.7'), 3600 * S + 3)).toEqual({ kind: 'counted', ip: '198.51.100.7', failures: 1 });
  });

  it('counts addresses separately', () => {
    const e = engine();
    expect(feed(e, '198.51.100.7', [0, 1]).map((o) => o.kind)).toEqual(['counted', 'counted']);
    expect(e.observe(ev('198.51.100.8'), 2)).toEqual({ kind: 'counted', ip: '198.51.100.8', failures: 1 });
  });
});

describe('which events count', () => {
  it('only configured events with Severity Error', () => {
    const e = engine({ BAN_EVENTS: 'InvalidAccountID' });
    expect(e.observe(ev('192.0.2.1', { name: 'ChallengeResponseFailed' }), 0)).toEqual({ kind: 'ignored', reason: 'not-counted-event' });
    expect(e.observe(ev('192.0.2.1', { name: 'ChallengeSent', severity: 'Informational' }), 0)).toEqual({ kind: 'ignored', reason: 'informational' });
    expect(e.observe(ev('192.0.2.1', { severity: 'Informational' }), 0)).toEqual({ kind: 'ignored', reason: 'informational' });
    expect(e.observe(ev('192.0.2.1'), 0).kind).toBe('counted');
  });

  it('FailedACL from the registrar (after a successful authentication) does not count', () => {
    const e = engine();
    for (const acl of ['registrar_attempt_without_configured_aors', 'registrar_attempt_exceeds_maximum_configured_contacts']) {
      expect(e.observe(ev('192.0.2.1', { name: 'FailedACL', aclName: acl }), 0)).toEqual({ kind: 'ignored', reason: 'registrar' });
    }
    expect(e.observe(ev('192.0.2.1', { name: 'FailedACL', aclName: 'not_match_endpoint_acl' }), 0).kind).toBe('counted');
    expect(e.observe(ev('192.0.2.1', { name: 'FailedACL', aclName: null, service: 'AMI' }), 0).kind).toBe('counted');
  });

  it('events without an address, or with an invalid one, are ignored', () => {
    const e = engine();
    expect(e.observe(ev(null), 0)).toEqual({ kind: 'ignored', reason: 'no-address' });
    expect(e.observe(ev('not-an-ip'), 0)).toEqual({ kind: 'ignored', reason: 'invalid-address' });
  });
});

describe('one failed request, one failure', () => {
  const ip = '192.0.2.1';
  const sip = (name: string, sessionId: string): EngineEvent => ({
    ...ev(ip, { name, sessionId }),
    severity: name === 'ChallengeSent' || name === 'SuccessfulAuth' ? 'Informational' : 'Error',
  });
  const run = (e: Engine, names: readonly string[], sessionId: string, t = 0): string[] =>
    names.map((n) => {
      const o = e.observe(sip(n, sessionId), t);
      return o.kind === 'ignored' ? o.reason : o.kind;
    });

  // The per-dialog counts of the fixtures README.
  it.each([
    [['InvalidAccountID', 'ChallengeSent'], 1],
    [['InvalidAccountID', 'ChallengeSent', 'InvalidAccountID', 'ChallengeResponseFailed'], 2],
    [['ChallengeSent', 'ChallengeResponseFailed'], 1],
    [['FailedACL', 'ChallengeSent', 'FailedACL', 'ChallengeResponseFailed'], 2],
    [['ChallengeSent', 'SuccessfulAuth'], 0],
  ])('%j counts %i', (names, expected) => {
    const e = engine({ BAN_MAXRETRY: '10' });
    run(e, names, 'call-1');
    const next = e.observe(ev(ip, { sessionId: 'other' }), 1);
    expect(next).toEqual({ kind: 'counted', ip, failures: expected + 1 });
  });

  it('every password guess on one Call-ID counts: the 3rd ChallengeResponseFailed bans (svcrack)', () => {
    const e = engine();
    expect(run(e, ['ChallengeSent', 'ChallengeResponseFailed', 'ChallengeResponseFailed', 'ChallengeResponseFailed'], '1991874748')).toEqual([
      'informational',
      'counted',
      'counted',
      'banned',
    ]);
  });

  it('no time window merges two requests: guesses in the same millisecond count one each', () => {
    const e = engine({ BAN_MAXRETRY: '100' });
    for (let i = 0; i < 50; i++) e.observe(sip('ChallengeResponseFailed', 'same'), 0);
    expect(e.observe(sip('ChallengeResponseFailed', 'same'), 0)).toEqual({ kind: 'counted', ip, failures: 51 });
  });

  it('a second counted event of one request (no outcome between) is not counted again', () => {
    const e = engine();
    expect(run(e, ['FailedACL', 'FailedACL', 'InvalidAccountID'], 'x')).toEqual(['counted', 'same-request', 'same-request']);
  });

  it('BAN_COLLAPSE_WINDOW bounds how long an unanswered request is remembered', () => {
    const e = engine({ BAN_COLLAPSE_WINDOW: '2s' });
    expect(e.observe(sip('InvalidAccountID', 'x'), 0).kind).toBe('counted');
    expect(e.observe(sip('InvalidAccountID', 'x'), 1999)).toEqual({ kind: 'ignored', reason: 'same-request' });
    expect(e.observe(sip('InvalidAccountID', 'x'), 2000)).toEqual({ kind: 'counted', ip, failures: 2 });
  });

  it('an outcome from another address or Call-ID does not end the request', () => {
    const e = engine();
    e.observe(sip('InvalidAccountID', 'x'), 0);
    e.observe({ ...sip('ChallengeSent', 'x'), ip: '192.0.2.2' }, 0);
    e.observe(sip('ChallengeSent', 'y'), 0);
    expect(e.observe(sip('InvalidAccountID', 'x'), 0)).toEqual({ kind: 'ignored', reason: 'same-request' });
  });

  it('an outcome given in another spelling of the same address still ends the request', () => {
    const e = engine();
    e.observe({ ...sip('InvalidAccountID', 'x'), ip: '2001:db8::1' }, 0);
    e.observe({ ...sip('ChallengeSent', 'x'), ip: '2001:DB8:0::1' }, 0);
    expect(e.observe({ ...sip('InvalidAccountID', 'x'), ip: '2001:db8::1' }, 0).kind).toBe('counted');
  });

  it('the same SessionID from another address counts separately', () => {
    const e = engine();
    expect(e.observe(ev('192.0.2.1', { sessionId: 's' }), 0).kind).toBe('counted');
    expect(e.observe(ev('192.0.2.2', { sessionId: 's' }), 0).kind).toBe('counted');
  });

  it('AMI events count one each even when their SessionIDs repeat', () => {
    const e = engine();
    const ami = { service: 'AMI', sessionId: '0x7f53c1a07460' };
    expect(feed(e, '192.0.2.1', [0, 1, 2], ami).map((o) => o.kind)).toEqual(['counted', 'counted', 'banned']);
  });
});

describe('never banned, whatever the events say', () => {
  it.each([
    ['0.0.0.0'],
    ['::'],
    ['255.255.255.255'],
    ['224.0.0.1'],
    ['239.255.255.250'],
    ['ff02::1'],
    ['169.254.1.1'],
    ['fe80::1'],
    ['febf::1'],
    ['fe80::1%eth0'],
    ['2001:db8::1%eth0'],
  ])('%s', (addr) => {
    const e = engine({ BAN_MAXRETRY: '1' });
    expect(e.observe(ev(addr), 0)).toEqual({ kind: 'ignored', reason: 'unbannable-address' });
    expect(e.ban(addr, 0, { force: true })).toMatchObject({ kind: 'refused', reason: 'unbannable' });
  });

  it('a zone on an IPv4 address is malformed', () => {
    expect(engine().observe(ev('192.0.2.1%eth0'), 0)).toEqual({ kind: 'ignored', reason: 'invalid-address' });
  });

  it('neighbours of those ranges are bannable', () => {
    const e = engine({ BAN_MAXRETRY: '1' });
    for (const a of ['0.0.0.1', '223.255.255.255', '240.0.0.1', '169.253.1.1', 'fec0::1', 'fe7f::1']) expect(e.observe(ev(a), 0).kind).toBe('banned');
  });
});

describe('ignore self', () => {
  it("the host's own addresses are never counted; a manual ban of one needs force", () => {
    const e = engine({ BAN_IGNOREIP: '10.0.0.0/8', BAN_MAXRETRY: '1' });
    e.setSelf([{ family: 'ipv4', ip: '127.0.0.1' }, { family: 'ipv6', ip: 'fd00::1' }]);
    expect(e.observe(ev('127.0.0.1'), 0)).toEqual({ kind: 'ignored', reason: 'self' });
    expect(e.observe(ev('fd00:0::1'), 0)).toEqual({ kind: 'ignored', reason: 'self' });
    expect(e.observe(ev('::ffff:127.0.0.1'), 0)).toEqual({ kind: 'ignored', reason: 'self' });
    // Exact addresses only: the rest of 127/8 is not self.
    expect(e.observe(ev('127.0.0.2'), 0).kind).toBe('banned');
    expect(e.ban('127.0.0.1', 0)).toEqual({ kind: 'refused', reason: 'self' });
    expect(e.ban('127.0.0.1', 0, { force: true }).kind).toBe('banned');
  });

  it('replacing the ignore list leaves self alone', () => {
    const e = engine({ BAN_MAXRETRY: '1' });
    e.setSelf([{ family: 'ipv4', ip: '192.0.2.10' }]);
    e.setIgnoreList([]);
    expect(e.observe(ev('192.0.2.10'), 0)).toEqual({ kind: 'ignored', reason: 'self' });
    expect(e.isIgnored('192.0.2.10')).toBe(true);
  });

  it('pending failures of an address that becomes self are dropped', () => {
    const e = engine();
    feed(e, '192.0.2.10', [0, 1]);
    e.setSelf([{ family: 'ipv4', ip: '192.0.2.10' }]);
    e.setSelf([]);
    expect(e.observe(ev('192.0.2.10'), 2)).toEqual({ kind: 'counted', ip: '192.0.2.10', failures: 1 });
  });
});

describe('ignore list', () => {
  const e = engine({ BAN_IGNOREIP: '10.0.0.0/8, 192.0.2.5 2001:db8::/32,::1' });

  it.each([
    ['10.200.3.4', true],
    ['11.0.0.1', false],
    ['192.0.2.5', true],
    ['192.0.2.6', false],
    ['2001:db8:ffff::1', true],
    ['2001:db9::1', false],
    ['::1', true],
    ['::ffff:10.1.1.1', true],
    ['::ffff:11.1.1.1', false],
  ])('%s ignored: %s', (ip, ignoredExpected) => {
    const o = e.observe(ev(ip), 0);
    expect(o.kind === 'ignored' && o.reason === 'ignore-list').toBe(ignoredExpected);
  });

  it('an IPv4-mapped entry in the list covers the IPv4 address', () => {
    const m = engine({ BAN_IGNOREIP: '::ffff:203.0.113.0/120' });
    expect(m.observe(ev('203.0.113.77'), 0)).toEqual({ kind: 'ignored', reason: 'ignore-list' });
  });

  it('IPv4-mapped failures are counted under the IPv4 address', () => {
    const m = engine();
    m.observe(ev('::ffff:203.0.113.9'), 0);
    expect(m.observe(ev('203.0.113.9'), 1)).toEqual({ kind: 'counted', ip: '203.0.113.9', failures: 2 });
  });

  it('IPv6 addresses are canonicalized', () => {
    const m = engine();
    m.observe(ev('FD00:0:0::2'), 0);
    expect(m.observe(ev('fd00::2'), 1)).toEqual({ kind: 'counted', ip: 'fd00::2', failures: 2 });
  });

  it('setIgnoreList drops pending failures of newly ignored addresses', () => {
    const m = engine();
    m.observe(ev('198.51.100.1'), 0);
    m.setIgnoreList([{ address: { family: 'ipv4', ip: '198.51.100.0' }, prefix: 24 }]);
    expect(m.stats().tracked).toBe(0);
    expect(m.observe(ev('198.51.100.1'), 1)).toEqual({ kind: 'ignored', reason: 'ignore-list' });
  });
});

describe('bounded memory', () => {
  it('evicts the address with the oldest failure at BAN_MAX_TRACKED, and counts it', () => {
    const e = engine({ BAN_MAX_TRACKED: '3' });
    e.observe(ev('192.0.2.1'), 0);
    e.observe(ev('192.0.2.2'), 1);
    e.observe(ev('192.0.2.3'), 2);
    e.observe(ev('192.0.2.1'), 3); // .1 is now the most recent
    e.observe(ev('192.0.2.4'), 4); // evicts .2
    expect(e.stats()).toMatchObject({ tracked: 3, evicted: 1 });
    expect(e.observe(ev('192.0.2.2'), 5)).toEqual({ kind: 'counted', ip: '192.0.2.2', failures: 1 });
    expect(e.observe(ev('192.0.2.1'), 6)).toMatchObject({ kind: 'banned' });
  });

  it('under a long flood, eviction keeps taking the oldest, and counts stay exact for the survivors', () => {
    const e = engine({ BAN_MAX_TRACKED: '1000', BAN_MAXRETRY: '3' });
    // 50 000 scanners once each, and one attacker failing every 400 events: it must stay tracked.
    let bannedAt = -1;
    for (let i = 0; i < 50_000; i++) {
      e.observe(ev(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`), i);
      if (i % 400 === 0 && bannedAt === -1 && e.observe(ev('192.0.2.99'), i).kind === 'banned') bannedAt = i;
    }
    expect(bannedAt).toBe(800);
    expect(e.stats().tracked).toBe(1000);
    expect(e.stats().evicted).toBe(50_000 + 1 - 1 - 1000);
    // The survivors are the newest 1000 scanners (49 000 = 10.0.191.104 on): the one before is gone.
    expect(e.observe(ev('10.0.191.104'), 50_000)).toEqual({ kind: 'counted', ip: '10.0.191.104', failures: 2 });
    expect(e.observe(ev('10.0.191.103'), 50_001)).toEqual({ kind: 'counted', ip: '10.0.191.103', failures: 1 });
  });

  it('prune drops addresses whose failures all left the window', () => {
    const e = engine();
    e.observe(ev('192.0.2.1'), 0);
    e.observe(ev('192.0.2.2'), 100 * S);
    // A failure exactly findtime old still counts.
    e.prune(600 * S);
    expect(e.stats().tracked).toBe(2);
    e.prune(600 * S + 1);
    expect(e.stats().tracked).toBe(1);
    e.prune(700 * S + 1);
    expect(e.stats().tracked).toBe(0);
  });
});

describe('manual ban and unban', () => {
  it('produce decisions through the same path', () => {
    const e = engine();
    e.observe(ev('192.0.2.1'), 0);
    const r = e.ban('192.0.2.1', 10, { seconds: 60 });
    expect(r).toMatchObject({ kind: 'banned', decision: { ip: '192.0.2.1', reason: 'manual', banSeconds: 60, until: 60_010, failures: 0 } });
    expect(e.stats().tracked).toBe(0);
    expect(e.unban('192.0.2.1', 20)).toEqual({ type: 'unban', ip: '192.0.2.1', family: 'ipv4', at: 20, reason: 'manual' });
    expect(e.unban('192.0.2.1', 30)).toBeNull();
    // The lifted ban does not come back as an expiry later.
    expect(e.expire(10_000_000)).toEqual([]);
  });

  it('refuses invalid and ignored addresses unless forced', () => {
    const e = engine({ BAN_IGNOREIP: '10.0.0.0/8' });
    expect(e.ban('nope', 0)).toEqual({ kind: 'refused', reason: 'invalid-address' });
    expect(e.ban('10.1.1.1', 0)).toEqual({ kind: 'refused', reason: 'ignore-list' });
    expect(e.ban('10.1.1.1', 0, { force: true }).kind).toBe('banned');
  });

  it('permanent bans never expire', () => {
    const e = engine({ BAN_BANTIME: '-1' });
    const out = feed(e, '2001:db8::1', [0, 1, 2]);
    expect(out[2]).toMatchObject({ kind: 'banned', decision: { family: 'ipv6', banSeconds: Infinity, until: Infinity } });
    expect(e.expire(Number.MAX_SAFE_INTEGER)).toEqual([]);
    expect(e.isBanned('2001:db8::1', Number.MAX_SAFE_INTEGER)).toBe(true);
  });

  it('a manual ban never shortens a longer or permanent ban unless replace', () => {
    const e = engine();
    e.ban('192.0.2.1', 0, { seconds: 3600 });
    expect(e.ban('192.0.2.1', S, { seconds: 60 })).toEqual({ kind: 'unchanged', until: 3600 * S });
    expect(e.ban('192.0.2.1', S, { seconds: 60, replace: true })).toMatchObject({ kind: 'banned', decision: { until: 61 * S, extendsBan: true } });
    e.ban('192.0.2.2', 0, { seconds: Infinity });
    expect(e.ban('192.0.2.2', S, { seconds: 10 * 86400 })).toEqual({ kind: 'unchanged', until: Infinity });
  });

  it('extending a ban in force does not count as another ban for escalation', () => {
    const e = new Engine(policy({ BAN_IGNOREIP: '', BAN_INCREMENT: 'true', BAN_BANTIME: '10m' }));
    const first = feed(e, '192.0.2.9', [0, 1, 2])[2];
    expect(first).toMatchObject({ kind: 'banned', decision: { banSeconds: 600, previousBans: 0, extendsBan: false } });
    expect(e.ban('192.0.2.9', 10, { seconds: 3600 })).toMatchObject({ kind: 'banned', decision: { previousBans: 0, extendsBan: true } });
    // The next ban after it ends is the second: 2 × bantime.
    e.expire(4000 * S);
    // A repeat offender: its second failure bans it (weight 2, the observer).
    const second = feed(e, '192.0.2.9', [4001 * S, 4002 * S])[1];
    expect(second).toMatchObject({ kind: 'banned', decision: { banSeconds: 1200, previousBans: 1 } });
  });

  it('a re-ban replaces the earlier expiry', () => {
    const e = engine();
    e.ban('192.0.2.1', 0, { seconds: 10 });
    e.ban('192.0.2.1', 5 * S, { seconds: 100 });
    expect(e.expire(11 * S)).toEqual([]);
    expect(e.expire(105 * S).map((d) => d.ip)).toEqual(['192.0.2.1']);
  });
});

describe('incremental ban time (fail2ban bantime.increment)', () => {
  const base = { banTime: 3600, increment: true, factor: 1, multipliers: [] as number[], maxTime: 7 * 86400, rndTime: 0 };
  const half = (): number => 0.5;

  it('first ban is bantime, then bantime × 2^n × factor', () => {
    expect([0, 1, 2, 3, 4].map((n) => nextBanSeconds(base, n, half))).toEqual([3600, 7200, 14400, 28800, 57600]);
    expect(nextBanSeconds({ ...base, factor: 3 }, 2, half)).toBe(3600 * 4 * 3);
  });

  it('the exponent stops at 20', () => {
    const uncapped = { ...base, banTime: 1, maxTime: 1e12 };
    expect(nextBanSeconds(uncapped, 20, half)).toBe(2 ** 20);
    expect(nextBanSeconds(uncapped, 25, half)).toBe(2 ** 20);
  });

  it('never below bantime (a factor under 1)', () => {
    expect(nextBanSeconds({ ...base, factor: 0.1 }, 1, half)).toBe(3600);
  });

  it('multipliers: bantime × factor × multipliers[min(n, len−1)]', () => {
    const m = { ...base, banTime: 60, factor: 2, multipliers: [1, 5, 30, 60] };
    expect([0, 1, 2, 3, 4, 9].map((n) => nextBanSeconds(m, n, half))).toEqual([60, 600, 3600, 7200, 7200, 7200]);
  });

  it('capped at maxtime, then 0..rndtime added', () => {
    expect(nextBanSeconds(base, 10, half)).toBe(7 * 86400);
    expect(nextBanSeconds({ ...base, rndTime: 100 }, 10, () => 0.25)).toBe(7 * 86400 + 25);
    expect(nextBanSeconds({ ...base, rndTime: 100 }, 0, () => 0.25)).toBe(3600);
  });

  it('off, or with a permanent bantime, the ban time is bantime', () => {
    expect(nextBanSeconds({ ...base, increment: false }, 5, half)).toBe(3600);
    expect(nextBanSeconds({ ...base, banTime: Infinity }, 5, half)).toBe(Infinity);
  });

  it('the engine counts its own bans and the previous ones it is given', () => {
    const e = new Engine(policy({ BAN_IGNOREIP: '', BAN_INCREMENT: 'true', BAN_BANTIME: '10m' }));
    const bans: number[] = [];
    let t = 0;
    for (let round = 0; round < 3; round++) {
      for (const o of feed(e, '192.0.2.9', [t, t + 1, t + 2])) if (o.kind === 'banned') bans.push(o.decision.banSeconds);
      t += 10 * 86400 * S;
      e.expire(t);
    }
    expect(bans).toEqual([600, 1200, 2400]);
    // Two bans given as data (one outside BAN_HISTORY_KEEP, 30d by default): the next is the second.
    const day = 86400 * S;
    const given = new Engine(policy({ BAN_IGNOREIP: '', BAN_INCREMENT: 'true', BAN_BANTIME: '10m' }), {
      previousBans: [
        { ip: '192.0.2.9', startedAt: 100 * day - 40 * day },
        { ip: '192.0.2.9', startedAt: 100 * day - 2 * day },
      ],
    });
    expect(feed(given, '192.0.2.9', [100 * day, 100 * day + 1])[1]).toMatchObject({ kind: 'banned', decision: { banSeconds: 1200, previousBans: 1 } });
  });
});

describe('unanswered challenges (BAN_CHALLENGE_TIMEOUT, BAN_UNANSWERED_MAXRETRY)', () => {
  const challenge = (e: Engine, ip: string, sid: string, t: number): Outcome => e.observe(ev(ip, { name: 'ChallengeSent', severity: 'Informational', sessionId: sid }), t);

  it('ten challenges left unanswered within findtime ban, once each timeout has passed', () => {
    const e = engine();
    for (let i = 0; i < 10; i++) {
      challenge(e, '203.0.113.36', `reg-${i}`, i * 2 * S);
      // A challenge is unanswered only after its 5 s.
      expect(e.challengesDue(i * 2 * S + 4 * S)).toEqual([]);
    }
    const bans = e.challengesDue(18 * S + 5 * S);
    expect(bans).toMatchObject([{ ip: '203.0.113.36', reason: 'unanswered', failures: 10, events: { UnansweredChallenge: 10 }, banSeconds: 3600 }]);
    expect(e.isBanned('203.0.113.36', 24 * S)).toBe(true);
  });

  it('an answer on the same Call-ID from the same address (success or wrong password) is not unanswered', () => {
    const e = engine();
    for (let i = 0; i < 12; i++) {
      challenge(e, '192.0.2.60', `phone-${i}`, i * S);
      const name = i % 6 === 5 ? 'ChallengeResponseFailed' : 'SuccessfulAuth';
      e.observe(ev('192.0.2.60', { name, severity: name === 'SuccessfulAuth' ? 'Informational' : 'Error', sessionId: `phone-${i}` }), i * S + 50);
    }
    expect(e.challengesDue(60 * S, true)).toEqual([]);
  });

  it('a new challenge on a Call-ID whose challenge is pending counts the pending one at once', () => {
    const e = engine({ BAN_UNANSWERED_MAXRETRY: '3' });
    for (let i = 0; i < 3; i++) challenge(e, '198.51.100.9', 'same-call', i * 100);
    // Two were replaced before their timeout; the third is still pending.
    expect(e.challengesDue(300)).toEqual([]);
    expect(e.challengesDue(200 + 5 * S)).toMatchObject([{ ip: '198.51.100.9', failures: 3 }]);
  });

  it('the ignore list, banned addresses and BAN_UNANSWERED_MAXRETRY=0 are respected; old ones leave the window', () => {
    const ignored = engine({ BAN_IGNOREIP: '192.0.2.0/24' });
    for (let i = 0; i < 10; i++) challenge(ignored, '192.0.2.7', `c${i}`, i * S);
    expect(ignored.challengesDue(100 * S)).toEqual([]);
    const off = engine({ BAN_UNANSWERED_MAXRETRY: '0' });
    for (let i = 0; i < 20; i++) challenge(off, '198.51.100.1', `c${i}`, i * S);
    expect(off.challengesDue(100 * S, true)).toEqual([]);
    // findtime 10m: nine early ones have left the window when the tenth times out.
    const slow = engine();
    for (let i = 0; i < 9; i++) challenge(slow, '198.51.100.2', `c${i}`, i * S);
    expect(slow.challengesDue(30 * S)).toEqual([]);
    challenge(slow, '198.51.100.2', 'late', 700 * S);
    expect(slow.challengesDue(706 * S)).toEqual([]);
  });
});

describe('repeat offenders trip faster (fail2ban observer, BAN_INCREMENT=true)', () => {
  it('an address banned n times before bans after ceil(maxretry / min(2^n/2 + 1, maxretry)) failures', () => {
    const e = engine({ BAN_INCREMENT: 'true', BAN_BANTIME: '1m', BAN_MAXRETRY: '3' });
    const failuresToBan: number[] = [];
    let t = 0;
    for (let round = 0; round < 4; round++) {
      let n = 0;
      for (;;) {
        n++;
        const o = e.observe(ev('198.51.100.77'), t);
        t += S;
        if (o.kind === 'banned') {
          // The decision reports the real failures, not their weight.
          expect(o.decision.failures).toBe(n);
          break;
        }
      }
      failuresToBan.push(n);
      t += 2 * 86400 * S;
      e.expire(t);
    }
    // weights 1, 2, 3, 3 (2^3/2 + 1 = 5, capped at maxretry 3)
    expect(failuresToBan).toEqual([3, 2, 1, 1]);
  });

  it('off without BAN_INCREMENT: every ban takes maxretry failures', () => {
    const e = engine({ BAN_BANTIME: '1m' });
    feed(e, '198.51.100.78', [0, S, 2 * S]);
    e.expire(86400 * S);
    const again = feed(e, '198.51.100.78', [86401 * S, 86402 * S, 86403 * S]);
    expect(again.map((o) => o.kind)).toEqual(['counted', 'counted', 'banned']);
  });
});

describe('trust learned from real logins (BAN_TRUST_SUCCESS)', () => {
  const login = (e: Engine, ip: string, account: string, at: number, service = 'PJSIP'): Outcome =>
    e.observe(ev(ip, { name: 'SuccessfulAuth', severity: 'Informational', service, account }), at);
  const wrong = (e: Engine, ip: string, account: string, at: number): Outcome => e.observe(ev(ip, { name: 'ChallengeResponseFailed', account }), at);

  it("a phone that logged in: its account's slow mistakes from its address weigh a quarter and never ban it below 4 × maxretry", () => {
    const e = engine();
    login(e, '192.0.2.70', '1001', 0);
    // 11 wrong passwords, 50 s apart: all within findtime (10 min), never 3 within a minute
    for (let i = 1; i <= 11; i++) expect(wrong(e, '192.0.2.70', '1001', i * 50 * S)).toMatchObject({ kind: 'counted', trusted: true });
    expect(e.isBanned('192.0.2.70', 560 * S)).toBe(false);
    // The same without trust bans at the third.
    const off = engine({ BAN_TRUST_SUCCESS: 'false' });
    login(off, '192.0.2.70', '1001', 0);
    expect([1, 2, 3].map((i) => wrong(off, '192.0.2.70', '1001', i * 50 * S).kind)).toEqual(['counted', 'counted', 'banned']);
  });

  it('a trusted pair still bans at 4 × maxretry slow failures within findtime', () => {
    const e = engine();
    login(e, '192.0.2.71', '1001', 0);
    const out = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((i) => wrong(e, '192.0.2.71', '1001', i * 45 * S));
    expect(out.slice(0, 11).every((o) => o.kind === 'counted')).toBe(true);
    expect(out[11]).toMatchObject({ kind: 'banned', decision: { reason: 'threshold', failures: 12, events: { ChallengeResponseFailed: 12 } } });
  });

  it('fast failures of a trusted pair (maxretry within a minute: guessing) count in full, earlier ones included', () => {
    const e = engine();
    login(e, '192.0.2.72', '1001', 0);
    expect(wrong(e, '192.0.2.72', '1001', 10 * S).kind).toBe('counted');
    expect(wrong(e, '192.0.2.72', '1001', 20 * S).kind).toBe('counted');
    expect(wrong(e, '192.0.2.72', '1001', 30 * S)).toMatchObject({ kind: 'banned', decision: { failures: 3 } });
  });

  it('an attacker that logged in once and then enumerates other accounts is banned at maxretry', () => {
    const e = engine();
    login(e, '198.51.100.80', '1001', 0);
    expect(e.observe(ev('198.51.100.80', { account: '1002' }), 100 * S)).toEqual({ kind: 'counted', ip: '198.51.100.80', failures: 1 });
    expect(e.observe(ev('198.51.100.80', { account: 'admin' }), 200 * S).kind).toBe('counted');
    expect(e.observe(ev('198.51.100.80', { account: '' }), 300 * S)).toMatchObject({ kind: 'banned', decision: { failures: 3, events: { InvalidAccountID: 3 } } });
  });

  it('trust is per address: the account from elsewhere counts in full; AMI logins make no trust', () => {
    const e = engine();
    login(e, '192.0.2.73', '1001', 0);
    login(e, '192.0.2.74', 'admin', 0, 'AMI');
    expect([1, 2, 3].map((i) => wrong(e, '203.0.113.9', '1001', i * 100 * S).kind)).toEqual(['counted', 'counted', 'banned']);
    expect([1, 2, 3].map((i) => wrong(e, '192.0.2.74', 'admin', i * 100 * S).kind)).toEqual(['counted', 'counted', 'banned']);
    expect(e.trustedPairs(S).map((p) => `${p.ip} ${p.account}`)).toEqual(['192.0.2.73 1001']);
  });

  it('expires after BAN_TRUST_TTL unless renewed, is revoked on request, and is persisted (changes to write, then given back at start)', () => {
    const e = engine({ BAN_TRUST_TTL: '1h' });
    login(e, '192.0.2.75', '1001', 0);
    login(e, '192.0.2.76', '1002', 0);
    expect(e.takeTrustChanges()).toEqual([
      { ip: '192.0.2.75', account: '1001', until: 3600 * S },
      { ip: '192.0.2.76', account: '1002', until: 3600 * S },
    ]);
    // A login a minute later renews without a write; one an hour later is written.
    login(e, '192.0.2.75', '1001', 60 * S);
    expect(e.takeTrustChanges()).toEqual([]);
    login(e, '192.0.2.75', '1001', 3600 * S);
    expect(e.takeTrustChanges()).toEqual([{ ip: '192.0.2.75', account: '1001', until: 7200 * S }]);
    expect(e.trustedPairs(3601 * S).map((p) => p.ip)).toEqual(['192.0.2.75']);
    // 192.0.2.76's trust has expired: its failures count in full again.
    expect([1, 2, 3].map((i) => wrong(e, '192.0.2.76', '1002', 3600 * S + i * 100 * S).kind)).toEqual(['counted', 'counted', 'banned']);
    expect(e.revokeTrust('192.0.2.75')).toEqual([{ ip: '192.0.2.75', account: '1001', until: 7200 * S }]);
    expect(e.trustedPairs(3601 * S)).toEqual([]);

    const restarted = new Engine(policy({ BAN_IGNOREIP: '' }), { trusted: [{ ip: '192.0.2.77', account: '1003', until: 1000 * S }] });
    expect(restarted.trustedPairs(0)).toEqual([{ ip: '192.0.2.77', account: '1003', until: 1000 * S }]);
    expect([1, 2, 3].map((i) => restarted.observe(ev('192.0.2.77', { name: 'ChallengeResponseFailed', account: '1003' }), i * 100 * S).kind)).toEqual(['counted', 'counted', 'counted']);
  });

  it('history read after the start (the database answered late): adds the earlier bans and trusted pairs to what this run learned; a pair confirmed since keeps its newer expiry', () => {
    const e = new Engine(policy({ BAN_IGNOREIP: '', BAN_INCREMENT: 'true', BAN_TRUST_SUCCESS: 'true', BAN_TRUST_TTL: '1h' }));
    login(e, '192.0.2.78', '1004', 10 * S);
    e.loadHistory(
      [{ ip: '198.51.100.91', startedAt: 0 }],
      [
        { ip: '192.0.2.77', account: '1003', until: 1000 * S },
        { ip: '192.0.2.78', account: '1004', until: 500 * S },
      ],
    );
    expect(e.trustedPairs(20 * S).map((p) => `${p.ip} ${p.account} ${String(p.until / S)}`).sort()).toEqual(['192.0.2.77 1003 1000', '192.0.2.78 1004 3610']);
    // (A repeat offender is banned sooner, and for longer.)
    const banned = [1, 2, 3].map((i) => e.observe(ev('198.51.100.91'), 20 * S + i * S)).find((o) => o.kind === 'banned');
    expect(banned).toMatchObject({ kind: 'banned', decision: { previousBans: 1, banSeconds: 7200 } });
  });
});

describe('the failures behind a ban (explain)', () => {
  it('a ban carries what each failure was: time, event, transport, and the account from the second failure on', () => {
    const e = engine();
    e.observe(ev('198.51.100.90', { account: '1001', transport: 'TCP' }), 1 * S);
    e.observe(ev('198.51.100.90', { name: 'ChallengeResponseFailed', account: '1001', transport: 'TLS' }), 2 * S);
    const out = e.observe(ev('198.51.100.90', { name: 'InvalidPassword', service: 'AMI', account: 'admin', transport: 'TCP' }), 3 * S);
    expect(out).toMatchObject({
      kind: 'banned',
      decision: {
        details: [
          // An address's first failure keeps no account: a scan's million lone failures keep no string.
          { at: 1 * S, event: 'InvalidAccountID', account: '', transport: 'TCP' },
          { at: 2 * S, event: 'ChallengeResponseFailed', account: '1001', transport: 'TLS' },
          { at: 3 * S, event: 'InvalidPassword', account: 'admin', transport: 'TCP' },
        ],
      },
    });
  });

  it('keeps the 32 most recent failures of an address, only those in the window, and forgets them once it is banned', () => {
    const e = engine({ BAN_MAXRETRY: '40', BAN_FINDTIME: '1h' });
    let last: Outcome | undefined;
    for (let i = 0; i < 40; i++) last = e.observe(ev('198.51.100.91', { account: `u${String(i)}` }), i * S);
    const d = last?.kind === 'banned' ? last.decision : undefined;
    expect(d?.failures).toBe(40);
    expect(d?.details.length).toBe(32);
    expect(d?.details[0]?.account).toBe('u8');
    expect(d?.details[31]?.account).toBe('u39');
  });

  it('keeps the accounts of the most recently failing addresses: past the cap the least recent goes, through many evictions', () => {
    const accounts = new FailureAccounts(3);
    const t = (ip: string): string => accounts.take(ip).map((n) => n.account).join();
    for (const ip of ['a', 'b', 'c']) accounts.note(ip, 1, 0, `${ip}1`);
    accounts.note('a', 2, 0, 'a2'); // a fails again: b is now the least recent
    accounts.note('d', 3, 0, 'd1');
    expect(t('b')).toBe('');
    expect(t('a')).toBe('a1,a2');
    // Thousands of evictions later (each address once), the order still holds.
    for (let i = 0; i < 5000; i++) accounts.note(`x${String(i)}`, 4, 0, 'x');
    accounts.note('x4997', 5, 0, 'again');
    accounts.note('y', 6, 0, 'y1');
    expect(t('x4998')).toBe('');
    expect(t('x4997')).toBe('x,again');
    expect(t('x4999')).toBe('x');
    expect(t('y')).toBe('y1');
    accounts.note('z', 7, 0, 'z1'); // emptied by take(): it starts again
    expect(t('z')).toBe('z1');
  });

  it('a manual ban has none', () => {
    const r = engine().ban('198.51.100.92', 0);
    expect(r.kind === 'banned' ? r.decision.details : undefined).toEqual([]);
  });
});

describe('bans of networks (CIDR)', () => {
  it('a manual ban of a network: canonical text, minimum prefix unless forced, never /0', () => {
    const e = engine();
    expect(e.ban('2001:db8:1:2:3::9/64', 0)).toMatchObject({ kind: 'banned', decision: { ip: '2001:db8:1:2::/64', family: 'ipv6', reason: 'manual' }, replaced: [] });
    expect(e.ban('10.0.0.0/8', 0)).toEqual({ kind: 'refused', reason: 'too-wide', min: 16 });
    expect(e.ban('2001:db8::/31', 0)).toEqual({ kind: 'refused', reason: 'too-wide', min: 32 });
    expect(e.ban('10.0.0.0/8', 0, { force: true })).toMatchObject({ kind: 'banned', decision: { ip: '10.0.0.0/8' } });
    expect(e.ban('0.0.0.0/0', 0, { force: true })).toMatchObject({ kind: 'refused', reason: 'too-wide' });
    expect(e.ban('::/0', 0, { force: true })).toMatchObject({ kind: 'refused', reason: 'too-wide' });
    expect(e.ban('192.0.2.9/32', 0)).toMatchObject({ kind: 'banned', decision: { ip: '192.0.2.9' } });
    expect(e.ban('192.0.2.0/33', 0)).toEqual({ kind: 'refused', reason: 'invalid-address' });
  });

  it('an address inside a banned network is banned already: its failures and a manual ban of it change nothing', () => {
    const e = engine();
    e.ban('198.51.100.0/24', 0, { seconds: 3600 });
    expect(e.isBanned('198.51.100.77', S)).toBe(true);
    expect(e.isBanned('198.51.101.77', S)).toBe(false);
    expect(e.observe(ev('198.51.100.77'), S)).toEqual({ kind: 'ignored', reason: 'already-banned' });
    expect(e.ban('198.51.100.77', S)).toEqual({ kind: 'unchanged', until: 3600 * S });
    expect(e.ban('198.51.100.128/25', S)).toEqual({ kind: 'unchanged', until: 3600 * S });
    // once it expires, its addresses count again
    for (const d of e.expire(3601 * S)) expect(d.ip).toBe('198.51.100.0/24');
    expect(e.observe(ev('198.51.100.77'), 3602 * S).kind).toBe('counted');
  });

  it('a network ban replaces the bans inside it (addresses and narrower networks), which are lifted as `subnet`', () => {
    const e = engine();
    feed(e, '2001:db8:1:2::5', [0, S, 2 * S]);
    e.ban('2001:db8:1:2:8000::/65', 3 * S);
    e.ban('2001:db8:9::1', 3 * S);
    const r = e.ban('2001:db8:1:2::/64', 4 * S);
    expect(r.kind === 'banned' ? r.replaced.map((d) => [d.ip, d.reason]).sort() : r).toEqual([
      ['2001:db8:1:2:8000::/65', 'subnet'],
      ['2001:db8:1:2::5', 'subnet'],
    ]);
    expect([...e.activeBans().keys()].sort()).toEqual(['2001:db8:1:2::/64', '2001:db8:9::1']);
    expect(e.unban('2001:db8:1:2::/64', 5 * S)).toMatchObject({ ip: '2001:db8:1:2::/64', reason: 'manual' });
  });

  it('a network holding an ignored address or one of this host is never banned, even forced', () => {
    const e = engine({ BAN_IGNOREIP: '192.0.2.10 2001:db8:aa::/48' });
    e.setSelf([{ family: 'ipv4', ip: '203.0.113.5' }]);
    expect(e.ban('192.0.2.0/24', 0, { force: true })).toMatchObject({ kind: 'refused', reason: 'holds-excluded' });
    expect(e.ban('2001:db8:aa:1::/64', 0, { force: true })).toMatchObject({ kind: 'refused', reason: 'holds-excluded' });
    expect(e.ban('2001:db8::/32', 0, { force: true })).toMatchObject({ kind: 'refused', reason: 'holds-excluded' });
    expect(e.ban('203.0.113.0/24', 0, { force: true })).toMatchObject({ kind: 'refused', reason: 'holds-excluded', what: expect.stringContaining('this host') as unknown });
    expect(e.ban('192.0.2.16/28', 0)).toMatchObject({ kind: 'banned' });
    expect(e.isIgnored('192.0.2.0/24')).toBe(true);
    expect(e.isSelf('203.0.113.0/29')).toBe(true);
    expect(e.isSelf('203.0.113.0/30')).toBe(false);
  });
});

describe('automatic bans of networks (escalation)', () => {
  const on = { BAN_V4_SUBNET_ESCALATE: '5', BAN_SUBNET_ESCALATE: '3', BAN_SUBNET_MAXRETRY: 'auto' };

  it('IPv6: failures from one /64 count together; 2 × maxretry of them ban the /64 though no address reached maxretry', () => {
    const e = engine(on);
    const out = [1, 2, 3, 4, 5, 6].map((i) => e.observe(ev(`2001:db8:1:2::${String(i)}`), i * S));
    expect(out.slice(0, 5).every((o) => o.kind === 'counted')).toBe(true);
    expect(out[5]).toMatchObject({ kind: 'banned', decision: { ip: '2001:db8:1:2::/64', family: 'ipv6', reason: 'subnet', failures: 6 } });
    expect(e.isBanned('2001:db8:1:2::ffff', 7 * S)).toBe(true);
    expect(e.isBanned('2001:db8:1:3::1', 7 * S)).toBe(false);
  });

  it('IPv6: the 3rd address of a /64 to be banned bans the /64 instead, and the two before it are lifted as `subnet`', () => {
    const e = engine({ ...on, BAN_SUBNET_MAXRETRY: '0' });
    for (const a of ['2001:db8:5:6::1', '2001:db8:5:6::2']) expect(feed(e, a, [0, S, 2 * S])[2]?.kind).toBe('banned');
    const third = feed(e, '2001:db8:5:6::3', [3 * S, 4 * S, 5 * S])[2];
    expect(third).toMatchObject({ kind: 'banned', decision: { ip: '2001:db8:5:6::/64', reason: 'subnet' } });
    const replaces = third?.kind === 'banned' ? (third.decision.replaces ?? []) : [];
    expect(replaces.map((d) => [d.ip, d.reason]).sort()).toEqual([
      ['2001:db8:5:6::1', 'subnet'],
      ['2001:db8:5:6::2', 'subnet'],
    ]);
    expect([...e.activeBans().keys()]).toEqual(['2001:db8:5:6::/64']);
    // the address bans before it replaced nothing
    expect(e.ban('2001:db8:5:7::1', 6 * S)).toMatchObject({ kind: 'banned', replaced: [] });
  });

  it('IPv4: counting per /24 is off by default; the 5th banned address of a /24 bans the /24', () => {
    const e = engine(on);
    const bans = [1, 2, 3, 4, 5].map((n) => feed(e, `198.51.100.${String(n)}`, [n * 10 * S, n * 10 * S + S, n * 10 * S + 2 * S])[2]);
    expect(bans.slice(0, 4).map((b) => (b?.kind === 'banned' ? b.decision.ip : b?.kind))).toEqual(['198.51.100.1', '198.51.100.2', '198.51.100.3', '198.51.100.4']);
    expect(bans[4]).toMatchObject({ kind: 'banned', decision: { ip: '198.51.100.0/24', reason: 'subnet' } });
    expect(bans[4]?.kind === 'banned' ? bans[4].decision.replaces : undefined).toHaveLength(4);
    // many failures spread over a /24 ban nothing by themselves
    const spread = engine(on);
    for (let i = 1; i <= 50; i++) expect(spread.observe(ev(`203.0.113.${String(i)}`), i * S).kind).toBe('counted');
  });

  it('a ban lifted or ended no longer counts toward its network, in either family', () => {
    const e = engine({ ...on, BAN_SUBNET_MAXRETRY: '0', BAN_V4_SUBNET_MAXRETRY: '0' });
    const ban = (ip: string, t: number): string => {
      const r = feed(e, ip, [t, t + S, t + 2 * S])[2];
      return r?.kind === 'banned' ? r.decision.ip : String(r?.kind);
    };
    // 4 of 203.0.113.0/24 (its number is negative as a signed 32-bit integer), one lifted: the 5th is an address ban.
    expect([1, 2, 3, 4].map((n) => ban(`203.0.113.${String(n)}`, n * 10 * S))).toEqual(['203.0.113.1', '203.0.113.2', '203.0.113.3', '203.0.113.4']);
    expect(e.unban('203.0.113.2', 50 * S)).not.toBeNull();
    expect(ban('203.0.113.5', 60 * S)).toBe('203.0.113.5');
    expect(ban('203.0.113.6', 70 * S)).toBe('203.0.113.0/24');
    // The same in 10.9.9.0/24 (positive), and in an IPv6 /64 (by text).
    expect([1, 2, 3, 4].map((n) => ban(`10.9.9.${String(n)}`, 100 * S + n * 10 * S))).toEqual(['10.9.9.1', '10.9.9.2', '10.9.9.3', '10.9.9.4']);
    expect(e.unban('10.9.9.1', 150 * S)).not.toBeNull();
    expect(ban('10.9.9.5', 160 * S)).toBe('10.9.9.5');
    expect([1, 2].map((n) => ban(`2001:db8:8:8::${String(n)}`, 200 * S + n * 10 * S))).toEqual(['2001:db8:8:8::1', '2001:db8:8:8::2']);
    expect(e.unban('2001:db8:8:8::1', 230 * S)).not.toBeNull();
    expect(ban('2001:db8:8:8::3', 240 * S)).toBe('2001:db8:8:8::3');
    expect(ban('2001:db8:8:8::4', 250 * S)).toBe('2001:db8:8:8::/64');
  });

  it('a network holding an ignored or own address is never banned automatically: its addresses are banned one by one', () => {
    const e = engine({ ...on, BAN_IGNOREIP: '2001:db8:7:7::99' });
    const out = [1, 2, 3, 4, 5, 6].map((i) => e.observe(ev(`2001:db8:7:7::${String(i)}`), i * S));
    expect(out.every((o) => o.kind === 'counted')).toBe(true);
    const v4 = engine(on);
    v4.setSelf([{ family: 'ipv4', ip: '192.0.2.200' }]);
    const last = [1, 2, 3, 4, 5].map((n) => feed(v4, `192.0.2.${String(n)}`, [n * 10 * S, n * 10 * S + S, n * 10 * S + 2 * S])[2]);
    expect(last.map((b) => (b?.kind === 'banned' ? b.decision.ip : ''))).toEqual(['192.0.2.1', '192.0.2.2', '192.0.2.3', '192.0.2.4', '192.0.2.5']);
  });

  it('BAN_V6_PREFIX and BAN_V4_PREFIX choose the networks', () => {
    const e = engine({ ...on, BAN_V6_PREFIX: '48', BAN_SUBNET_MAXRETRY: '4' });
    const out = [1, 2, 3, 4].map((i) => e.observe(ev(`2001:db8:9:${String(i)}::1`), i * S));
    expect(out[3]).toMatchObject({ kind: 'banned', decision: { ip: '2001:db8:9::/48' } });
    const v4 = engine({ ...on, BAN_V4_PREFIX: '16', BAN_V4_SUBNET_MAXRETRY: '3' });
    const v4out = ['10.1.2.3', '10.1.200.4', '10.1.9.9'].map((a, i) => v4.observe(ev(a), i * S));
    expect(v4out[2]).toMatchObject({ kind: 'banned', decision: { ip: '10.1.0.0/16', reason: 'subnet' } });
  });
});

describe('escalation by unanswered challenges, and the network of a banned address', () => {
  const challenge = (e: Engine, ip: string, sid: string, t: number): Outcome => e.observe(ev(ip, { name: 'ChallengeSent', severity: 'Informational', sessionId: sid }), t);
  it('an unanswered-challenge ban that would make the 3rd banned address of a /64 bans the /64, its events named as such', () => {
    const e = engine({ BAN_SUBNET_ESCALATE: '3', BAN_UNANSWERED_MAXRETRY: '2' });
    for (const a of ['2001:db8:6:6::1', '2001:db8:6:6::2']) feed(e, a, [0, S, 2 * S]);
    for (let i = 0; i < 2; i++) challenge(e, '2001:db8:6:6::3', `reg-${String(i)}`, 3 * S + i * S);
    const bans = e.challengesDue(20 * S);
    expect(bans).toMatchObject([{ ip: '2001:db8:6:6::/64', reason: 'subnet', events: { UnansweredChallenge: 2 } }]);
    expect(bans[0]?.details.map((d) => d.event)).toEqual(['UnansweredChallenge', 'UnansweredChallenge']);
    expect(e.bannedNetworkOf('2001:db8:6:6::99', 21 * S)).toBe('2001:db8:6:6::/64');
    expect(e.bannedNetworkOf('2001:db8:6:7::99', 21 * S)).toBeUndefined();
  });
});
