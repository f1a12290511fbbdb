// Everything that touches nftables, on the real kernel, in one file so that nothing else runs
// against the namespace's ruleset meanwhile (a test here flushes it).
import { type ChildProcess, execFileSync, spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { Nftables, NftablesError, loadBinding, tcpQuickAck } from '@ami2ban/nftables-napi';
import { type AddressInfo, connect, createServer } from 'node:net';
import { ControlClient } from '../src/control/client.js';
import { FakeAmiServer, eventBlocks } from '../src/demo/fake-ami-server.js';
import type { ExistingBan } from '../src/firewall/firewall.js';
import { NftablesFirewall } from '../src/firewall/nftables.js';
import type { RulesetOptions } from '../src/firewall/ruleset.js';
import { AddonRunner, CliRunner, type NftRunner, chooseRunner } from '../src/firewall/runner.js';
import { runCli, startCli } from './helpers/cli.js';
import { EXPECTED_BANS, fixture } from './helpers/fixtures.js';
import { type FreezableMount, freezableMount, smallTmpfs } from './helpers/filesystems.js';
import { assertPrivateNetns, nft, nftJson, setElements } from './helpers/kernel.js';
import { MemoryLogger } from './helpers/memory-logger.js';
import { BanStore } from '../src/store/store.js';

const TABLE = 'ami2ban_test';

beforeAll(() => {
  assertPrivateNetns();
});

describe('@ami2ban/nftables-napi', () => {
  it('is built (CI installs libnftables-dev) and is the backend chosen by default', () => {
    const loaded = loadBinding();
    expect('binding' in loaded ? 'built' : loaded.error.message).toBe('built');
    const { runner, reason } = chooseRunner('auto');
    expect(runner.backend).toBe('libnftables');
    expect(reason).toBe('libnftables addon loaded');
    runner.close();
  });

  it('without the addon, falls back to `nft -j -f -` and says why; NFT_BACKEND=libnftables refuses', () => {
    const missing = (): { error: Error } => ({ error: new Error('the libnftables addon is not built (test)') });
    const { runner, reason } = chooseRunner('auto', missing);
    expect(runner.backend).toBe('nft-cli');
    expect(reason).toContain('falling back to nft -j -f - because the libnftables addon is not built');
    expect(() => chooseRunner('libnftables', missing)).toThrow('not built');
    expect(chooseRunner('nft').runner.backend).toBe('nft-cli');
  });

  it('its install step names the packages to install when libnftables is missing, and does not fail', () => {
    const r = spawnSync(process.execPath, ['packages/nftables-napi/scripts/build.cjs'], {
      env: { ...process.env, PKG_CONFIG_LIBDIR: '/nonexistent', PKG_CONFIG_PATH: '' },
      encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('apt-get install -y libnftables-dev pkg-config');
  });

  it('runs JSON commands and returns parsed JSON output', async () => {
    const n = new Nftables();
    expect(await n.run({ nftables: [{ add: { table: { family: 'inet', name: 'napi_t' } } }] })).toBeNull();
    const listed = (await n.run({ nftables: [{ list: { table: { family: 'inet', name: 'napi_t' } } }] })) as { nftables: unknown[] };
    expect(listed.nftables).toContainEqual({ table: { family: 'inet', name: 'napi_t', handle: expect.any(Number) as number } });
    await n.run({ nftables: [{ delete: { table: { family: 'inet', name: 'napi_t' } } }] });
    n.close();
  });

  it('rejects with libnftables\' own message, and goes on working', async () => {
    const n = new Nftables();
    const err: unknown = await n.run({ nftables: [{ list: { table: { family: 'inet', name: 'no_such_table' } } }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NftablesError);
    expect((err as NftablesError).message).toContain('No such file or directory');
    expect((err as NftablesError).code).toBe('NFT_COMMAND_FAILED');
    const bad: unknown = await n.run({ nftables: [{ add: { nonsense: {} } }] }).catch((e: unknown) => e);
    expect((bad as Error).message).toMatch(/Error/);
    expect(await n.run({ nftables: [{ list: { tables: null } }] })).toMatchObject({ nftables: expect.any(Array) as unknown[] });
    n.close();
  });

  it('checks its arguments before crossing into native code', () => {
    const n = new Nftables();
    expect(() => n.run('add table inet x' as never)).toThrow(TypeError);
    expect(() => n.run({ nftables: 'x' } as never)).toThrow(TypeError);
    expect(() => n.run({ nftables: [1] } as never)).toThrow(TypeError);
    n.close();
  });

  it('sets TCP_QUICKACK on a connected TCP socket, and says false for anything else', async () => {
    const quickAck = tcpQuickAck();
    if (quickAck === undefined) throw new Error('the addon has no quickAck');
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const client = connect((server.address() as AddressInfo).port, '127.0.0.1');
    await once(client, 'connect');
    const fd = (client as unknown as { _handle: { fd: number } })._handle.fd;
    expect(quickAck(fd)).toBe(true);
    const udp = createSocket('udp4');
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
    const udpFd = (udp as unknown as { _handle: { fd: number } })._handle.fd;
    expect(quickAck(udpFd)).toBe(false);
    expect(quickAck(-1)).toBe(false);
    expect(tcpQuickAck(() => ({ error: new Error('not built') }))).toBeUndefined();
    udp.close();
    client.destroy();
    server.close();
  });

  it('serializes calls: many in flight complete in order', async () => {
    const n = new Nftables();
    await n.run({ nftables: [{ add: { table: { family: 'inet', name: 'napi_s' } } }] });
    await n.run({ nftables: [{ add: { set: { family: 'inet', table: 'napi_s', name: 's', type: 'ipv4_addr' } } }] });
    const calls = Array.from({ length: 50 }, (_, i) =>
      n.run({ nftables: [{ add: { element: { family: 'inet', table: 'napi_s', name: 's', elem: [`10.0.0.${i}`] } } }] }),
    );
    await Promise.all(calls);
    expect(setElements('napi_s', 's').size).toBe(50);
    await n.run({ nftables: [{ delete: { table: { family: 'inet', name: 'napi_s' } } }] });
    n.close();
  });
});

describe('@ami2ban/nftables-napi: element transactions by netlink', () => {
  const T = 'napi_nl';
  const el = (val: string, timeout?: number): unknown => (timeout === undefined ? val : { elem: { val, timeout } });
  const cmd = (verb: 'add' | 'delete', set: string, elems: unknown[], table = T): object => ({ [verb]: { element: { family: 'inet', table, name: set, elem: elems } } });
  /** The same binding without its netlink call: every transaction goes through libnftables. */
  const libnftablesOnly = (): Nftables => {
    const loaded = loadBinding();
    if (!('binding' in loaded)) throw loaded.error;
    const Real = loaded.binding.Context;
    return new Nftables({
      Context: class {
        private readonly ctx = new Real();
        run(json: string): Promise<string> {
          return this.ctx.run(json);
        }
        close(): void {
          this.ctx.close();
        }
      },
    });
  };
  const tables = (...names: string[]): void => {
    for (const t of names) {
      nft('add', 'table', 'inet', t);
      nft('add', 'set', 'inet', t, 'a4', '{ type ipv4_addr; flags timeout; }');
      nft('add', 'set', 'inet', t, 'a6', '{ type ipv6_addr; flags timeout; }');
      nft('add', 'set', 'inet', t, 'n4', '{ type ipv4_addr; flags interval, timeout; }');
      nft('add', 'set', 'inet', t, 'plain', '{ type ipv4_addr; }');
    }
  };

  beforeEach(() => {
    nft('flush', 'ruleset');
  });

  it('adds, re-times and deletes addresses in plain sets with the same result as libnftables, without it', async () => {
    tables(T, 'napi_ref');
    const fast = new Nftables();
    const ref = libnftablesOnly();
    const batches = (table: string): object[][] => [
      [cmd('add', 'a4', [el('192.0.2.1', 600), el('192.0.2.2'), el('198.51.100.255', 86_400)], table), cmd('add', 'a6', [el('2001:db8::1', 60), el('::ffff:192.0.2.9', 60), el('2001:DB8:0:0:1:2:3:4', 3600), el('::')], table)],
      // A new timeout: add (so that the delete finds it), delete, add.
      [cmd('add', 'a4', [el('192.0.2.1', 1200)], table), cmd('delete', 'a4', ['192.0.2.1'], table), cmd('add', 'a4', [el('192.0.2.1', 1200)], table)],
      [cmd('delete', 'a4', ['192.0.2.2'], table), cmd('add', 'plain', ['203.0.113.7'], table)],
    ];
    for (const b of batches(T)) expect(await fast.run({ nftables: b })).toBeNull();
    for (const b of batches('napi_ref')) await ref.run({ nftables: b });
    expect(fast.fastPath).toEqual({ committed: 3, read: 0, declined: 0 });
    expect(ref.fastPath.committed).toBe(0);
    for (const set of ['a4', 'a6', 'plain']) {
      const rounded = (m: Map<string, number>): [string, number][] => [...m].map(([ip, left]) => [ip, Math.round(left / 10)]);
      expect(rounded(setElements(T, set)), set).toEqual(rounded(setElements('napi_ref', set)));
    }
    expect([...setElements(T, 'a4').keys()].sort()).toEqual(['192.0.2.1', '198.51.100.255']);
    expect(setElements(T, 'a4').get('192.0.2.1')).toBeGreaterThan(1100);
    expect([...setElements(T, 'a6').keys()].sort()).toEqual(['2001:db8::1', '2001:db8::1:2:3:4', '::', '::ffff:192.0.2.9']);
    fast.close();
    ref.close();
  });

  it('leaves to libnftables what is not a plain address element, and a refused transaction is told in its words with nothing applied', async () => {
    tables(T);
    const n = new Nftables();
    // An interval set, a network, a table: libnftables.
    await n.run({ nftables: [cmd('add', 'n4', [el('192.0.2.1', 600)])] });
    await n.run({ nftables: [cmd('add', 'a4', [{ elem: { val: { prefix: { addr: '10.0.0.0', len: 8 } }, timeout: 60 } }])] }).catch(() => undefined);
    expect(setElements(T, 'n4').has('192.0.2.1')).toBe(true);
    expect(n.fastPath.committed).toBe(0);
    // One failing command makes the whole transaction fail: the add before it is not applied.
    const missing: unknown = await n.run({ nftables: [cmd('add', 'a4', [el('192.0.2.50', 60)]), cmd('delete', 'a4', ['192.0.2.51'])] }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(NftablesError);
    expect((missing as Error).message).toContain('No such file or directory');
    expect(setElements(T, 'a4').has('192.0.2.50')).toBe(false);
    // A timeout the kernel refuses, a set that is not there.
    const tooLong: unknown = await n.run({ nftables: [cmd('add', 'a4', [el('192.0.2.52', 2 ** 39)])] }).catch((e: unknown) => e);
    expect((tooLong as Error).message).toMatch(/Error: .*(range|invalid|Invalid)/i);
    const noSet: unknown = await n.run({ nftables: [cmd('add', 'nope', [el('192.0.2.53', 60)])] }).catch((e: unknown) => e);
    expect((noSet as Error).message).toContain('No such file or directory');
    // Timeouts on a set without the timeout flag: refused as libnftables refuses them.
    const untimed: unknown = await n.run({ nftables: [cmd('add', 'plain', [el('192.0.2.54', 60)])] }).catch((e: unknown) => e);
    expect(untimed).toBeInstanceOf(NftablesError);
    // And it goes on working by netlink.
    await n.run({ nftables: [cmd('add', 'a4', [el('192.0.2.55', 60)])] });
    expect(setElements(T, 'a4').has('192.0.2.55')).toBe(true);
    expect(n.fastPath.committed).toBe(1);
    n.close();
  });

  it('notices a set replaced by an interval set of the same name (its knowledge of sets is dropped by any other command)', async () => {
    tables(T);
    const n = new Nftables();
    await n.run({ nftables: [cmd('add', 'a4', [el('192.0.2.1', 60)])] });
    expect(n.fastPath.committed).toBe(1);
    await n.run({ nftables: [{ delete: { set: { family: 'inet', table: T, name: 'a4' } } }, { add: { set: { family: 'inet', table: T, name: 'a4', type: 'ipv4_addr', flags: ['interval', 'timeout'] } } }] });
    await n.run({ nftables: [cmd('add', 'a4', [el('192.0.2.0', 60)])] });
    expect(n.fastPath).toEqual({ committed: 1, read: 0, declined: 1 });
    expect(nft('list', 'set', 'inet', T, 'a4')).toContain('192.0.2.0');
    n.close();
  });

  it('commits large batches by netlink too: a command split over messages, a batch bigger than the default send buffer, atomically', async () => {
    tables(T);
    const n = new Nftables();
    const addr = (i: number): string => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
    // In the kernel, each looked up by its key (a listing right after a large insert may race the
    // kernel resizing the set: setElements lists again then).
    const absent = (from: number, count: number): number => Array.from({ length: count }, (_, i) => addr(from + i)).filter((ip) => n.hasElement('inet', T, 'a4', ip) !== true).length;
    await n.run({ nftables: [cmd('add', 'a4', Array.from({ length: 3_000 }, (_, i) => el(addr(i), 600)))] });
    expect(absent(0, 3_000)).toBe(0);
    // 30 000 elements: ~1.3 MB in one datagram (the default send buffer holds ~200 kB).
    await n.run({ nftables: [cmd('add', 'a4', Array.from({ length: 30_000 }, (_, i) => el(addr(10_000 + i), 600)))] });
    expect(absent(0, 3_000) + absent(10_000, 30_000)).toBe(0);
    expect(setElements(T, 'a4').size).toBe(33_000);
    // (The lookups are reads by netlink.)
    expect(n.fastPath).toEqual({ committed: 2, read: 36_000, declined: 0 });
    // One bad element among 2 500 (its delete finds nothing): none of the batch is applied.
    const bad: unknown = await n
      .run({ nftables: [cmd('add', 'a4', Array.from({ length: 2_500 }, (_, i) => el(addr(100_000 + i), 600))), cmd('delete', 'a4', ['192.0.2.99'])] })
      .catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(NftablesError);
    expect(absent(100_000, 2_500)).toBe(2_500);
    expect(setElements(T, 'a4').size).toBe(33_000);
    n.close();
  });

  it('answers `list set` of an address set and `list counter` by netlink with the JSON libnftables gives, and leaves it the rest', async () => {
    tables(T);
    nft('add', 'counter', 'inet', T, 'c');
    nft('add', 'chain', 'inet', T, 'ch', '{ type filter hook prerouting priority raw; }');
    nft('add', 'rule', 'inet', T, 'ch', 'ip', 'saddr', '@a4', 'counter', 'name', 'c', 'drop');
    const n = new Nftables();
    const ref = libnftablesOnly();
    const many = Array.from({ length: 5_000 }, (_, i) => el(`10.0.${i >> 8}.${i & 255}`, 3600));
    await n.run({ nftables: [cmd('add', 'a4', [...many, el('192.0.2.1')])] });
    const v6 = ['2001:db8::1', '::ffff:192.0.2.9', '::1', '::', '1:0:0:2::', 'fe80::1:0:0:5', '2001:db8:1:2:3:4:5:6', '::0.0.0.1'];
    await n.run({ nftables: [cmd('add', 'a6', v6.map((v, i) => (i % 2 === 0 ? el(v, 600) : v)))] });
    await n.run({ nftables: [cmd('add', 'plain', ['203.0.113.7'])] });
    // Packets counted by the rule: datagrams from a banned source, dropped.
    await n.run({ nftables: [cmd('add', 'a4', [el('127.0.0.9', 600)])] });
    const probe = createSocket('udp4');
    await new Promise<void>((r) => probe.bind(0, '127.0.0.9', r));
    for (let i = 0; i < 3; i++) {
      await new Promise<void>((r) => {
        probe.send('x', 9, '127.0.0.1', () => {
          r();
        });
      });
    }
    probe.close();
    const list = (what: string, name: string): { nftables: object[] } => ({ nftables: [{ list: { [what]: { family: 'inet', table: T, name } } }] });
    // Elements in any order, the rest equal; expiries (seconds left, read a moment apart) within 5 s.
    const expiries = new Map<string, number[]>();
    const norm = (out: unknown): unknown => {
      const items = (out as { nftables: Record<string, Record<string, unknown>>[] }).nftables.filter((i) => i.set !== undefined || i.counter !== undefined);
      return items.map((i) => {
        const o = { ...(i.set ?? i.counter) };
        const one = (e: unknown): string => {
          const inner = (e as { elem?: { val?: unknown; expires?: number } } | null)?.elem;
          if (inner?.expires === undefined) return JSON.stringify(e);
          const key = JSON.stringify(inner.val);
          expiries.set(key, [...(expiries.get(key) ?? []), inner.expires]);
          return JSON.stringify({ ...inner, expires: 'some' });
        };
        if (Array.isArray(o.elem)) o.elem = (o.elem as unknown[]).map(one).sort();
        return o;
      });
    };
    for (const [what, name] of [['set', 'a4'], ['set', 'a6'], ['set', 'plain'], ['counter', 'c']] as const) {
      const before = n.fastPath.read;
      const mine = await n.run(list(what, name));
      expect(n.fastPath.read, `${what} ${name} by netlink`).toBe(before + 1);
      expect(norm(mine), `${what} ${name}`).toEqual(norm(await ref.run(list(what, name))));
    }
    for (const [val, [a, b]] of expiries) expect(Math.abs((a ?? 0) - (b ?? 0)), val).toBeLessThanOrEqual(5);
    expect(expiries.size).toBeGreaterThan(5_000);
    // An interval set, a missing set or counter: libnftables (and its message).
    nft('add', 'element', 'inet', T, 'n4', '{ 198.51.100.0/24 }');
    expect(norm(await n.run(list('set', 'n4')))).toEqual(norm(await ref.run(list('set', 'n4'))));
    const missing: unknown = await n.run(list('set', 'nope')).catch((e: unknown) => e);
    expect((missing as Error).message).toContain('No such file or directory');
    const noCounter: unknown = await n.run(list('counter', 'nope')).catch((e: unknown) => e);
    expect(noCounter).toBeInstanceOf(NftablesError);
    expect(n.fastPath.read).toBe(4);
    expect(((await n.run(list('counter', 'c'))) as { nftables: { counter: { packets: number } }[] }).nftables[0]?.counter.packets).toBe(3);
    n.close();
    ref.close();
  });

  it('reads table names and a chain\'s rule comments without listing elements, as libnftables would list them', () => {
    tables(T, 'napi_other');
    nft('add', 'table', 'ip', 'napi_v4only');
    nft('add', 'chain', 'inet', T, 'ch', '{ type filter hook prerouting priority raw; }');
    nft('add', 'rule', 'inet', T, 'ch', 'ip', 'saddr', '@a4', 'drop', 'comment', '"first one"');
    nft('add', 'rule', 'inet', T, 'ch', 'ip6', 'saddr', '@a6', 'drop');
    nft('add', 'rule', 'inet', T, 'ch', 'counter', 'comment', '"third"');
    nft('add', 'chain', 'inet', T, 'empty');
    const n = new Nftables();
    expect(n.tableNames('inet')?.sort()).toEqual([T, 'napi_other']);
    expect(n.tableNames('ip')).toEqual(['napi_v4only']);
    expect(n.tableNames('bridge-or-not')).toBeUndefined();
    expect(n.ruleComments('inet', T, 'ch')).toEqual(['first one', '', 'third']);
    const listed = nftJson('list', 'chain', 'inet', T, 'ch') as { nftables: { rule?: { comment?: string } }[] };
    expect(listed.nftables.filter((i) => i.rule !== undefined).map((i) => i.rule?.comment ?? '')).toEqual(['first one', '', 'third']);
    expect(n.ruleComments('inet', T, 'empty')).toEqual([]);
    expect(n.ruleComments('inet', T, 'nope')).toBeNull();
    expect(n.ruleComments('inet', 'no_such_table', 'ch')).toBeNull();
    expect(n.fastPath.declined).toBe(0);
    n.close();
  });

  it('asks the kernel for one element by its key: present, absent, or no such set', () => {
    tables(T);
    nft('add', 'element', 'inet', T, 'a4', '{ 192.0.2.7 timeout 1m }');
    nft('add', 'element', 'inet', T, 'a6', '{ 2001:db8::7 }');
    const n = new Nftables();
    expect(n.hasElement('inet', T, 'a4', '192.0.2.7')).toBe(true);
    expect(n.hasElement('inet', T, 'a4', '192.0.2.8')).toBe(false);
    expect(n.hasElement('inet', T, 'a6', '2001:db8::7')).toBe(true);
    expect(n.hasElement('inet', T, 'a6', '2001:db8::8')).toBe(false);
    expect(n.hasElement('inet', T, 'nope', '192.0.2.7')).toBe(false);
    expect(n.hasElement('inet', 'no_such_table', 'a4', '192.0.2.7')).toBe(false);
    expect(n.hasElement('inet', T, 'a4', 'not an address')).toBeUndefined();
    expect(n.hasElement('bridge-or-not', T, 'a4', '192.0.2.7')).toBeUndefined();
    nft('delete', 'element', 'inet', T, 'a4', '{ 192.0.2.7 }');
    expect(n.hasElement('inet', T, 'a4', '192.0.2.7')).toBe(false);
    n.close();
  });

  it('keeps the order of transactions when one is in flight on a worker', async () => {
    tables(T);
    const n = new Nftables();
    const listing = n.run({ nftables: [{ list: { set: { family: 'inet', table: T, name: 'a4' } } }] });
    const add = n.run({ nftables: [cmd('add', 'a4', [el('192.0.2.1', 60)])] });
    const del = n.run({ nftables: [cmd('delete', 'a4', ['192.0.2.1'])] });
    const listed = (await listing) as { nftables: { set?: { elem?: unknown[] } }[] };
    expect(listed.nftables.find((i) => i.set !== undefined)?.set?.elem).toBeUndefined();
    await Promise.all([add, del]);
    expect(setElements(T, 'a4').size).toBe(0);
    n.close();
  });
});

const BACKENDS: [string, () => NftRunner][] = [
  ['libnftables addon', () => new AddonRunner()],
  ['nft -j -f -', () => new CliRunner()],
];

const DROP: RulesetOptions = { table: TABLE, blockType: 'drop', ports: [] };

function firewall(
  runner: NftRunner,
  log = new MemoryLogger(),
  options: Partial<RulesetOptions> & { maxBatch?: number; bansInForce?: () => Iterable<ExistingBan> } = {},
): NftablesFirewall {
  return new NftablesFirewall({ ...DROP, ...options, runner, logger: log, cleanupOnExit: false, checkIntervalMs: 0 });
}

describe.each(BACKENDS)('nftables firewall contract: %s', (_name, makeRunner) => {
  beforeEach(() => {
    nft('flush', 'ruleset');
  });

  it('creates its table, sets, counters and one rule per set in a raw-priority prerouting chain', async () => {
    const fw = firewall(makeRunner());
    expect(await fw.start()).toEqual([]);
    const text = nft('list', 'table', 'inet', TABLE);
    expect(text).toContain('type filter hook prerouting priority raw; policy accept;');
    expect(text).toContain('ip saddr @ipv4_addr counter name "banned_ipv4" drop');
    expect(text).toContain('ip6 saddr @ipv6_addr counter name "banned_ipv6" drop');
    expect(text).toMatch(/set ipv4_addr \{\s+type ipv4_addr\s+flags timeout/);
    await fw.stop();
    expect(nft('list', 'tables')).toContain(`table inet ${TABLE}`);
  });

  it('an uncommented rule an operator added to our chain is not taken for a change of ours: a restart leaves the rules alone', async () => {
    const fw = firewall(makeRunner());
    await fw.start();
    await fw.stop();
    nft('add', 'rule', 'inet', TABLE, 'prerouting', 'tcp', 'dport', '4569', 'counter');
    const handles = (): string[] => [...nft('-a', 'list', 'chain', 'inet', TABLE, 'prerouting').matchAll(/# handle (\d+)/g)].map((m) => m[1] ?? '');
    const before = handles();
    const again = firewall(makeRunner());
    await again.start();
    expect(handles()).toEqual(before);
    expect(nft('list', 'chain', 'inet', TABLE, 'prerouting')).toContain('tcp dport 4569 counter');
    await again.stop();
  });

  it('bans v4 and v6 with timeouts, permanent bans without, lists remaining time, extends and unbans', async () => {
    const fw = firewall(makeRunner());
    await fw.start();
    await Promise.all([fw.ban('192.0.2.1', 'ipv4', 3600), fw.ban('2001:db8::1', 'ipv6', 600), fw.ban('192.0.2.2', 'ipv4', Infinity)]);
    const v4 = setElements(TABLE, 'ipv4_addr');
    const v6 = setElements(TABLE, 'ipv6_addr');
    expect(v4.get('192.0.2.1')).toBeGreaterThan(3590);
    expect(v4.get('192.0.2.1')).toBeLessThanOrEqual(3600);
    expect(v4.get('192.0.2.2')).toBe(Infinity);
    expect(v6.get('2001:db8::1')).toBeGreaterThan(590);
    await fw.unban('192.0.2.1', 'ipv4');
    await fw.unban('2001:db8::1', 'ipv6');
    expect([...setElements(TABLE, 'ipv4_addr').keys()]).toEqual(['192.0.2.2']);
    expect(setElements(TABLE, 'ipv6_addr').size).toBe(0);
    await fw.stop();
  });

  it('a new ban is one add; a replacing ban is add, delete, add in one transaction: its timeout holds whether an element was there or not, on every kernel', async () => {
    // Newer kernels refresh a re-added element's timeout by themselves, so the timeout alone cannot
    // show a missing delete: the transaction sent to the kernel is checked too.
    const sent: string[] = [];
    const inner = makeRunner();
    const recording: NftRunner = {
      backend: inner.backend,
      run: (commands) => {
        sent.push(JSON.stringify(commands));
        return inner.run(commands);
      },
      close: () => {
        inner.close();
      },
    };
    const fw = firewall(recording);
    await fw.start();
    const verbs = (): (string | undefined)[] => (JSON.parse(sent[0] ?? '{}') as { nftables: Record<string, unknown>[] }).nftables.map((c) => Object.keys(c)[0]);
    sent.length = 0;
    await fw.ban('192.0.2.1', 'ipv4', 3600);
    expect(verbs()).toEqual(['add']);
    expect(setElements(TABLE, 'ipv4_addr').get('192.0.2.1')).toBeGreaterThan(3590);
    sent.length = 0;
    await fw.ban('192.0.2.1', 'ipv4', 7200, true);
    expect(sent.length).toBe(1);
    expect(verbs()).toEqual(['add', 'delete', 'add']);
    expect(setElements(TABLE, 'ipv4_addr').get('192.0.2.1')).toBeGreaterThan(7190);
    // Shorter (--replace): the timeout goes down too.
    await fw.ban('192.0.2.1', 'ipv4', 60, true);
    expect(setElements(TABLE, 'ipv4_addr').get('192.0.2.1')).toBeLessThanOrEqual(60);
    // An element removed behind our back: replacing it still works.
    nft('delete', 'element', 'inet', TABLE, 'ipv4_addr', '{ 192.0.2.1 }');
    await fw.ban('192.0.2.1', 'ipv4', 600, true);
    expect(setElements(TABLE, 'ipv4_addr').get('192.0.2.1')).toBeGreaterThan(590);
    await fw.stop();
  });

  it('one bad element does not block the others of its batch; the failure is logged with the element', async () => {
    const log = new MemoryLogger();
    const fw = firewall(makeRunner(), log);
    await fw.start();
    const results = await Promise.allSettled([
      fw.ban('192.0.2.10', 'ipv4', 60),
      fw.unban('192.0.2.99', 'ipv4'), // not in the set: the kernel refuses
      fw.ban('192.0.2.11', 'ipv4', 60),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect([...setElements(TABLE, 'ipv4_addr').keys()].sort()).toEqual(['192.0.2.10', '192.0.2.11']);
    const failure = log.lines.find((l) => l.message === 'nftables element failed');
    expect(failure?.meta).toMatchObject({ op: 'delete', ip: '192.0.2.99' });
    expect(String(failure?.meta.error)).toContain('No such file or directory');
    // [.10, .99, .11] fails, then [.10, .99] fails; .10, .99 and .11 go alone.
    expect(fw.stats.failedTransactions).toBe(2);
    await fw.stop();
  });

  it('a chunk with one bad element is split by halves, not retried element by element', async () => {
    const fw = firewall(makeRunner(), new MemoryLogger(), { maxBatch: 512 });
    await fw.start();
    const ops: Promise<void>[] = [];
    for (let i = 0; i < 511; i++) {
      if (i === 300) ops.push(fw.unban('192.0.2.99', 'ipv4')); // not in the set: the kernel refuses
      ops.push(fw.ban(`10.9.${i >> 8}.${i & 255}`, 'ipv4', 60));
    }
    const results = await Promise.allSettled(ops);
    expect(results.filter((r) => r.status === 'rejected').length).toBe(1);
    expect(setElements(TABLE, 'ipv4_addr').size).toBe(511);
    // One failed transaction per halving level (9 for 512 elements); the good halves commit in at most 10.
    expect(fw.stats.failedTransactions).toBe(9);
    expect(fw.stats.transactions).toBeLessThanOrEqual(10);
    await fw.stop();
  });

  it('adopts every element even when a listing of the set gives some twice and misses as many (a dump racing the kernel resizing the set)', async () => {
    const fw1 = firewall(makeRunner());
    await fw1.start();
    await Promise.all(Array.from({ length: 1_000 }, (_, i) => fw1.ban(`10.7.${i >> 8}.${i & 255}`, 'ipv4', 3600)));
    await fw1.stop();
    // The first listing of the address set gives 300 elements twice and misses 300, as a dump
    // racing the kernel's resize of the set does.
    const real = makeRunner();
    let listings = 0;
    const lossy: NftRunner = {
      backend: real.backend,
      close: () => { real.close(); },
      run: async (commands) => {
        const out = await real.run(commands);
        const list = (commands.nftables[0] as { list?: { set?: { name?: string } } }).list;
        if (list?.set?.name !== 'ipv4_addr' || listings++ > 0) return out;
        const items = (out as { nftables: { set?: { elem?: unknown[] } }[] }).nftables;
        return { nftables: items.map((i) => (i.set === undefined ? i : { set: { ...i.set, elem: [...(i.set.elem ?? []).slice(300), ...(i.set.elem ?? []).slice(300, 600)] } })) };
      },
    };
    const fw2 = firewall(lossy);
    const adopted = await fw2.start();
    expect(listings).toBe(2);
    expect(new Set(adopted.map((b) => b.ip)).size).toBe(1_000);
    // Each once: the listings are joined, not added up.
    expect(adopted.length).toBe(1_000);
    await fw2.stop();
  });

  it('starts idempotently over a table with 10 000 elements: nothing flushed, everything adopted', async () => {
    const fw1 = firewall(makeRunner());
    await fw1.start();
    const bans: Promise<void>[] = [];
    for (let i = 0; i < 10_000; i++) bans.push(fw1.ban(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, 'ipv4', 3600));
    bans.push(fw1.ban('2001:db8::7', 'ipv6', Infinity));
    await Promise.all(bans);
    await fw1.stop();
    const rulesBefore = nft('-a', 'list', 'chain', 'inet', TABLE, 'prerouting');

    const fw2 = firewall(makeRunner());
    const adopted = await fw2.start();
    expect(adopted.length).toBe(10_001);
    const now = Date.now();
    const v4 = adopted.filter((b) => b.family === 'ipv4');
    expect(v4.every((b) => b.expiresAt > now + 3500_000 && b.expiresAt <= now + 3600_000)).toBe(true);
    expect(adopted.find((b) => b.family === 'ipv6')).toEqual({ ip: '2001:db8::7', family: 'ipv6', expiresAt: Infinity });
    expect(setElements(TABLE, 'ipv4_addr').size).toBe(10_000);
    // The rules were current: not even rewritten (same handles).
    expect(nft('-a', 'list', 'chain', 'inet', TABLE, 'prerouting')).toBe(rulesBefore);
    await fw2.stop();
  });

  it('recreates its table after `nft flush ruleset` and re-applies the bans in force, as their owner lists them', async () => {
    const log = new MemoryLogger();
    const owner: ExistingBan[] = [];
    const fw = firewall(makeRunner(), log, { bansInForce: () => owner });
    await fw.start();
    await fw.ban('192.0.2.20', 'ipv4', 600);
    await fw.ban('2001:db8::20', 'ipv6', Infinity);
    owner.push({ ip: '192.0.2.20', family: 'ipv4', expiresAt: Date.now() + 600_000 }, { ip: '2001:db8::20', family: 'ipv6', expiresAt: Infinity });
    nft('flush', 'ruleset');
    expect(await fw.repairIfBroken('test')).toBe(true);
    expect(setElements(TABLE, 'ipv4_addr').get('192.0.2.20')).toBeGreaterThan(590);
    expect(setElements(TABLE, 'ipv6_addr').get('2001:db8::20')).toBe(Infinity);
    expect(nft('list', 'chain', 'inet', TABLE, 'prerouting')).toContain('drop');
    expect(log.messages('warn')).toContain('nftables table or chain missing (ruleset flushed?): recreating and re-adding active bans');
    expect(await fw.repairIfBroken('test')).toBe(false);
    // A ban after a flush nobody noticed yet: the failed transaction triggers the repair.
    nft('flush', 'ruleset');
    owner.push({ ip: '192.0.2.21', family: 'ipv4', expiresAt: Date.now() + 600_000 });
    await fw.ban('192.0.2.21', 'ipv4', 600);
    expect([...setElements(TABLE, 'ipv4_addr').keys()].sort()).toEqual(['192.0.2.20', '192.0.2.21']);
    await fw.stop();
  });

  it('the real kernel refuses a timeout past its limit: the ban is rejected with its message, and one second less is accepted', async () => {
    const fw = firewall(makeRunner());
    await fw.start();
    await expect(fw.ban('192.0.2.50', 'ipv4', 18_446_744_074)).rejects.toThrow(/Numerical result out of range/);
    await fw.ban('192.0.2.51', 'ipv4', 18_446_744_073);
    expect([...setElements(TABLE, 'ipv4_addr').keys()]).toEqual(['192.0.2.51']);
    await fw.stop();
  });

  it('banMany: one answer for many bans, the kernel\'s refusal of one told for that one, the others in force', async () => {
    const fw = firewall(makeRunner());
    await fw.start();
    await fw.ban('192.0.2.62', 'ipv4', 60);
    const answers = await fw.banMany([
      { ip: '192.0.2.60', family: 'ipv4', seconds: 60, replace: false },
      { ip: '192.0.2.61', family: 'ipv4', seconds: 18_446_744_074, replace: false }, // past the kernel's limit
      { ip: '192.0.2.62', family: 'ipv4', seconds: 120, replace: true },
      { ip: '2001:db8::60', family: 'ipv6', seconds: 60, replace: false },
    ]);
    expect(answers.map((a) => a === null)).toEqual([true, false, true, true]);
    expect(answers[1]).toMatch(/192\.0\.2\.61: .*Numerical result out of range/);
    const v4 = setElements(TABLE, 'ipv4_addr');
    expect([...v4.keys()].sort()).toEqual(['192.0.2.60', '192.0.2.62']);
    // Replaced: the new, longer timeout holds (what is left of 120 s, not of 60 s).
    expect(v4.get('192.0.2.62')).toBeGreaterThan(100);
    expect([...setElements(TABLE, 'ipv6_addr').keys()]).toEqual(['2001:db8::60']);
    expect(await fw.banMany([])).toEqual([]);
    await fw.stop();
  });

  it("refuses a table of that name that it did not make, and leaves it untouched (NFT_TABLE=filter)", async () => {
    nft('add', 'table', 'inet', 'filter');
    nft('add', 'chain', 'inet', 'filter', 'input', '{ type filter hook input priority 0; policy accept; }');
    nft('add', 'rule', 'inet', 'filter', 'input', 'tcp', 'dport', '22', 'accept');
    const before = nft('list', 'table', 'inet', 'filter');
    const fw = new NftablesFirewall({ ...DROP, table: 'filter', runner: makeRunner(), logger: new MemoryLogger(), cleanupOnExit: false, checkIntervalMs: 0 });
    await expect(fw.start()).rejects.toThrow('table inet filter exists and was not made by ami2ban');
    expect(nft('list', 'table', 'inet', 'filter')).toBe(before);
    // Our own table from an earlier start is taken up again.
    const ours = firewall(makeRunner());
    await ours.start();
    await ours.ban('192.0.2.40', 'ipv4', 60);
    await ours.stop();
    const again = firewall(makeRunner());
    expect((await again.start()).map((b) => b.ip)).toEqual(['192.0.2.40']);
    await again.stop();
  });

  it('the periodic check notices a flushed ruleset at once, and rules deleted by hand at its full listing', async () => {
    const log = new MemoryLogger();
    const owner: ExistingBan[] = [{ ip: '192.0.2.60', family: 'ipv4', expiresAt: Date.now() + 600_000 }];
    const fw = new NftablesFirewall({ ...DROP, runner: makeRunner(), observerRunner: makeRunner(), logger: log, cleanupOnExit: false, checkIntervalMs: 20, bansInForce: () => owner });
    await fw.start();
    try {
      await fw.ban('192.0.2.60', 'ipv4', 600);
      nft('flush', 'ruleset');
      await vi.waitUntil(() => { try { return setElements(TABLE, 'ipv4_addr').has('192.0.2.60'); } catch { return false; } }, { timeout: 3000, interval: 10 });
      // The probe set is not a ban set: nothing in it is adopted or listed as a ban.
      expect([...setElements(TABLE, 'ipv4_addr').keys()]).toEqual(['192.0.2.60']);
      nft('flush', 'chain', 'inet', TABLE, 'prerouting');
      await vi.waitUntil(() => nft('list', 'chain', 'inet', TABLE, 'prerouting').includes('drop'), { timeout: 3000, interval: 20 });
      // One repair per breakage: checks never overlap, however slow a repair is under load.
      expect(log.messages('warn').filter((m) => m.startsWith('nftables table or chain missing')).length).toBe(2);
    } finally {
      // A firewall left running would rebuild this table under the next tests.
      await fw.stop();
    }
  });

  it('bans networks in interval sets with timeouts beside the address sets: listed back at start, extended, lifted', async () => {
    const fw = firewall(makeRunner());
    await fw.start();
    await fw.ban('198.51.100.0/24', 'ipv4', 600);
    await fw.ban('2001:db8:1:2::/64', 'ipv6', 600);
    await fw.ban('10.0.0.0/8', 'ipv4', Number.POSITIVE_INFINITY);
    await fw.ban('198.51.100.7', 'ipv4', 600);
    expect([...setElements(TABLE, 'ipv4_net').keys()].sort()).toEqual(['10.0.0.0/8', '198.51.100.0/24']);
    expect(setElements(TABLE, 'ipv4_net').get('198.51.100.0/24')).toBeGreaterThan(590);
    expect(setElements(TABLE, 'ipv6_net').get('2001:db8:1:2::/64')).toBeGreaterThan(590);
    expect(setElements(TABLE, 'ipv4_net').get('10.0.0.0/8')).toBe(Infinity);
    expect([...setElements(TABLE, 'ipv4_addr').keys()]).toEqual(['198.51.100.7']);
    // a replacing ban of a network sets its new timeout (add, delete, add on an interval set)
    await fw.ban('198.51.100.0/24', 'ipv4', 60, true);
    expect(setElements(TABLE, 'ipv4_net').get('198.51.100.0/24')).toBeLessThanOrEqual(60);
    await fw.stop();
    const again = firewall(makeRunner());
    expect((await again.start()).map((b) => b.ip).sort()).toEqual(['10.0.0.0/8', '198.51.100.0/24', '198.51.100.7', '2001:db8:1:2::/64']);
    await again.unban('2001:db8:1:2::/64', 'ipv6');
    await again.unban('10.0.0.0/8', 'ipv4');
    expect([...setElements(TABLE, 'ipv6_net').keys()]).toEqual([]);
    expect([...setElements(TABLE, 'ipv4_net').keys()]).toEqual(['198.51.100.0/24']);
    await again.stop();
  });

  it('rules made from other settings are replaced at start', async () => {
    const fw1 = firewall(makeRunner());
    await fw1.start();
    await fw1.stop();
    const fw2 = firewall(makeRunner(), new MemoryLogger(), { ports: [{ protocol: 'udp', ports: [5060] }] });
    await fw2.start();
    const text = nft('list', 'chain', 'inet', TABLE, 'prerouting');
    expect(text).toContain('ip saddr @ipv4_addr udp dport 5060 counter name "banned_ipv4" drop');
    expect(text).toContain('ip6 saddr @ipv6_net udp dport 5060 counter name "banned_ipv6" drop');
    // addresses and networks, v4 and v6
    expect(text.match(/ saddr @/g)?.length).toBe(4);
    await fw2.stop();
  });

  it('reject mode uses an input chain at filter - 1, replacing the drop chain; NFT_PORTS limits the rule', async () => {
    const fw1 = firewall(makeRunner());
    await fw1.start();
    await fw1.ban('192.0.2.30', 'ipv4', 600);
    await fw1.stop();
    const fw2 = firewall(makeRunner(), new MemoryLogger(), {
      blockType: 'reject',
      ports: [{ protocol: 'udp', ports: [5060, [10000, 20000]] }],
    });
    await fw2.start();
    const text = nft('list', 'table', 'inet', TABLE);
    expect(text).not.toContain('chain prerouting');
    expect(text).toContain('type filter hook input priority filter - 1; policy accept;');
    expect(text).toContain('ip saddr @ipv4_addr udp dport { 5060, 10000-20000 } counter name "banned_ipv4" reject with icmpx admin-prohibited');
    expect(text).toContain('ip6 saddr @ipv6_addr udp dport { 5060, 10000-20000 } counter name "banned_ipv6" reject with icmpx admin-prohibited');
    expect(setElements(TABLE, 'ipv4_addr').has('192.0.2.30')).toBe(true);
    await fw2.stop();
  });

  it('leaves other tables alone, and removes only its own table when asked to', async () => {
    nft('add', 'table', 'inet', 'someone_else');
    const fw = new NftablesFirewall({ ...DROP, runner: makeRunner(), logger: new MemoryLogger(), cleanupOnExit: true, checkIntervalMs: 0 });
    await fw.start();
    await fw.stop();
    const tables = nft('list', 'tables');
    expect(tables).toContain('table inet someone_else');
    expect(tables).not.toContain(TABLE);
  });
});

describe('nftables firewall on the addon: the kernel first', () => {
  beforeEach(() => {
    nft('flush', 'ruleset');
  });

  it('bans decided in one block of code share one transaction, in the kernel before the loop turns; banMany\'s before it returns', async () => {
    const fw = firewall(new AddonRunner());
    await fw.start();
    const before = fw.stats.transactions;
    // Registered before the bans: it runs at the loop's next turn, ahead of anything they queue there.
    let atNextTurn: string[] = [];
    setImmediate(() => {
      atNextTurn = [...setElements(TABLE, 'ipv4_addr').keys()].sort();
    });
    const bans = [fw.ban('192.0.2.70', 'ipv4', 60), fw.ban('192.0.2.71', 'ipv4', 60)];
    await new Promise((r) => setImmediate(r));
    expect(atNextTurn).toEqual(['192.0.2.70', '192.0.2.71']);
    await Promise.all(bans);
    expect(fw.stats.transactions - before).toBe(1);
    const many = fw.banMany([{ ip: '192.0.2.72', family: 'ipv4', seconds: 60, replace: false }]);
    expect(setElements(TABLE, 'ipv4_addr').has('192.0.2.72')).toBe(true);
    expect(await many).toEqual([null]);
    await fw.stop();
  });
});

describe('nftables firewall start', () => {
  it('without CAP_NET_ADMIN the start fails with a message that says so', async () => {
    const denied: NftRunner = {
      backend: 'libnftables',
      run: () => Promise.reject(new Error('netlink: Error: cache initialization failed: Operation not permitted')),
      close: () => undefined,
    };
    await expect(firewall(denied).start()).rejects.toThrow(
      `cannot set up table inet ${TABLE} (ami2ban needs CAP_NET_ADMIN in Asterisk's network namespace): netlink: Error: cache initialization failed: Operation not permitted`,
    );
  });
});

describe('packets really dropped', () => {
  beforeAll(() => {
    nft('flush', 'ruleset');
  });

  async function reaches(from: string, to: string, family: 'udp4' | 'udp6'): Promise<boolean> {
    const server = createSocket(family);
    server.bind(0, to);
    await once(server, 'listening');
    const port = server.address().port;
    const got = new Promise<boolean>((resolve) => {
      server.once('message', () => {
        resolve(true);
      });
      setTimeout(() => {
        resolve(false);
      }, 300);
    });
    const client = createSocket(family);
    client.bind(0, from);
    await once(client, 'listening');
    client.send(Buffer.from('REGISTER'), port, to);
    const result = await got;
    client.close();
    server.close();
    return result;
  }

  it('a banned source gets nothing through; other sources still do (IPv4 and IPv6)', async () => {
    const fw = firewall(new AddonRunner());
    await fw.start();
    expect(await reaches('127.0.0.2', '127.0.0.1', 'udp4')).toBe(true);
    expect(await reaches('fd00::2', 'fd00::1', 'udp6')).toBe(true);
    await fw.ban('127.0.0.2', 'ipv4', 60);
    await fw.ban('fd00::2', 'ipv6', 60);
    expect(await reaches('127.0.0.2', '127.0.0.1', 'udp4')).toBe(false);
    expect(await reaches('127.0.0.3', '127.0.0.1', 'udp4')).toBe(true);
    expect(await reaches('fd00::2', 'fd00::1', 'udp6')).toBe(false);
    expect(await reaches('fd00::3', 'fd00::1', 'udp6')).toBe(true);
    const counters = await fw.counters();
    expect(counters.ipv4.packets).toBeGreaterThanOrEqual(1);
    expect(counters.ipv6.packets).toBeGreaterThanOrEqual(1);
    // Within 30 s a scrape gets the values read last, without another dump of the sets.
    expect(await reaches('127.0.0.2', '127.0.0.1', 'udp4')).toBe(false);
    expect((await fw.counters()).ipv4.packets).toBe(counters.ipv4.packets);
    await fw.unban('127.0.0.2', 'ipv4');
    expect(await reaches('127.0.0.2', '127.0.0.1', 'udp4')).toBe(true);
    await fw.stop();
  });

  it('a banned network: every source inside it gets nothing through, the ones outside do (IPv4 and IPv6)', async () => {
    const fw = firewall(new AddonRunner());
    await fw.start();
    await fw.ban('127.0.0.4/30', 'ipv4', 60);
    await fw.ban('fd00::2/127', 'ipv6', 60);
    expect(await reaches('127.0.0.5', '127.0.0.1', 'udp4')).toBe(false);
    expect(await reaches('127.0.0.7', '127.0.0.1', 'udp4')).toBe(false);
    expect(await reaches('127.0.0.9', '127.0.0.1', 'udp4')).toBe(true);
    expect(await reaches('fd00::3', 'fd00::1', 'udp6')).toBe(false);
    expect(await reaches('fd00::1', 'fd00::1', 'udp6')).toBe(true);
    await fw.unban('127.0.0.4/30', 'ipv4');
    expect(await reaches('127.0.0.5', '127.0.0.1', 'udp4')).toBe(true);
    await fw.stop();
  });
});

describe('end to end: daemon, fake AMI replaying the capture, FIREWALL=nftables', () => {
  let server: FakeAmiServer;
  beforeAll(async () => {
    nft('flush', 'ruleset');
    server = new FakeAmiServer({ username: 'ami2ban', secret: 's3cret' });
    await server.start();
  });
  afterAll(async () => {
    await server.stop();
  });

  it('the kernel sets hold exactly the expected addresses, each with a timeout close to BAN_BANTIME', async () => {
    const child = startCli(['run'], {
      AMI_PORT: String(server.port),
      AMI_USERNAME: 'ami2ban',
      AMI_SECRET: 's3cret',
      BAN_IGNOREIP: '',
      // fd00::2 and fd00::3 are this namespace's own (on lo, so that they can send).
      BAN_IGNORESELF: 'false',
      FIREWALL: 'nftables',
      NFT_TABLE: TABLE,
    });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    await server.nextSubscription();
    server.broadcast(Buffer.concat(eventBlocks(fixture('ami-ami2ban-events-security.raw'))));
    const inKernel = (): string[] => [...setElements(TABLE, 'ipv4_addr').keys(), ...setElements(TABLE, 'ipv6_addr').keys()];
    await vi.waitUntil(() => inKernel().length === EXPECTED_BANS.length, { timeout: 5000, interval: 50 });
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(inKernel().sort()).toEqual([...EXPECTED_BANS].sort());
    const all = new Map([...setElements(TABLE, 'ipv4_addr'), ...setElements(TABLE, 'ipv6_addr')]);
    for (const seconds of all.values()) {
      expect(seconds).toBeGreaterThan(3590);
      expect(seconds).toBeLessThanOrEqual(3600);
    }
    const lines = out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.find((l) => l.message === 'nftables backend chosen')).toMatchObject({ backend: 'libnftables' });
    // Bans stay in the kernel after the daemon stops.
    expect(nftJson('list', 'tables')).toBeTruthy();
    execFileSync('nft', ['list', 'table', 'inet', TABLE]);
  });
});

interface RunningDaemon {
  readonly child: ChildProcess;
  readonly lines: () => Record<string, unknown>[];
  readonly exited: Promise<number | null>;
  readonly output: () => string;
}

// Daemons a failed test did not stop: killed after each test so they cannot rebuild the table under the next.
const daemons = new Set<ChildProcess>();
afterEach(() => {
  for (const c of daemons) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  daemons.clear();
});

/** `ami2ban run` started, its output parsed as it comes; startDaemon waits until it listens. */
function spawnDaemon(env: Record<string, string>): RunningDaemon {
  const child = startCli(['run'], env);
  daemons.add(child);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  // Complete lines only: a process killed mid-write leaves a partial last one.
  const lines = (): Record<string, unknown>[] =>
    out
      .split('\n')
      .slice(0, -1)
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { child, lines, exited, output: () => out };
}

async function startDaemon(env: Record<string, string>): Promise<RunningDaemon> {
  const d = spawnDaemon(env);
  await vi.waitUntil(() => d.lines().some((l) => l.message === 'control API listening') || d.child.exitCode !== null, { timeout: 10_000, interval: 20 });
  if (d.child.exitCode !== null) throw new Error(`daemon exited: ${d.output()}`);
  return d;
}

describe('operating it: CLI, restarts and reboots on the real kernel', () => {
  let server: FakeAmiServer;
  let dir: string;
  let env: Record<string, string>;
  const ctl = (args: string[]): ReturnType<typeof runCli> => runCli(args, { CONTROL_LISTEN: env.CONTROL_LISTEN ?? '', BAN_IGNOREIP: '' });

  beforeEach(async () => {
    nft('flush', 'ruleset');
    server = new FakeAmiServer({ username: 'ami2ban', secret: 's3cret' });
    await server.start();
    dir = mkdtempSync(join(tmpdir(), 'ami2ban-ops-'));
    env = {
      AMI_PORT: String(server.port),
      AMI_USERNAME: 'ami2ban',
      AMI_SECRET: 's3cret',
      BAN_IGNOREIP: '',
      BAN_IGNORESELF: 'false',
      NFT_TABLE: TABLE,
      STATE_DIR: join(dir, 'state'),
      CONTROL_LISTEN: join(dir, 'control.sock'),
    };
  });

  afterEach(async () => {
    await server.stop();
  });

  it('the CLI talks to the running daemon: status, ban, list, unban, with and without --json', async () => {
    const d = await startDaemon(env);
    await vi.waitUntil(async () => statusOf(await ctl(['status', '--json'])).ami?.state === 'ready', { timeout: 5000, interval: 50 });
    const status = await ctl(['status']);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/AMI: +ready/);
    expect(status.stdout).toMatch(/firewall: +nftables \(libnftables\), ready/);
    expect(status.stdout).toMatch(/^database: +healthy, \d+ writes waiting \(.*ami2ban\.sqlite\)$/m);

    const ban = await ctl(['ban', '198.51.100.7', '--for', '1h']);
    expect(ban.stdout.trim()).toBe('banned 198.51.100.7 for 1h');
    expect(setElements(TABLE, 'ipv4_addr').get('198.51.100.7')).toBeGreaterThan(3590);
    expect((await ctl(['ban', '2001:db8::9', '--json'])).code).toBe(0);
    const why = await ctl(['explain', '198.51.100.7']);
    expect(why.code).toBe(0);
    expect(why.stdout).toMatch(/^198\.51\.100\.7 is banned until \S+ \(enforced\): manual, 0 failures: -$/m);
    expect(why.stdout).toMatch(/^SINCE\s+UNTIL\s+RULE\s+FAILURES\s+EVENTS\s+ENDED$/m);
    expect(why.stdout).toMatch(/\s+manual\s+0\s+-\s+in force$/m);

    const list = await ctl(['list']);
    expect(list.stdout).toMatch(/^ADDRESS\s+REMAINING\s+SINCE\s+TIMES\s+REASON\s+FAILURES\s+ORIGIN$/m);
    expect(list.stdout).toMatch(/^198\.51\.100\.7\s+(59m \d+s|1h)\s+\S+Z\s+1\s+manual\s+0\s+-$/m);
    const listed = JSON.parse((await ctl(['list', '--json'])).stdout) as BanViewLike[];
    expect(listed.map((b) => b.ip).sort()).toEqual(['198.51.100.7', '2001:db8::9']);

    // A shorter manual ban does not cut a longer one short unless asked.
    const shorter = await ctl(['ban', '198.51.100.7', '--for', '1m']);
    expect(shorter.code).toBe(2);
    expect(shorter.stderr).toContain('198.51.100.7 is already banned until');
    expect(setElements(TABLE, 'ipv4_addr').get('198.51.100.7')).toBeGreaterThan(3590);
    expect((await ctl(['ban', '198.51.100.7', '--for', '1m', '--replace'])).code).toBe(0);
    expect(setElements(TABLE, 'ipv4_addr').get('198.51.100.7')).toBeLessThanOrEqual(60);
    expect((await ctl(['ban', '198.51.100.7', '--for', '1h'])).code).toBe(0);

    const bad = await ctl(['ban', 'nonsense']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('"nonsense" is not an IPv4 or IPv6 address');
    expect((await ctl(['ban', '198.51.100.8', '--for', 'soon'])).stderr).toContain('is not a duration');

    expect((await ctl(['unban', '198.51.100.7'])).stdout.trim()).toBe('unbanned 198.51.100.7');
    expect(setElements(TABLE, 'ipv4_addr').has('198.51.100.7')).toBe(false);
    expect((await ctl(['unban', '--all', '--json'])).stdout.trim()).toBe('{"unbanned":1}');
    expect(setElements(TABLE, 'ipv6_addr').size).toBe(0);

    const metrics = await new ControlClient({ kind: 'unix', path: env.CONTROL_LISTEN ?? '' }, undefined).call('GET', '/metrics');
    expect(String(metrics.body)).toMatch(/^ami2ban_dropped_packets_total\{family="ipv4"\} \d+$/m);
    expect(String(metrics.body)).toMatch(/^ami2ban_firewall_batch_seconds_count \d+$/m);

    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
    const down = await ctl(['status']);
    expect(down.code).toBe(1);
    expect(down.stderr).toContain('the ami2ban daemon is not running');
  });

  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    it(`a restart after ${signal} loses no ban and doubles none`, async () => {
      const subscribed = server.nextSubscription();
      const d1 = await startDaemon(env);
      await subscribed;
      server.broadcast(Buffer.concat(eventBlocks(fixture('ami-ami2ban-events-security.raw'))));
      await vi.waitUntil(() => setElements(TABLE, 'ipv4_addr').size + setElements(TABLE, 'ipv6_addr').size === EXPECTED_BANS.length, { timeout: 5000, interval: 20 });
      await vi.waitUntil(async () => (JSON.parse((await ctl(['list', '--json'])).stdout || '[]') as unknown[]).length === EXPECTED_BANS.length, { timeout: 5000, interval: 50 });
      const before = new Map([...setElements(TABLE, 'ipv4_addr'), ...setElements(TABLE, 'ipv6_addr')]);
      d1.child.kill(signal);
      await d1.exited;

      const d2 = await startDaemon(env);
      const started = d2.lines().find((l) => l.message === 'ami2ban started');
      expect(started).toMatchObject({ activeBans: EXPECTED_BANS.length, restoredToFirewall: 0, adoptedFromFirewall: 0 });
      const after = new Map([...setElements(TABLE, 'ipv4_addr'), ...setElements(TABLE, 'ipv6_addr')]);
      expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
      for (const [ip, left] of after) expect(Math.abs(left - (before.get(ip) ?? 0))).toBeLessThanOrEqual(5);
      const listed = JSON.parse((await ctl(['list', '--json'])).stdout) as BanViewLike[];
      expect(listed.map((b) => b.ip).sort()).toEqual([...EXPECTED_BANS].sort());
      expect(new Set(listed.map((b) => b.ip)).size).toBe(listed.length);
      d2.child.kill('SIGTERM');
      expect(await d2.exited).toBe(0);
    });
  }

  it('a network banned by the CLI is in the kernel\'s interval set, listed, and back after SIGKILL and a reboot', async () => {
    const d1 = await startDaemon(env);
    const banned = await ctl(['ban', '2001:db8:1:2:3::4/64', '--for', '1h']);
    expect(banned.stdout.trim(), banned.stderr).toBe('banned 2001:db8:1:2::/64 for 1h');
    expect((await ctl(['ban', '192.0.2.0/8'])).stderr).toContain('wider than /16');
    expect(setElements(TABLE, 'ipv6_net').get('2001:db8:1:2::/64')).toBeGreaterThan(3590);
    expect((await ctl(['list'])).stdout).toMatch(/^2001:db8:1:2::\/64\s+(59m \d+s|1h)\s/m);
    d1.child.kill('SIGKILL');
    await d1.exited;
    // a reboot: the ruleset is gone while the daemon is down
    nft('flush', 'ruleset');
    const d2 = await startDaemon(env);
    expect(d2.lines().find((l) => l.message === 'ami2ban started')).toMatchObject({ activeBans: 1, restoredToFirewall: 1 });
    expect([...setElements(TABLE, 'ipv6_net').keys()]).toEqual(['2001:db8:1:2::/64']);
    expect((await ctl(['unban', '2001:db8:1:2::/64'])).stdout.trim()).toBe('unbanned 2001:db8:1:2::/64');
    expect([...setElements(TABLE, 'ipv6_net').keys()]).toEqual([]);
    d2.child.kill('SIGTERM');
    expect(await d2.exited).toBe(0);
  });

  for (const killAfter of [1, 1500, 4000]) {
    it(`SIGKILL after ${killAfter} of a 5 000-ban burst is acknowledged: every acknowledged ban is in the kernel after restart`, async () => {
      const burstEnv = { ...env, BAN_MAXRETRY: '1' };
      const subscribed = server.nextSubscription();
      const d1 = await startDaemon(burstEnv);
      await subscribed;
      const ip = (i: number): string => `198.18.${i >> 8}.${i & 255}`;
      const blocks: string[] = [];
      for (let i = 0; i < 5000; i++) {
        blocks.push(`Event: InvalidPassword\r\nPrivilege: security,all\r\nSeverity: Error\r\nService: AMI\r\nSessionID: 0x${i}\r\nRemoteAddress: IPV4/TCP/${ip(i)}/5038\r\n\r\n`);
      }
      server.broadcast(blocks.join(''));
      const acknowledged = (): string[] => d1.lines().filter((l) => l.message === 'ban').map((l) => String(l.ip));
      await vi.waitUntil(() => acknowledged().length >= killAfter, { timeout: 15_000, interval: 2 });
      d1.child.kill('SIGKILL');
      await d1.exited;
      const acked = acknowledged();
      expect(acked.length).toBeGreaterThanOrEqual(killAfter);

      const d2 = await startDaemon(burstEnv);
      const inKernel = setElements(TABLE, 'ipv4_addr');
      const missing = acked.filter((a) => !inKernel.has(a));
      expect(missing).toEqual([]);
      d2.child.kill('SIGTERM');
      expect(await d2.exited).toBe(0);
    });
  }

  it('after a reboot (ruleset gone while stopped) the bans come back with their remaining time', async () => {
    const d1 = await startDaemon(env);
    expect((await ctl(['ban', '198.51.100.20', '--for', '2h'])).code).toBe(0);
    expect((await ctl(['ban', '2001:db8::20', '--for', '-1'])).code).toBe(0);
    d1.child.kill('SIGTERM');
    await d1.exited;
    nft('flush', 'ruleset');
    const d2 = await startDaemon(env);
    expect(d2.lines().find((l) => l.message === 'ami2ban started')).toMatchObject({ restoredToFirewall: 2, adoptedFromFirewall: 0 });
    const left = setElements(TABLE, 'ipv4_addr').get('198.51.100.20') ?? 0;
    expect(left).toBeGreaterThan(7190);
    expect(left).toBeLessThanOrEqual(7200);
    expect(setElements(TABLE, 'ipv6_addr').get('2001:db8::20')).toBe(Infinity);
    d2.child.kill('SIGTERM');
    expect(await d2.exited).toBe(0);
  });

  it('a ruleset flushed while running: the table is rebuilt and the daemon\'s bans in force put back', async () => {
    const d = await startDaemon({ ...env, NFT_CHECK_INTERVAL: '1' });
    expect((await ctl(['ban', '198.51.100.30', '--for', '2h'])).code).toBe(0);
    expect((await ctl(['ban', '2001:db8::30', '--for', '-1'])).code).toBe(0);
    nft('flush', 'ruleset');
    await vi.waitUntil(
      () => {
        try {
          return setElements(TABLE, 'ipv4_addr').has('198.51.100.30') && setElements(TABLE, 'ipv6_addr').get('2001:db8::30') === Infinity;
        } catch {
          return false;
        }
      },
      { timeout: 5000, interval: 50 },
    );
    expect(setElements(TABLE, 'ipv4_addr').get('198.51.100.30')).toBeGreaterThan(7180);
    // The log line follows the commit; it may reach us a moment after the elements do.
    await vi.waitUntil(() => d.lines().some((l) => l.message === 'nftables bans re-applied'), { timeout: 5000, interval: 20 });
    expect(d.lines().find((l) => l.message === 'nftables bans re-applied')).toMatchObject({ count: 2 });
    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
  });

  it('at restart, a ban of an address now ignored is lifted, and a dry-run ban is never promoted to a kernel one', async () => {
    const dry = await startDaemon({ ...env, FIREWALL: 'dry-run' });
    expect((await ctl(['ban', '198.51.100.41', '--for', '1h'])).code).toBe(0);
    dry.child.kill('SIGTERM');
    expect(await dry.exited).toBe(0);
    const d1 = await startDaemon(env);
    expect(d1.lines().find((l) => l.message === 'ban recorded under FIREWALL=dry-run is not promoted to a kernel ban')).toMatchObject({ ip: '198.51.100.41' });
    expect(setElements(TABLE, 'ipv4_addr').has('198.51.100.41')).toBe(false);
    expect((await ctl(['ban', '198.51.100.40', '--for', '1h'])).code).toBe(0);
    d1.child.kill('SIGTERM');
    expect(await d1.exited).toBe(0);
    expect(setElements(TABLE, 'ipv4_addr').has('198.51.100.40')).toBe(true);

    const d2 = await startDaemon({ ...env, BAN_IGNOREIP: '198.51.100.0/24' });
    expect(d2.lines().find((l) => l.message === 'ban lifted at start: the address is now excluded')).toMatchObject({ ip: '198.51.100.40', why: 'ignore list (BAN_IGNOREIP)' });
    await vi.waitUntil(() => !setElements(TABLE, 'ipv4_addr').has('198.51.100.40'), { timeout: 3000, interval: 20 });
    expect(JSON.parse((await ctl(['list', '--json'])).stdout)).toEqual([]);
    d2.child.kill('SIGTERM');
    expect(await d2.exited).toBe(0);
  });

  it('a kernel element unknown to the store is adopted and recorded', async () => {
    const fw = firewall(new AddonRunner());
    await fw.start();
    await fw.ban('198.51.100.30', 'ipv4', 600);
    await fw.stop();
    const d = await startDaemon(env);
    expect(d.lines().find((l) => l.message === 'ami2ban started')).toMatchObject({ adoptedFromFirewall: 1, activeBans: 1 });
    const listed = JSON.parse((await ctl(['list', '--json'])).stdout) as BanViewLike[];
    expect(listed).toMatchObject([{ ip: '198.51.100.30', reason: 'adopted' }]);
    d.child.kill('SIGTERM');
    await d.exited;
  });

  it('SIGHUP re-reads the ignore list (BAN_IGNOREIP_FILE) without a restart', async () => {
    const file = join(dir, 'ignore.txt');
    writeFileSync(file, '# trunks\n192.0.2.0/24\n');
    const subscribed = server.nextSubscription();
    const d = await startDaemon({ ...env, BAN_IGNOREIP_FILE: file });
    await subscribed;
    writeFileSync(file, '# trunks\n192.0.2.0/24\n198.51.100.0/24  # the office\n');
    d.child.kill('SIGHUP');
    await vi.waitUntil(() => d.lines().some((l) => l.message === 'ignore list reloaded'), { timeout: 5000, interval: 20 });
    expect(d.lines().find((l) => l.message === 'ignore list reloaded')).toMatchObject({ added: '198.51.100.0/24', removed: '(none)', entries: 2 });
    const ev = (n: number): string =>
      `Event: InvalidAccountID\r\nPrivilege: security,all\r\nSeverity: Error\r\nService: AMI\r\nSessionID: 0x${n}\r\nRemoteAddress: IPV4/TCP/198.51.100.77/5038\r\n\r\n`;
    server.broadcast(ev(1) + ev(2) + ev(3) + ev(4));
    await vi.waitUntil(async () => statusOf(await ctl(['status', '--json'])).counts?.events === 4, { timeout: 5000, interval: 50 });
    expect(setElements(TABLE, 'ipv4_addr').has('198.51.100.77')).toBe(false);
    // A bad file keeps the old list.
    writeFileSync(file, 'not_an_address!\n');
    d.child.kill('SIGHUP');
    await vi.waitUntil(() => d.lines().some((l) => l.message === 'ignore list not reloaded: the old one stays'), { timeout: 5000, interval: 20 });
    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
  });

  it('ignore-self: with BAN_IGNOREIP set to a trunk, the AMI host and our own addresses are never banned', async () => {
    const subscribed = server.nextSubscription();
    const d = await startDaemon({ ...env, BAN_IGNOREIP: '192.0.2.0/24', BAN_IGNORESELF: 'true', LOG_LEVEL: 'debug' });
    await subscribed;
    expect(d.lines().find((l) => l.message === 'ignore-self: own addresses never banned')?.addresses).toMatch(/(^|,)127\.0\.0\.1(,|$)/);
    // Failed AMI logins from the AMI host itself (127.0.0.1), and SIP failures from fd00::2 (on lo here).
    const ami = (n: number, from: string): string =>
      `Event: InvalidPassword\r\nPrivilege: security,all\r\nSeverity: Error\r\nService: AMI\r\nSessionID: 0x${n}\r\nRemoteAddress: ${from}\r\n\r\n`;
    const blocks = [1, 2, 3].flatMap((n) => [ami(n, 'IPV4/TCP/127.0.0.1/5038'), ami(n, 'IPV6/UDP/fd00::2/5060'), ami(n, 'IPV4/TCP/127.0.0.2/5038')]);
    server.broadcast(blocks.join(''));
    await vi.waitUntil(() => setElements(TABLE, 'ipv4_addr').has('127.0.0.2'), { timeout: 5000, interval: 20 });
    expect([...setElements(TABLE, 'ipv4_addr').keys()]).toEqual(['127.0.0.2']);
    expect(setElements(TABLE, 'ipv6_addr').size).toBe(0);
    await vi.waitUntil(() => d.lines().filter((l) => l.message === 'security event').length === 9, { timeout: 5000, interval: 20 });
    expect(d.lines().filter((l) => l.message === 'security event' && l.outcome === 'ignored:self').length).toBe(6);

    const self = await ctl(['ban', '127.0.0.1']);
    expect(self.code).toBe(2);
    expect(self.stderr).toContain('127.0.0.1 is an address of this host');
    expect(self.stderr).toContain('cut ami2ban off from Asterisk');
    expect(setElements(TABLE, 'ipv4_addr').has('127.0.0.1')).toBe(false);
    const link = await ctl(['ban', 'fe80::1', '--force']);
    expect(link.code).toBe(2);
    expect(link.stderr).toContain('fe80::1 is a link-local address');
    for (const bad of ['0.0.0.0', '::', '255.255.255.255', '224.0.0.1', 'ff02::1', '169.254.0.1', 'fe80::1%lo']) {
      expect((await ctl(['ban', bad, '--force'])).code, bad).toBe(2);
    }
    const forced = await ctl(['ban', 'fd00::2', '--force', '--for', '1m']);
    expect(forced.code).toBe(0);
    expect(d.lines().find((l) => l.message === 'forced ban of an address of this host')).toMatchObject({ ip: 'fd00::2' });
    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
  });

  /** AMI failures (one each) from `count` addresses of 10.88.0.0/16, three per address. */
  function attack(count: number): string[] {
    const ips = Array.from({ length: count }, (_, i) => `10.88.${i >> 8}.${i & 255}`);
    const blocks = ips.flatMap((ip, i) =>
      [0, 1, 2].map((n) => `Event: InvalidPassword\r\nPrivilege: security,all\r\nSeverity: Error\r\nService: AMI\r\nSessionID: 0x${i}${n}\r\nRemoteAddress: IPV4/TCP/${ip}/5038\r\n\r\n`),
    );
    server.broadcast(blocks.join(''));
    return ips;
  }
  const acks = (d: RunningDaemon): number => d.lines().filter((l) => l.message === 'ban').length;
  const storeOf = async (): Promise<{ healthy: boolean; pending: number; lastError: string | null }> =>
    (JSON.parse((await ctl(['status', '--json'])).stdout) as { store: { healthy: boolean; pending: number; lastError: string | null } }).store;

  /** A daemon whose STATE_DIR is on a freezable disk: `body` freezes and thaws it; the daemon must then stop cleanly. */
  async function onFreezableDisk(extraEnv: Record<string, string>, body: (d: RunningDaemon, m: FreezableMount) => Promise<void>): Promise<void> {
    const m = freezableMount();
    let d: RunningDaemon | undefined;
    try {
      const subscribed = server.nextSubscription();
      d = await startDaemon({ ...env, STATE_DIR: join(m.dir, 'state'), ...extraEnv });
      await subscribed;
      await body(d, m);
      d.child.kill('SIGTERM');
      expect(await d.exited).toBe(0);
    } finally {
      m.thaw();
      if (d?.child.exitCode === null) d.child.kill('SIGKILL');
      m.cleanup();
    }
  }

  it('a frozen disk under STATE_DIR (fsfreeze): bans still reach the kernel, and are acknowledged once it thaws', async () => {
    await onFreezableDisk({}, async (d, m) => {
      m.freeze();
      const ips = attack(20);
      await vi.waitUntil(
        () => {
          const inKernel = setElements(TABLE, 'ipv4_addr');
          return ips.every((ip) => inKernel.has(ip));
        },
        { timeout: 10_000, interval: 20 },
      );
      // In the kernel, not yet durable: not acknowledged, and the store says it is behind.
      expect(acks(d)).toBe(0);
      expect((await storeOf()).pending).toBeGreaterThanOrEqual(20);
      // A manual ban: in the kernel at once; the operator is told within 2 s that it is not written yet.
      const manual = await ctl(['ban', '198.51.100.60']);
      expect(manual.code).not.toBe(0);
      expect(manual.stderr).toMatch(/198\.51\.100\.60 is blocked in the kernel, but the ban database failed \(retrying\): not written within 2 s \(a write to the ban database .* (has not completed|is still running)/);
      expect(setElements(TABLE, 'ipv4_addr').has('198.51.100.60')).toBe(true);
      // `status` says why, in words.
      await vi.waitUntil(async () => !(await storeOf()).healthy, { timeout: 10_000, interval: 50 });
      expect((await ctl(['status'])).stdout).toMatch(/^database: +not healthy, \d+ writes waiting \(.*ami2ban\.sqlite\): a write to the ban database .* has not completed for \d+ s \(disk hung or full\?\)$/m);
      // explain reads the history on the database's thread: it answers that the disk does not, within 2 s.
      const why = await ctl(['explain', ips[0] ?? '']);
      expect(why.code).not.toBe(0);
      expect(why.stderr).toMatch(/the ban database .*ami2ban\.sqlite did not answer within 2 s/);
      m.thaw();
      await vi.waitUntil(() => acks(d) === 21, { timeout: 10_000, interval: 20 });
      expect((await ctl(['explain', ips[0] ?? ''])).stdout).toMatch(/\s+threshold\s+3\s+InvalidPassword×3\s+in force$/m);
      // Other writes queued meanwhile (an hourly purge, an expiry) may still be finishing.
      await vi.waitUntil(async () => { const s = await storeOf(); return s.healthy && s.pending === 0; }, { timeout: 10_000, interval: 50 });
      expect(await storeOf()).toMatchObject({ healthy: true, pending: 0, lastError: null });
    });
  });

  it('a frozen disk under STATE_DIR with the `nft` fallback (a fork per transaction): bans keep reaching the kernel while a write hangs', async () => {
    await onFreezableDisk({ NFT_BACKEND: 'nft' }, async (d, m) => {
      expect(d.lines().find((l) => l.message === 'ami2ban started')).toBeDefined();
      m.freeze();
      const inKernel = (ips: readonly string[]): boolean => {
        const set = setElements(TABLE, 'ipv4_addr');
        return ips.every((ip) => set.has(ip));
      };
      // The first wave's write now waits on the disk; the next waves need new `nft` processes.
      for (const wave of [0, 1, 2]) {
        const ips = Array.from({ length: 5 }, (_, i) => `10.89.${wave}.${i + 1}`);
        server.broadcast(
          ips.flatMap((ip, i) => [0, 1, 2].map((n) => `Event: InvalidPassword\r\nPrivilege: security,all\r\nSeverity: Error\r\nService: AMI\r\nSessionID: 0x${wave}${i}${n}\r\nRemoteAddress: IPV4/TCP/${ip}/5038\r\n\r\n`)).join(''),
        );
        await vi.waitUntil(() => inKernel(ips), { timeout: 10_000, interval: 20 });
        await new Promise((r) => setTimeout(r, 300));
      }
      expect(acks(d)).toBe(0);
      expect((await storeOf()).pending).toBeGreaterThanOrEqual(15);
      m.thaw();
      await vi.waitUntil(() => acks(d) === 15, { timeout: 10_000, interval: 20 });
    });
  });

  it('a start while the disk under STATE_DIR is hung goes on without its database: bans reach the kernel, and are acknowledged and reconciled once it answers', async () => {
    const m = freezableMount();
    const started: ChildProcess[] = [];
    const state = join(m.dir, 'state');
    const WITHOUT = 'STATE_DIR does not answer: the ban database has not opened (disk hung?); starting without it: bans go to the kernel; their acknowledgements, the ban history and the fleet wait for it';
    // The control socket in STATE_DIR (the default place): it can only be made there once the disk answers.
    const control = join(state, 'control.sock');
    const run = (): RunningDaemon & { said: (message: string) => boolean } => {
      const d = spawnDaemon({ ...env, STATE_DIR: state, CONTROL_LISTEN: control });
      started.push(d.child);
      return { ...d, said: (message) => d.lines().some((l) => l.message === message) };
    };
    try {
      // A ban recorded before, lost from the kernel (a reboot): put back once the database answers.
      const before = await BanStore.open(state, { historyKeepMs: 86400_000 });
      before.recordBan({ ip: '10.88.9.9', family: 'ipv4', at: Date.now(), banSeconds: 3600, until: Date.now() + 3600_000, reason: 'threshold', failures: 3, events: {}, previousBans: 0 });
      await before.close();
      m.freeze();
      // Told to stop while it waits for the disk: it says so, and ends (once the disk lets its stuck write go).
      const first = run();
      await vi.waitUntil(() => first.said('starting'), { timeout: 10_000, interval: 20 });
      first.child.kill('SIGTERM');
      await vi.waitUntil(() => first.said('stopped while waiting for STATE_DIR to answer'), { timeout: 5000, interval: 20 });
      m.thaw();
      expect(await first.exited).toBe(1);

      m.freeze();
      const subscribed = server.nextSubscription();
      const second = run();
      await vi.waitUntil(() => second.said(WITHOUT), { timeout: 10_000, interval: 50 });
      await subscribed;
      const ips = attack(3);
      await vi.waitUntil(() => { const k = setElements(TABLE, 'ipv4_addr'); return ips.every((ip) => k.has(ip)); }, { timeout: 10_000, interval: 20 });
      // In the kernel, not durable: not acknowledged; the stored ban and the control socket wait for the disk.
      expect(acks(second)).toBe(0);
      expect(setElements(TABLE, 'ipv4_addr').has('10.88.9.9')).toBe(false);
      expect(second.said('control API listening')).toBe(false);
      m.thaw();
      await vi.waitUntil(() => second.said('the ban database answers: its bans reconciled with the kernel'), { timeout: 10_000, interval: 20 });
      await vi.waitUntil(() => acks(second) === 3, { timeout: 10_000, interval: 20 });
      await vi.waitUntil(() => setElements(TABLE, 'ipv4_addr').has('10.88.9.9'), { timeout: 10_000, interval: 20 });
      await vi.waitUntil(() => second.said('control API listening'), { timeout: 10_000, interval: 20 });
      const status = await runCli(['status', '--json'], { CONTROL_LISTEN: control, BAN_IGNOREIP: '' });
      expect(status.code).toBe(0);
      expect((JSON.parse(status.stdout) as { store: { healthy: boolean } }).store.healthy).toBe(true);
      second.child.kill('SIGTERM');
      expect(await second.exited).toBe(0);
    } finally {
      m.thaw();
      for (const c of started) if (c.exitCode === null) c.kill('SIGKILL');
      m.cleanup();
    }
  });

  it('started without its database on a hung disk, a database found corrupt once the disk answers ends the daemon with one clear line', async () => {
    const m = freezableMount();
    let d: RunningDaemon | undefined;
    try {
      const state = join(m.dir, 'state');
      mkdirSync(state);
      writeFileSync(join(state, 'ami2ban.sqlite'), Buffer.alloc(8192, 0x42));
      m.freeze();
      d = spawnDaemon({ ...env, STATE_DIR: state });
      const running = d;
      await vi.waitUntil(() => running.lines().some((l) => l.message === 'ami2ban started'), { timeout: 10_000, interval: 50 });
      m.thaw();
      expect(await d.exited).toBe(1);
      const failed = d.lines().find((l) => l.message === 'start failed');
      expect(failed?.error).toBe(`cannot open the ban database ${join(state, 'ami2ban.sqlite')}: file is not a database`);
      expect(d.output()).not.toMatch(/\n\s+at /);
    } finally {
      m.thaw();
      if (d?.child.exitCode === null) d.child.kill('SIGKILL');
      m.cleanup();
    }
  });

  it('a full disk under STATE_DIR: bans still reach the kernel, the store says why, and catches up once there is room', async () => {
    const m = smallTmpfs(2048);
    let d: RunningDaemon | undefined;
    try {
      const subscribed = server.nextSubscription();
      d = await startDaemon({ ...env, STATE_DIR: join(m.dir, 'state') });
      await subscribed;
      // Fill what is left (dd stops at ENOSPC).
      spawnSync('dd', ['if=/dev/zero', `of=${join(m.dir, 'filler')}`, 'bs=4k'], { stdio: 'ignore' });
      const ips = attack(500);
      await vi.waitUntil(() => setElements(TABLE, 'ipv4_addr').size >= 500, { timeout: 15_000, interval: 50 });
      const inKernel = setElements(TABLE, 'ipv4_addr');
      expect(ips.every((ip) => inKernel.has(ip))).toBe(true);
      await vi.waitUntil(async () => !(await storeOf()).healthy, { timeout: 10_000, interval: 50 });
      const store = await storeOf();
      expect(store.lastError).toContain(join(m.dir, 'state', 'ami2ban.sqlite'));
      expect(store.lastError).toMatch(/full/);
      expect(acks(d)).toBeLessThan(500);
      // An unban meanwhile: lifted from the kernel, but not answered as done (a restart now would
      // restore the ban from the database), and no `unban` line until the lifting is written.
      const acked = new Set(d.lines().filter((l) => l.message === 'ban').map((l) => String(l.ip)));
      const lifted = ips.find((ip) => !acked.has(ip)) ?? '';
      const unban = await ctl(['unban', lifted]);
      expect(unban.code).toBe(1);
      expect(unban.stderr).toContain(`${lifted} is lifted from the kernel, but the ban database failed`);
      expect(setElements(TABLE, 'ipv4_addr').has(lifted)).toBe(false);
      const unbanLines = (r: RunningDaemon): number => r.lines().filter((l) => l.message === 'unban' && l.ip === lifted).length;
      expect(unbanLines(d)).toBe(0);
      rmSync(join(m.dir, 'filler'));
      const running = d;
      // Every other ban is acknowledged once written; the lifted one never was, and is not now.
      await vi.waitUntil(() => acks(running) === 499 && unbanLines(running) === 1, { timeout: 20_000, interval: 50 });
      expect(running.lines().some((l) => l.message === 'ban' && l.ip === lifted)).toBe(false);
      expect(await storeOf()).toMatchObject({ healthy: true, pending: 0 });
      d.child.kill('SIGTERM');
      expect(await d.exited).toBe(0);
    } finally {
      if (d?.child.exitCode === null) d.child.kill('SIGKILL');
      if (d !== undefined) await d.exited;
      m.cleanup();
    }
  });

  it('a corrupt database stops the start with one clear line, no stack trace', async () => {
    mkdirSync(join(dir, 'state'), { recursive: true });
    writeFileSync(join(dir, 'state', 'ami2ban.sqlite'), Buffer.alloc(8192, 0x42));
    const r = await runCli(['run'], env);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`cannot open the ban database ${join(dir, 'state', 'ami2ban.sqlite')}: file is not a database`);
    expect(r.stdout + r.stderr).not.toMatch(/\n\s+at /);
  });
});

function statusOf(r: { stdout: string }): { ami?: { state?: string }; counts?: { events?: number } } {
  return JSON.parse(r.stdout || '{}') as { ami?: { state?: string }; counts?: { events?: number } };
}

interface BanViewLike {
  ip: string;
  reason: string;
}
