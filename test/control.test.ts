import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { BanView, StatusReport } from '../src/control/api.js';
import { parseCommand } from '../src/cli-args.js';
import { controlCommand } from '../src/cli-control.js';
import { ControlClient } from '../src/control/client.js';
import { Metrics } from '../src/control/metrics.js';
import { ControlServer, type ListenAddress } from '../src/control/server.js';
import { FakeAmiServer, eventBlocks } from '../src/demo/fake-ami-server.js';
import { MemoryFirewall } from '../src/firewall/memory.js';
import { buildDaemon } from '../src/service/build.js';
import type { Daemon } from '../src/service/daemon.js';
import { fillUp, smallTmpfs } from './helpers/filesystems.js';
import { fixture } from './helpers/fixtures.js';
import { referencedMetrics } from './helpers/observability.js';
import { MemoryLogger } from './helpers/memory-logger.js';
import { config } from './helpers/policy.js';

interface Rig {
  daemon: Daemon;
  server: FakeAmiServer;
  control: ControlServer;
  client: ControlClient;
  firewall: MemoryFirewall;
  log: MemoryLogger;
  /** STATE_DIR */
  dir: string;
}

let rig: Rig | undefined;

afterEach(async () => {
  if (rig === undefined) return;
  await rig.control.close();
  await rig.daemon.stop();
  await rig.server.stop();
  rig = undefined;
});

async function start(options: { token?: string; tcp?: boolean; env?: Record<string, string>; connect?: boolean; dir?: string } = {}): Promise<Rig> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'ami2ban-control-'));
  const server = new FakeAmiServer({ username: 'ami2ban', secret: 'ami2ban-secret' });
  const port = await server.start();
  const cfg = config({ AMI_PORT: String(port), STATE_DIR: dir, BAN_IGNOREIP: '10.0.0.0/8', ...options.env });
  const log = new MemoryLogger([], false);
  const firewall = new MemoryFirewall();
  const { daemon, metrics } = buildDaemon(cfg, log, '9.9.9', { firewall });
  const listen: ListenAddress = options.tcp === true ? { kind: 'tcp', host: '127.0.0.1', port: 0 } : { kind: 'unix', path: join(dir, 'control.sock') };
  const control = new ControlServer({ listen, token: options.token, target: daemon, metrics });
  const subscribed = server.nextSubscription();
  await daemon.start();
  if (options.connect !== false) await subscribed;
  await control.listen();
  const client = new ControlClient(options.tcp === true ? { kind: 'tcp', host: '127.0.0.1', port: control.port() } : listen, options.token);
  rig = { daemon, server, control, client, firewall, log, dir };
  return rig;
}

/** A CLI command against a rig's control socket: its exit code and what it wrote. */
async function cli(r: Rig, command: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  const cfg = config({ STATE_DIR: r.dir, CONTROL_LISTEN: join(r.dir, 'control.sock') });
  let out = '';
  let err = '';
  const sink = (f: (s: string) => void): NodeJS.WritableStream => new Writable({ write(c: Buffer, _e, done) { f(c.toString()); done(); } });
  const parsed = parseCommand(command, args);
  if (parsed.kind !== 'ok') throw new Error(parsed.kind);
  const code = await controlCommand(command, parsed, cfg, { stdout: sink((c) => (out += c)), stderr: sink((c) => (err += c)) });
  return { code, out, err };
}

describe('control API over a real socket', () => {
  it('status reports AMI, firewall, counts, uptime and version', async () => {
    const r = await start();
    await vi.waitUntil(() => r.daemon.readiness().ready);
    const res = await r.client.call('GET', '/v1/status');
    expect(res.status).toBe(200);
    const s = res.body as StatusReport;
    expect(s).toMatchObject({ version: '9.9.9', ami: { state: 'ready', connected: true }, firewall: { backend: 'memory', state: 'ready' }, trackedAddresses: 0, activeBans: 0 });
    expect(s.uptimeSeconds).toBeGreaterThanOrEqual(0);
  });

  it('manual ban, list with remaining time, unban one, unban all', async () => {
    const r = await start();
    const banned = await r.client.call('POST', '/v1/bans', { ip: '198.51.100.7', duration: '1h' });
    expect(banned.status).toBe(201);
    expect((banned.body as { ban: BanView }).ban).toMatchObject({ ip: '198.51.100.7', reason: 'manual', remainingSeconds: 3600, timesBanned: 1 });
    expect(r.firewall.elements.get('198.51.100.7')).toEqual({ family: 'ipv4', seconds: 3600 });
    await r.client.call('POST', '/v1/bans', { ip: '2001:DB8::5', duration: -1 });
    const list = (await r.client.call('GET', '/v1/bans')).body as { bans: BanView[] };
    expect(list.bans.map((b) => [b.ip, b.remainingSeconds, b.expiresAt === null])).toEqual([
      ['198.51.100.7', 3600, false],
      ['2001:db8::5', null, true],
    ]);
    expect((await r.client.call('DELETE', '/v1/bans/198.51.100.7')).status).toBe(200);
    expect(r.firewall.elements.has('198.51.100.7')).toBe(false);
    expect((await r.client.call('DELETE', '/v1/bans/198.51.100.7')).status).toBe(404);
    expect((await r.client.call('DELETE', '/v1/bans')).body).toEqual({ unbanned: 1 });
    expect(r.firewall.elements.size).toBe(0);
    expect(((await r.client.call('GET', '/v1/bans')).body as { bans: unknown[] }).bans).toEqual([]);
    const unbanLines = r.log.lines.filter((l) => l.message === 'unban').map((l) => l.meta.reason);
    expect(unbanLines).toEqual(['manual', 'manual']);
  });

  it('bad input gets 400 with a message, and nothing changes', async () => {
    const r = await start();
    const cases: [unknown, string][] = [
      [{ ip: 'not-an-ip' }, 'is not an IPv4 or IPv6 address'],
      [{ ip: '198.51.100.7', duration: 'soon' }, 'is not a duration'],
      [{ ip: '198.51.100.7', duration: '0' }, 'would ban nothing: -1 bans permanently, and `ami2ban unban`'],
      [{ ip: 42 }, '"ip" must be a string'],
      [{ ip: '198.51.100.7', force: 'yes' }, '"force" must be true or false'],
      [[1, 2], 'body must be a JSON object'],
    ];
    for (const [body, message] of cases) {
      const res = await r.client.call('POST', '/v1/bans', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect((res.body as { error: string }).error).toContain(message);
    }
    expect((await r.client.call('DELETE', '/v1/bans/nope')).status).toBe(400);
    expect(r.firewall.elements.size).toBe(0);
    expect(r.firewall.operations).toEqual([]);
  });

  it('refuses to ban an ignored address unless forced', async () => {
    const r = await start();
    const refused = await r.client.call('POST', '/v1/bans', { ip: '10.1.2.3' });
    expect(refused.status).toBe(409);
    expect((refused.body as { error: string }).error).toContain('ignore list');
    expect(r.firewall.elements.size).toBe(0);
    expect((await r.client.call('POST', '/v1/bans', { ip: '10.1.2.3', force: true })).status).toBe(201);
    expect(r.firewall.elements.has('10.1.2.3')).toBe(true);
  });

  it('with CONTROL_TOKEN every request needs the bearer token (TCP listener)', async () => {
    const r = await start({ token: 's3cret-token', tcp: true });
    expect((await r.client.call('GET', '/v1/status')).status).toBe(200);
    const anon = new ControlClient({ kind: 'tcp', host: '127.0.0.1', port: r.control.port() }, undefined);
    const wrong = new ControlClient({ kind: 'tcp', host: '127.0.0.1', port: r.control.port() }, 's3cret-tokeX');
    for (const c of [anon, wrong]) {
      for (const path of ['/v1/status', '/v1/bans', '/healthz', '/metrics']) expect((await c.call('GET', path)).status, path).toBe(401);
      expect((await c.call('POST', '/v1/bans', { ip: '198.51.100.9' })).status).toBe(401);
    }
    expect(r.firewall.elements.size).toBe(0);
  });

  it('healthz while up; readyz only once AMI is logged in and the firewall ready', async () => {
    const r = await start({ connect: false });
    r.server.refuseLogins = true;
    await r.server.stop();
    const health = await r.client.call('GET', '/healthz');
    expect(health.status).toBe(200);
    const notReady = await r.client.call('GET', '/readyz');
    expect(notReady.status).toBe(503);
    expect((notReady.body as { reasons: string[] }).reasons.join()).toMatch(/AMI is (connecting|logging-in|backing-off)/);
  });

  it('rejects oversized bodies, unknown paths and wrong methods', async () => {
    const r = await start();
    const big = await r.client.call('POST', '/v1/bans', { ip: 'x'.repeat(20_000) });
    expect(big.status).toBe(413);
    expect((await r.client.call('GET', '/v2/nothing')).status).toBe(404);
    expect((await r.client.call('PUT', '/v1/bans')).status).toBe(405);
    expect((await r.client.call('POST', '/healthz')).status).toBe(405);
  });

  it('/metrics exposes the stable names, with counts from a real replay', async () => {
    const r = await start({ env: { BAN_IGNOREIP: '', BAN_IGNORESELF: 'false' } });
    const blocks = eventBlocks(fixture('ami-ami2ban-events-security.raw'));
    r.server.broadcast(Buffer.concat(blocks));
    await vi.waitUntil(() => r.daemon.counters.events === 139, { timeout: 5000 });
    await r.daemon.idle();
    const res = await r.client.call('GET', '/metrics');
    expect(res.status).toBe(200);
    const text = String(res.body);
    for (const name of [
      'ami2ban_ami_connected 1',
      'ami2ban_ami_reconnects_total 0',
      'ami2ban_ami_last_event_timestamp_seconds 1',
      'ami2ban_build_info{version="9.9.9",node="',
      'ami2ban_security_events_total{event="InvalidAccountID",service="PJSIP"}',
      'ami2ban_failures_total 29',
      'ami2ban_ignored_total{reason="same-request"} 3',
      'ami2ban_bans_total{reason="threshold"} 8',
      'ami2ban_active_bans{family="ipv4"} 6',
      'ami2ban_active_bans{family="ipv6"} 2',
      'ami2ban_tracked_addresses',
      'ami2ban_firewall_operations_total{op="ban",result="ok"} 8',
      'ami2ban_ban_latency_seconds_count{reason="threshold"} 8',
      'ami2ban_ban_latency_seconds_count{reason="manual"} 0',
      'ami2ban_evictions_total 0',
      'ami2ban_max_tracked_addresses 1000000',
      'ami2ban_firewall_batch_seconds',
      'ami2ban_dropped_packets_total',
      'ami2ban_dropped_bytes_total',
      'ami2ban_ineffective_bans_total',
      'ami2ban_unbans_total',
      'process_resident_memory_bytes',
      // Known label values at 0 from the start, so that increase() sees the first one.
      'ami2ban_bans_total{reason="unanswered"} 0',
      'ami2ban_unbans_total{reason="expired"} 0',
      'ami2ban_ignored_total{reason="unbannable-address"} 0',
      'ami2ban_firewall_operations_total{op="unban",result="error"} 0',
    ]) {
      expect(text, name).toContain(name);
    }
    // The shipped dashboard and alert rules use only names exported here.
    expect(referencedMetrics().size).toBeGreaterThan(20);
    for (const name of referencedMetrics()) expect(text, name).toMatch(new RegExp(`^${name}(_bucket|_count|_sum)?[{ ]`, 'm'));
    // Prometheus' own linter (Debian's prometheus package brings promtool) finds nothing.
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(lint.error).toBeUndefined();
    expect(`${lint.stdout}${lint.stderr}`).toBe('');
    expect(lint.status).toBe(0);
  });
});

describe('consistency check', () => {
  it('failures that keep arriving from a banned address: its ban is put back first (element lost), then warned about once', async () => {
    const r = await start({ env: { BAN_IGNOREIP: '' } });
    const block = (n: number): string =>
      `Event: InvalidAccountID\r\nPrivilege: security,all\r\nSeverity: Error\r\nService: AMI\r\nSessionID: 0x${n}\r\nRemoteAddress: IPV4/TCP/198.51.100.50/5038\r\n\r\n`;
    r.server.broadcast(block(1) + block(2) + block(3));
    await vi.waitUntil(() => r.firewall.elements.has('198.51.100.50'));
    await r.daemon.idle();
    // Someone empties the set (`nft flush set`): the engine still holds the ban.
    r.firewall.elements.clear();
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(Date.now() + 6000);
      r.server.broadcast(block(4));
      await vi.waitUntil(() => r.firewall.elements.has('198.51.100.50'), { interval: 5 });
      expect(r.firewall.elements.get('198.51.100.50')?.seconds).toBeGreaterThan(3590);
      expect(r.log.messages('warn')).toContain('failures keep arriving from a banned address: putting its ban back in the kernel');
      // Still arriving after that: the ban does not work.
      vi.setSystemTime(Date.now() + 6000);
      r.server.broadcast(block(5) + block(6));
      await vi.waitUntil(() => r.daemon.counters.events === 6, { interval: 5 });
    } finally {
      vi.useRealTimers();
    }
    const warnings = r.log.lines.filter((l) => l.message === 'ban not effective: failures keep arriving from a banned address');
    expect(warnings.length).toBe(1);
    expect(warnings[0]?.meta.ip).toBe('198.51.100.50');
    const metrics = String((await r.client.call('GET', '/metrics')).body);
    expect(metrics).toContain('ami2ban_ineffective_bans_total 1');
    expect(metrics).toContain('ami2ban_rebans_total 1');
  });

  it('a firewall that refuses: 502 with its message, never 201; counted, not ready, retried until in force', async () => {
    const r = await start({ env: { BAN_IGNOREIP: '' } });
    r.firewall.failWith = new Error('Could not process rule: Operation not permitted');
    const res = await r.client.call('POST', '/v1/bans', { ip: '198.51.100.60', duration: '1h' });
    expect(res.status).toBe(502);
    expect(JSON.stringify(res.body)).toContain('Operation not permitted');
    expect(r.log.messages('info')).not.toContain('ban');
    const ready = await r.client.call('GET', '/readyz');
    expect(ready.status).toBe(503);
    expect(JSON.stringify(ready.body)).toContain('1 ban(s) not in the kernel');
    const status = (await r.client.call('GET', '/v1/status')).body as { firewall: { unenforced: number; lastError: string } };
    expect(status.firewall).toMatchObject({ unenforced: 1, lastError: expect.stringContaining('Operation not permitted') as unknown });
    expect(String((await r.client.call('GET', '/metrics')).body)).toMatch(/^ami2ban_firewall_errors_total\{op="ban"\} [1-9]/m);
    // The kernel accepts again: the retry puts it in force, and only then is it logged as a ban.
    r.firewall.failWith = undefined;
    await vi.waitUntil(() => r.firewall.elements.has('198.51.100.60'), { timeout: 3000, interval: 20 });
    await vi.waitUntil(() => r.log.lines.some((l) => l.message === 'ban' && l.meta.ip === '198.51.100.60'), { timeout: 3000, interval: 20 });
    expect((await r.client.call('GET', '/readyz')).status).toBe(200);
  });

  it('a ban database that fails (a full disk): the ban is in the kernel but not acknowledged (503) until the write succeeds', async () => {
    const m = smallTmpfs(1024);
    try {
      const r = await start({ env: { BAN_IGNOREIP: '' }, dir: m.dir });
      // The start's own write (closing bans that ended while down) is not waited for by the start.
      await vi.waitUntil(async () => ((await r.client.call('GET', '/v1/status')).body as { store: { pending: number } }).store.pending === 0, { timeout: 5000, interval: 20 });
      // Every write of ours fails from now on.
      const free = fillUp(m.dir);
      try {
        const res = await r.client.call('POST', '/v1/bans', { ip: '198.51.100.62', duration: '1h' });
        expect(res.status).toBe(503);
        expect(JSON.stringify(res.body)).toContain('blocked in the kernel, but the ban database failed');
        expect(JSON.stringify(res.body)).toContain('database or disk is full');
        expect(r.firewall.elements.has('198.51.100.62')).toBe(true);
        const status = (await r.client.call('GET', '/v1/status')).body as { store: { healthy: boolean; pending: number; writeErrors: number } };
        expect(status.store).toMatchObject({ healthy: false, pending: 1 });
        expect(status.store.writeErrors).toBeGreaterThan(0);
        expect(String((await r.client.call('GET', '/metrics')).body)).toContain('ami2ban_store_healthy 0');
        // The bans in force are still listed: they come from the daemon, not from the failing database.
        const listed = (await r.client.call('GET', '/v1/bans')).body as { bans: { ip: string }[] };
        expect(listed.bans.map((x) => x.ip)).toEqual(['198.51.100.62']);
        expect(r.log.lines.some((l) => l.message === 'ban')).toBe(false);
        // Nor can a backup be written there: said, not hidden.
        const backup = await cli(r, 'backup', []);
        expect(backup.code).toBe(1);
        expect(backup.err).toMatch(/^ami2ban: writing a backup to .*ami2ban-backup-.*\.sqlite from .*ami2ban\.sqlite failed: database or disk is full\n$/);
      } finally {
        free();
      }
      await vi.waitUntil(() => r.log.lines.some((l) => l.message === 'ban' && l.meta.ip === '198.51.100.62'), { timeout: 5000, interval: 20 });
      const status = (await r.client.call('GET', '/v1/status')).body as { store: { healthy: boolean; pending: number } };
      expect(status.store).toMatchObject({ healthy: true, pending: 0 });
      expect(await r.daemon.explain('198.51.100.62')).toMatchObject({ kind: 'explained', history: [{ rule: 'manual', ended: null }] });
    } finally {
      m.cleanup();
    }
  });

  it('ami2ban backup: a consistent copy of the database while the daemon holds it alone', async () => {
    const r = await start({ env: { BAN_IGNOREIP: '' } });
    expect(await r.daemon.ban('198.51.100.70', '1h', false)).toMatchObject({ kind: 'banned' });
    const original = join(r.dir, 'ami2ban.sqlite');
    // Held by the daemon: another process cannot read it.
    expect(() => new Database(original, { readonly: true, timeout: 0 }).prepare('SELECT 1 FROM bans').get()).toThrow(/database is locked/);
    const done = await cli(r, 'backup', []);
    expect(done.code).toBe(0);
    const path = /^backup written: (\S+) \((\d+) bytes\)\n$/.exec(done.out)?.[1] ?? '';
    expect(path.startsWith(join(r.dir, 'ami2ban-backup-'))).toBe(true);
    const copy = new Database(path, { readonly: true });
    try {
      expect(copy.prepare('SELECT ip, reason, ended_at FROM bans').all()).toEqual([{ ip: '198.51.100.70', reason: 'manual', ended_at: null }]);
    } finally {
      copy.close();
    }
    expect(r.log.lines.find((l) => l.message === 'ban database backed up')?.meta).toMatchObject({ backup: path });
    // Only a POST, with a JSON body or none.
    expect((await r.client.call('GET', '/v1/backup')).status).toBe(405);
  });

  it('lists thousands of bans page by page in one valid JSON answer', async () => {
    const r = await start({ env: { BAN_IGNOREIP: '' } });
    const ips = Array.from({ length: 2500 }, (_, i) => `198.18.${i >> 8}.${i & 255}`);
    await Promise.all(ips.map((ip) => r.daemon.ban(ip, '1h', false)));
    const res = await r.client.call('GET', '/v1/bans');
    expect(res.status).toBe(200);
    const listed = (res.body as { bans: BanView[] }).bans.map((b) => b.ip);
    expect(listed.sort()).toEqual([...ips].sort());
  });

  it('a duration past what the kernel accepts is a 400, never a crash or a silent failure', async () => {
    const r = await start({ env: { BAN_IGNOREIP: '' } });
    for (const duration of ['18446744074', '99999999999999999999999w', 1e300]) {
      const res = await r.client.call('POST', '/v1/bans', { ip: '198.51.100.63', duration });
      expect(res.status, String(duration)).toBe(400);
      expect(JSON.stringify(res.body)).toContain('at most 584 years');
    }
    expect(r.firewall.elements.has('198.51.100.63')).toBe(false);
  });

  it('a failed unban never answers 200, and the address stays banned in our view', async () => {
    const r = await start({ env: { BAN_IGNOREIP: '' } });
    expect((await r.client.call('POST', '/v1/bans', { ip: '198.51.100.61' })).status).toBe(201);
    r.firewall.failWith = new Error('Could not process rule: Device or resource busy');
    const res = await r.client.call('DELETE', '/v1/bans/198.51.100.61');
    expect(res.status).toBe(502);
    expect(JSON.stringify(res.body)).toContain('stays banned');
    expect((((await r.client.call('GET', '/v1/bans')).body as { bans: { ip: string }[] }).bans).map((b) => b.ip)).toEqual(['198.51.100.61']);
    r.firewall.failWith = undefined;
    expect((await r.client.call('DELETE', '/v1/bans/198.51.100.61')).status).toBe(200);
    expect(r.firewall.elements.has('198.51.100.61')).toBe(false);
  });
});

describe('a control plane nobody else can drive', () => {
  it('the unix socket is 0600 even under umask 000, and 0660 with CONTROL_GROUP', async () => {
    const before = process.umask(0);
    try {
      const r = await start();
      const path = join(r.dir, 'control.sock');
      expect(statSync(path).mode & 0o777).toBe(0o600);
      await r.control.close();
      const grouped = new ControlServer({ listen: { kind: 'unix', path }, token: undefined, target: r.daemon, metrics: new Metrics(), group: String(process.getgid?.() ?? 0) });
      await grouped.listen();
      expect(statSync(path).mode & 0o777).toBe(0o660);
      await grouped.close();
      const unknown = new ControlServer({ listen: { kind: 'unix', path }, token: undefined, target: r.daemon, metrics: new Metrics(), group: 'no-such-group-here' });
      await expect(unknown.listen()).rejects.toThrow('CONTROL_GROUP: no group named "no-such-group-here"');
    } finally {
      process.umask(before);
    }
  });

  it('never removes what is not a stale socket at the path', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ami2ban-sock-'));
    const path = join(dir, 'precious.txt');
    writeFileSync(path, 'keep me');
    const r = await start();
    const server = new ControlServer({ listen: { kind: 'unix', path }, token: undefined, target: r.daemon, metrics: new Metrics() });
    await expect(server.listen()).rejects.toThrow(`${path} exists and is not a socket; refusing to replace it`);
    expect(readFileSync(path, 'utf8')).toBe('keep me');
    // A live socket is not taken over either.
    const live = new ControlServer({ listen: { kind: 'unix', path: join(r.dir, 'control.sock') }, token: undefined, target: r.daemon, metrics: new Metrics() });
    await expect(live.listen()).rejects.toThrow('another process already listens on');
  });

  it('refuses requests with an Origin header, bodies that are not JSON, and malformed escapes', async () => {
    const r = await start();
    const raw = (method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; body: string }> =>
      new Promise((resolve, reject) => {
        const req = request({ socketPath: join(r.dir, 'control.sock'), method, path, headers }, (res) => {
          let text = '';
          res.on('data', (d: Buffer) => (text += d.toString()));
          res.on('end', () => {
            resolve({ status: res.statusCode ?? 0, body: text });
          });
        });
        req.on('error', reject);
        req.end(body);
      });
    const cross = await raw('POST', '/v1/bans', { origin: 'https://evil.example', 'content-type': 'application/json' }, '{"ip":"198.51.100.70"}');
    expect(cross.status).toBe(403);
    expect(cross.body).toContain('Origin');
    const form = await raw('POST', '/v1/bans', { 'content-type': 'text/plain' }, '{"ip":"198.51.100.70"}');
    expect(form.status).toBe(415);
    expect(r.firewall.elements.has('198.51.100.70')).toBe(false);
    expect((await raw('DELETE', '/v1/bans/%E0%A4%A', {})).status).toBe(400);
    expect((await raw('POST', '/v1/bans', { 'content-type': 'application/json; charset=utf-8' }, '{"ip":"198.51.100.70"}')).status).toBe(201);
  });

  it('METRICS_LISTEN serves /metrics, /healthz and /readyz only, without a token', async () => {
    const r = await start();
    const obs = new ControlServer({ listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, token: undefined, target: r.daemon, metrics: new Metrics(), observabilityOnly: true });
    await obs.listen();
    try {
      const c = new ControlClient({ kind: 'tcp', host: '127.0.0.1', port: obs.port() }, undefined);
      expect((await c.call('GET', '/healthz')).status).toBe(200);
      expect((await c.call('GET', '/metrics')).status).toBe(200);
      const ban = await c.call('POST', '/v1/bans', { ip: '198.51.100.71' });
      expect(ban.status).toBe(404);
      expect((await c.call('GET', '/v1/status')).status).toBe(404);
      expect(r.firewall.elements.has('198.51.100.71')).toBe(false);
    } finally {
      await obs.close();
    }
  });
});

describe('ControlClient', () => {
  it('says clearly when the daemon is not running', async () => {
    const c = new ControlClient({ kind: 'unix', path: join(mkdtempSync(join(tmpdir(), 'ami2ban-')), 'none.sock') }, undefined);
    await expect(c.call('GET', '/v1/status')).rejects.toThrow(/the ami2ban daemon is not running \(nothing listens on .*none\.sock/);
  });
});


describe('why was it banned (explain)', () => {
  it('the ban in force with its outcome, and every ban of the address the history keeps, with how each ended', async () => {
    const r = await start({ env: { BAN_IGNOREIP: '' } });
    expect((await r.client.call('POST', '/v1/bans', { ip: '198.51.100.60', duration: '1h' })).status).toBe(201);
    expect((await r.client.call('POST', '/v1/bans', { ip: '198.51.100.60', duration: '2h' })).status).toBe(201);
    expect((await r.client.call('DELETE', '/v1/bans/198.51.100.60')).status).toBe(200);
    // Three failed AMI logins: a threshold ban.
    r.server.broadcast(
      [1, 2, 3].map((n) => `Event: InvalidPassword\r\nPrivilege: security,all\r\nSeverity: Error\r\nService: AMI\r\nSessionID: 0x${n}\r\nRemoteAddress: IPV4/TCP/198.51.100.60/5038\r\n\r\n`).join(''),
    );
    await vi.waitUntil(() => r.daemon.counters.bans === 3, { timeout: 5000 });
    await r.daemon.idle();
    const res = await r.client.call('GET', '/v1/bans/198.51.100.60/explain');
    expect(res.status).toBe(200);
    const body = res.body as { ip: string; inForce: { outcome: string; reason: string; failures: number } | null; history: { rule: string; failures: number; events: Record<string, number>; ended: { why: string } | null }[] };
    expect(body.ip).toBe('198.51.100.60');
    expect(body.inForce).toMatchObject({ outcome: 'enforced', reason: 'threshold', failures: 3 });
    expect(body.history.map((h) => [h.rule, h.ended?.why ?? 'in force'])).toEqual([
      ['manual', 'extended'],
      ['manual', 'manual'],
      ['threshold', 'in force'],
    ]);
    expect(body.history[2]?.events).toEqual({ InvalidPassword: 3 });
    // Each failure behind it, from the ban database.
    expect((body.history[2] as unknown as { failuresShown: { event: string; transport: string }[] }).failuresShown.map((f) => `${f.event}/${f.transport}`)).toEqual(['InvalidPassword/TCP', 'InvalidPassword/TCP', 'InvalidPassword/TCP']);
    expect((body.history[0] as unknown as { failuresShown: unknown[] }).failuresShown).toEqual([]);
    // Never banned: an empty history; not an address: 400.
    expect((await r.client.call('GET', '/v1/bans/192.0.2.99/explain')).body).toMatchObject({ inForce: null, history: [] });
    expect((await r.client.call('GET', '/v1/bans/nonsense/explain')).status).toBe(400);
  });
});

describe('trust learned from logins, through the API and across a restart', () => {
  const login = (ip: string, account: string): string =>
    `Event: SuccessfulAuth\r\nPrivilege: security,all\r\nSeverity: Informational\r\nService: PJSIP\r\nSessionID: call-${ip}-${account}\r\nAccountID: ${account}\r\nRemoteAddress: IPV4/UDP/${ip}/5060\r\n\r\n`;

  it('a SIP login is listed by GET /v1/trust, kept in the ban database over a restart, and revoked by DELETE /v1/trust/{ip}', async () => {
    const r = await start();
    r.server.broadcast(login('192.0.2.90', '1001') + login('192.0.2.90', '1002') + login('192.0.2.91', '2001'));
    await vi.waitUntil(() => r.daemon.trusted().length === 3);
    const listed = await r.client.call('GET', '/v1/trust');
    expect(listed.status).toBe(200);
    expect((listed.body as { trusted: { ip: string; account: string }[] }).trusted.map((p) => `${p.ip} ${p.account}`).sort()).toEqual(['192.0.2.90 1001', '192.0.2.90 1002', '192.0.2.91 2001']);
    await r.control.close();
    await r.daemon.stop();
    await r.server.stop();
    rig = undefined;

    const again = await start({ env: { STATE_DIR: r.dir } });
    expect(again.daemon.trusted().map((p) => `${p.ip} ${p.account}`).sort()).toEqual(['192.0.2.90 1001', '192.0.2.90 1002', '192.0.2.91 2001']);
    const one = await again.client.call('DELETE', '/v1/trust/192.0.2.90?account=1002');
    expect(one.status).toBe(200);
    expect((one.body as { revoked: { account: string }[] }).revoked.map((p) => p.account)).toEqual(['1002']);
    const all = await again.client.call('DELETE', '/v1/trust/192.0.2.90');
    expect((all.body as { revoked: { account: string }[] }).revoked.map((p) => p.account)).toEqual(['1001']);
    expect((await again.client.call('DELETE', '/v1/trust/192.0.2.90')).status).toBe(404);
    expect((await again.client.call('DELETE', '/v1/trust/not-an-ip')).status).toBe(400);
    await again.daemon.stop();
    await again.control.close();
    await again.server.stop();
    rig = undefined;
    // The revocation is durable too.
    const third = await start({ env: { STATE_DIR: r.dir } });
    expect(third.daemon.trusted().map((p) => p.ip)).toEqual(['192.0.2.91']);
  });

  it('ami2ban trust lists the pairs; trust revoke IP [--account] revokes them; refusals exit non-zero', async () => {
    const r = await start();
    r.server.broadcast(login('192.0.2.95', '1001') + login('192.0.2.94', '1002'));
    await vi.waitUntil(() => r.daemon.trusted().length === 2);
    const run = (args: string[]): Promise<{ code: number; out: string; err: string }> => cli(r, 'trust', args);
    const listed = await run([]);
    expect(listed.code).toBe(0);
    expect(listed.out).toMatch(/^ADDRESS\s+ACCOUNT\s+UNTIL\n192\.0\.2\.94\s+1002\s+\S+Z\n192\.0\.2\.95\s+1001\s+\S+Z/);
    expect(JSON.parse((await run(['--json'])).out)).toMatchObject({ trusted: [{}, {}] });
    expect(await run(['revoke', '192.0.2.95', '--account', '1001'])).toMatchObject({ code: 0, out: 'revoked the trust of 192.0.2.95 for account 1001\n' });
    expect(await run(['revoke', '192.0.2.95'])).toMatchObject({ code: 1, err: 'ami2ban: 192.0.2.95 is not trusted\n' });
    expect((await run(['revoke'])).code).toBe(2);
    expect((await run(['forget', '192.0.2.94'])).code).toBe(2);
  });

  it('BAN_TRUST_SUCCESS=false keeps no trust', async () => {
    const r = await start({ env: { BAN_TRUST_SUCCESS: 'false' } });
    r.server.broadcast(login('192.0.2.92', '1001'));
    await vi.waitUntil(() => r.daemon.counters.events === 1);
    expect((await r.client.call('GET', '/v1/trust')).body).toEqual({ trusted: [] });
  });
});

describe('bans of networks through the API', () => {
  it('POST a CIDR: banned under its canonical text, the addresses inside it lifted; too wide is 400, holding an ignored address 409; DELETE lifts it', async () => {
    const r = await start();
    expect((await r.client.call('POST', '/v1/bans', { ip: '198.51.100.7', duration: '1h' })).status).toBe(201);
    const net = await r.client.call('POST', '/v1/bans', { ip: '198.51.100.99/24', duration: '2h' });
    expect(net.status).toBe(201);
    expect((net.body as { ban: BanView }).ban).toMatchObject({ ip: '198.51.100.0/24', family: 'ipv4', reason: 'manual' });
    await r.daemon.idle();
    expect([...r.firewall.elements.keys()]).toEqual(['198.51.100.0/24']);
    const listed = (await r.client.call('GET', '/v1/bans')).body as { bans: BanView[] };
    expect(listed.bans.map((b) => b.ip)).toEqual(['198.51.100.0/24']);
    // an address inside is banned already
    expect((await r.client.call('POST', '/v1/bans', { ip: '198.51.100.8' })).status).toBe(409);
    const wide = await r.client.call('POST', '/v1/bans', { ip: '100.64.0.0/10' });
    expect(wide.status).toBe(400);
    expect(JSON.stringify(wide.body)).toContain('wider than /16');
    expect((await r.client.call('POST', '/v1/bans', { ip: '100.64.0.0/10', force: true })).status).toBe(201);
    const holds = await r.client.call('POST', '/v1/bans', { ip: '10.1.0.0/16', force: true });
    expect(holds.status).toBe(409);
    expect(JSON.stringify(holds.body)).toContain('ignore list');
    expect((await r.client.call('DELETE', '/v1/bans/198.51.100.0%2F24')).status).toBe(200);
    await r.daemon.idle();
    expect([...r.firewall.elements.keys()]).toEqual(['100.64.0.0/10']);
    const explained = (await r.client.call('GET', '/v1/bans/198.51.100.0%2F24/explain')).body as { history: { rule: string; ended: { why: string } | null }[] };
    expect(explained.history.map((h) => [h.rule, h.ended?.why])).toEqual([['manual', 'manual']]);
    // the address ban it replaced ended as `subnet`
    const before = (await r.client.call('GET', '/v1/bans/198.51.100.7/explain')).body as { history: { ended: { why: string } | null }[] };
    expect(before.history.map((h) => h.ended?.why)).toEqual(['subnet']);
  });
});

describe('escalation to a network in the daemon', () => {
  it('the third banned address of a /64: the /64 goes into the firewall and the two address elements come out', async () => {
    const r = await start({ env: { BAN_IGNOREIP: '', BAN_SUBNET_ESCALATE: '3', BAN_SUBNET_MAXRETRY: '0' } });
    const block = (ip: string, n: number): string =>
      `Event: InvalidPassword\r\nPrivilege: security,all\r\nSeverity: Error\r\nService: AMI\r\nSessionID: 0x${String(n)}\r\nRemoteAddress: IPV6/TCP/${ip}/5038\r\n\r\n`;
    let n = 0;
    for (const ip of ['2001:db8:4:4::1', '2001:db8:4:4::2', '2001:db8:4:4::3']) r.server.broadcast([1, 2, 3].map(() => block(ip, ++n)).join(''));
    await vi.waitUntil(() => r.firewall.elements.has('2001:db8:4:4::/64'), { timeout: 5000 });
    await r.daemon.idle();
    await vi.waitUntil(() => r.firewall.elements.size === 1, { timeout: 5000 });
    expect([...r.firewall.elements.keys()]).toEqual(['2001:db8:4:4::/64']);
    const listed = (await r.client.call('GET', '/v1/bans')).body as { bans: BanView[] };
    expect(listed.bans.map((b) => [b.ip, b.reason])).toEqual([['2001:db8:4:4::/64', 'subnet']]);
    expect(r.log.messages('info').filter((m) => m === 'ban replaced by a ban of its network')).toHaveLength(2);
  });
});

describe('consistency check of a banned network', () => {
  it('failures from an address inside a banned network whose element was lost put the network back', async () => {
    const r = await start({ env: { BAN_IGNOREIP: '' } });
    expect((await r.client.call('POST', '/v1/bans', { ip: '198.51.100.0/24', duration: '1h' })).status).toBe(201);
    await r.daemon.idle();
    r.firewall.elements.clear();
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(Date.now() + 6000);
      r.server.broadcast(`Event: InvalidPassword\r\nPrivilege: security,all\r\nSeverity: Error\r\nService: AMI\r\nSessionID: 0x1\r\nRemoteAddress: IPV4/TCP/198.51.100.50/5038\r\n\r\n`);
      await vi.waitUntil(() => r.firewall.elements.has('198.51.100.0/24'), { interval: 5 });
    } finally {
      vi.useRealTimers();
    }
    expect([...r.firewall.elements.keys()]).toEqual(['198.51.100.0/24']);
  });
});

describe('a network ban the kernel refuses', () => {
  it('keeps the address bans inside it in the kernel: none goes free while the network is not enforced', async () => {
    const r = await start({ env: { BAN_IGNOREIP: '' } });
    expect((await r.client.call('POST', '/v1/bans', { ip: '198.51.100.7', duration: '1h' })).status).toBe(201);
    r.firewall.refuse = (ip) => (ip.includes('/') ? new Error('interval overlaps with an existing one') : undefined);
    const net = await r.client.call('POST', '/v1/bans', { ip: '198.51.100.0/24', duration: '1h' });
    expect(net.status).toBe(502);
    await r.daemon.idle();
    expect(r.firewall.elements.has('198.51.100.7')).toBe(true);
    expect(r.firewall.operations).not.toContain('unban 198.51.100.7');
  });
});
