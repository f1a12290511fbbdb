import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { ConfigError } from '../src/errors.js';
import { decode, encode } from '../src/fleet/decision.js';
import { compareIds } from '../src/fleet/redis-bus.js';
import { BASE_ENV } from './helpers/policy.js';

describe('fleet decisions on the bus', () => {
  it('a ban and an unban read back as written; permanent as null; addresses in canonical text', () => {
    const ban = { op: 'ban', ip: '2001:db8::1', until: 1_800_000_000_000, at: 1_790_000_000_000, origin: 'pbx-a', reason: 'threshold' } as const;
    expect(decode(encode(ban))).toEqual(ban);
    const permanent = { ...ban, until: Number.POSITIVE_INFINITY };
    expect(JSON.parse(encode(permanent))).toMatchObject({ until: null });
    expect(decode(encode(permanent))).toEqual(permanent);
    const unban = { op: 'unban', ip: '198.51.100.0/24', at: 1_790_000_000_000, origin: 'pbx-b' } as const;
    expect(decode(encode(unban))).toEqual(unban);
    expect(decode(JSON.stringify({ v: 1, ...ban, ip: '2001:DB8:0::1' }))).toMatchObject({ ip: '2001:db8::1' });
    expect(decode(JSON.stringify({ v: 1, ...ban, ip: '198.51.100.7/24' }))).toMatchObject({ ip: '198.51.100.0/24' });
  });

  it('refuses what is not a decision', () => {
    const ok = { v: 1, op: 'ban', ip: '192.0.2.1', until: 1_800_000_000_000, at: 1_790_000_000_000, origin: 'pbx-a', reason: 'threshold' };
    const bad: unknown[] = [
      'not json',
      'null',
      '[]',
      JSON.stringify({ ...ok, v: 2 }),
      JSON.stringify({ ...ok, op: 'drop' }),
      JSON.stringify({ ...ok, at: -1 }),
      JSON.stringify({ ...ok, at: 1.5 }),
      JSON.stringify({ ...ok, until: 'soon' }),
      JSON.stringify({ ...ok, origin: '' }),
      JSON.stringify({ ...ok, origin: 'a b' }),
      JSON.stringify({ ...ok, reason: 'DROP TABLE' }),
      JSON.stringify({ ...ok, ip: 5 }),
      `{"v":1,"pad":"${'x'.repeat(600)}"}`,
      undefined,
      42,
    ];
    for (const b of bad) expect(decode(b)).toBe('malformed');
    expect(decode(JSON.stringify({ ...ok, ip: '300.1.1.1' }))).toBe('invalid-address');
    expect(decode(JSON.stringify({ ...ok, ip: '1.2.3' }))).toBe('invalid-address');
    expect(decode(JSON.stringify({ ...ok, ip: '192.0.2.0/33' }))).toBe('invalid-address');
  });

  it("a ban in encode()'s own form reads as the same content in any other form: the same ban, or the same refusal", () => {
    const ok = { v: 1, op: 'ban', ip: '192.0.2.1', until: 1_800_000_000_000, at: 1_790_000_000_000, origin: 'pbx-a', reason: 'threshold' };
    const variants: Record<string, unknown>[] = [
      ok,
      { ...ok, until: null },
      { ...ok, ip: '2001:DB8:0::1' },
      { ...ok, ip: '198.51.100.7/24' },
      { ...ok, ip: '::ffff:192.0.2.1' },
      { ...ok, ip: '300.1.1.1' },
      { ...ok, ip: '192.0.2.0/33' },
      { ...ok, ip: 'fe80::1%eth0' },
      { ...ok, at: 2 ** 53 },
      { ...ok, until: 2 ** 53 },
      { ...ok, until: 0 },
      { ...ok, at: 0 },
      { ...ok, origin: 'x'.repeat(64) },
      { ...ok, origin: 'x'.repeat(65) },
      { ...ok, origin: '-a' },
      { ...ok, reason: 'Threshold' },
    ];
    for (const v of variants) {
      const encoded = JSON.stringify(v);
      // The same fields in another order, spaced out: never the fast path.
      const other = JSON.stringify(Object.fromEntries(Object.entries(v).reverse()), null, 1);
      expect(decode(encoded), encoded).toEqual(decode(other));
    }
    expect(decode(JSON.stringify(ok))).toEqual({ op: 'ban', ip: '192.0.2.1', until: 1_800_000_000_000, at: 1_790_000_000_000, origin: 'pbx-a', reason: 'threshold' });
    expect(decode(JSON.stringify({ ...ok, ip: '300.1.1.1' }))).toBe('invalid-address');
    expect(decode(JSON.stringify({ ...ok, at: 2 ** 53 }))).toBe('malformed');
  });

  it('stream ids compare as (ms, seq), not as text', () => {
    expect(compareIds('9-1', '10-0')).toBeLessThan(0);
    expect(compareIds('10-2', '10-10')).toBeLessThan(0);
    expect(compareIds('10-0', '10-0')).toBe(0);
    expect(compareIds('11-0', '10-99')).toBeGreaterThan(0);
  });
});

describe('fleet configuration', () => {
  const load = (env: Record<string, string>, files: Record<string, string> = {}) =>
    loadConfig({ ...BASE_ENV, ...env }, { hostname: 'pbx1.example.net', readFile: (p) => files[p] ?? (() => { throw new Error('ENOENT: no such file'); })() });
  const problems = (env: Record<string, string>): string[] => {
    try {
      load(env);
    } catch (err) {
      if (err instanceof ConfigError) return err.problems.map((p) => `${p.variable}: ${p.problem}`);
      throw err;
    }
    return [];
  };

  it('off unless a URL or sentinels are set; defaults otherwise', () => {
    expect(load({}).fleet).toBeUndefined();
    const f = load({ FLEET_REDIS_URL: 'redis://user:pw@10.0.0.5:6379/2' }).fleet;
    expect(f).toMatchObject({ name: 'ami2ban', hostId: 'pbx1.example.net', apply: true, publish: true, maxRetry: 0, findTime: 600, remoteRate: 1000, remoteBurst: 20000, streamMaxLen: 100_000, outbox: 100_000, resync: 300 });
    const s = load({ FLEET_REDIS_SENTINELS: '10.0.0.1:26379, [2001:db8::2]:26379', FLEET_REDIS_MASTER: 'voip' }).fleet;
    expect(s).toMatchObject({ url: undefined, master: 'voip', sentinels: [{ host: '10.0.0.1', port: 26379 }, { host: '2001:db8::2', port: 26379 }] });
    const withFile = load({ FLEET_REDIS_URL: 'rediss://redis.example.net:6380', FLEET_REDIS_PASSWORD_FILE: '/run/secrets/redis' }, { '/run/secrets/redis': 's3cret\n' }).fleet;
    expect(withFile?.password?.reveal()).toBe('s3cret');
  });

  it('bad values stop the start, naming the variable', () => {
    expect(problems({ FLEET_REDIS_URL: 'http://10.0.0.5' })[0]).toMatch(/^FLEET_REDIS_URL: not valid; expected redis:\/\//);
    expect(problems({ FLEET_REDIS_URL: 'redis://10.0.0.5', FLEET_NAME: 'a b' })[0]).toMatch(/^FLEET_NAME:/);
    expect(problems({ FLEET_REDIS_URL: 'redis://10.0.0.5', FLEET_HOST_ID: 'x'.repeat(65) })[0]).toMatch(/^FLEET_HOST_ID:/);
    expect(problems({ FLEET_REDIS_SENTINELS: '10.0.0.1' })[0]).toMatch(/^FLEET_REDIS_SENTINELS:/);
    expect(problems({ FLEET_REDIS_URL: 'redis://10.0.0.5', FLEET_REDIS_PASSWORD_FILE: '/nope' })[0]).toMatch(/^FLEET_REDIS_PASSWORD_FILE: cannot read "\/nope"/);
    expect(problems({ FLEET_REDIS_URL: 'redis://10.0.0.5', FLEET_MAXRETRY: '-1', FLEET_REMOTE_RATE: '0', FLEET_FINDTIME: 'soon' }).map((p) => p.split(':')[0])).toEqual([
      'FLEET_MAXRETRY',
      'FLEET_FINDTIME',
      'FLEET_REMOTE_RATE',
    ]);
    expect(problems({ FLEET_REDIS_URL: 'rediss://10.0.0.5', FLEET_REDIS_CA_FILE: '/nope' })[0]).toMatch(/^FLEET_REDIS_CA_FILE: cannot read "\/nope"/);
    expect(() => load({ FLEET_REDIS_URL: 'rediss://10.0.0.5', FLEET_REDIS_CA_FILE: '/ca' }, { '/ca': 'not a certificate' })).toThrow(/FLEET_REDIS_CA_FILE: "\/ca" holds no PEM certificate/);
    expect(problems({ FLEET_REDIS_URLL: 'redis://x' })[0]).toMatch(/^FLEET_REDIS_URLL: unknown variable \(did you mean FLEET_REDIS_URL\?\)/);
  });
});
