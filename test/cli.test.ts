import { createServer } from 'node:net';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { FakeAmiServer, eventBlocks } from '../src/demo/fake-ami-server.js';
import { spawn } from 'node:child_process';
import { ROOT, cleanEnv, runCli, startCli } from './helpers/cli.js';
import { SYSTEMD_SOCKET, controlAddress } from '../src/cli-control.js';
import { loadConfig } from '../src/config/config.js';
import { EXPECTED_BANS, FIXTURE_DIR, fixture } from './helpers/fixtures.js';

const SECRET = 'ami2ban-secret';
const CREDS = { AMI_USERNAME: 'ami2ban', AMI_SECRET: SECRET };

describe('ami2ban replay (acceptance: the bans listed in the fixtures README)', () => {
  for (const name of ['ami-ami2ban-events-security.raw', 'ami-amiall-events-on.raw', 'security.log']) {
    it(`${name} bans exactly the expected addresses`, async () => {
      const r = await runCli(['replay', `${FIXTURE_DIR}${name}`, '--json'], { BAN_IGNOREIP: '' });
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const bans = r.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { ip: string; at: string; failures: number; banSeconds: number });
      expect(bans.map((b) => b.ip).sort()).toEqual([...EXPECTED_BANS].sort());
      for (const b of bans) {
        expect(Object.keys(b)).toEqual(['ip', 'at', 'failures', 'banSeconds', 'rule']);
        expect((b as { rule?: string }).rule).toBe('threshold');
        expect(b.failures).toBe(3);
        expect(b.banSeconds).toBe(3600);
        expect(b.at).toMatch(/^2026-11-21T22:36:\d\d\.\d{3}Z$/);
      }
    });
  }

  // attack-tools/README.md: the expected ban of each capture, and the event it must fall on at the latest.
  const ATTACKS = [
    { name: 'svcrack-udp-1001-300-wrong', bans: [{ ip: '127.0.0.42', at: '2026-11-22T04:49:15.758Z' }] },
    { name: 'svmap-svwar-udp', bans: [{ ip: '127.0.0.41', at: '2026-11-22T04:51:10.452Z' }] },
    { name: 'good-phone-10-ok-2-badpass', bans: [] },
    // No counted event at all; its 10 REGISTERs' challenges go unanswered (BAN_UNANSWERED_MAXRETRY 10).
    { name: 'v2-slow-scanner-register-unknown', bans: [{ ip: '127.0.0.36', at: '2026-11-22T04:52:23.534Z' }], failures: 10 },
  ];
  for (const attack of ATTACKS) {
    for (const ext of ['.raw', '.security.log']) {
      it(`attack-tools/${attack.name}${ext}: ${attack.bans.length === 0 ? 'nobody' : attack.bans.map((b) => b.ip).join(', ')} banned`, async () => {
        const r = await runCli(['replay', `${FIXTURE_DIR}attack-tools/${attack.name}${ext}`, '--json'], { BAN_IGNOREIP: '' });
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
        const bans = r.stdout.trim() === '' ? [] : r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { ip: string; at: string; failures: number; rule: string });
        expect(bans.map((b) => ({ ip: b.ip, at: b.at }))).toEqual(attack.bans);
        for (const b of bans) expect(b.rule).toBe(attack.failures === undefined ? 'threshold' : 'unanswered');
        for (const b of bans) expect(b.failures).toBe(attack.failures ?? 3);
      });
    }
  }

  it('the slow scanner under the counting rule alone (BAN_UNANSWERED_MAXRETRY=0): nobody banned', async () => {
    for (const ext of ['.raw', '.security.log']) {
      const r = await runCli(['replay', `${FIXTURE_DIR}attack-tools/v2-slow-scanner-register-unknown${ext}`, '--json'], { BAN_IGNOREIP: '', BAN_UNANSWERED_MAXRETRY: '0' });
      expect(r.code).toBe(0);
      expect(r.stdout.trim()).toBe('');
    }
  });

  it('svcrack: each of its 300 guesses on one Call-ID is a failure (threshold set out of reach)', async () => {
    const r = await runCli(['replay', `${FIXTURE_DIR}attack-tools/svcrack-udp-1001-300-wrong.raw`], { BAN_IGNOREIP: '', BAN_MAXRETRY: '1000' });
    expect(r.stdout).toContain('302 security events, 300 failures counted, 0 bans');
  });

  it('uses the effective configuration: default ignore list, maxretry, permanent bans', async () => {
    const def = await runCli(['replay', `${FIXTURE_DIR}ami-ami2ban-events-security.raw`, '--json'], {});
    expect(def.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { ip: string }).ip)).toEqual(['fd00::2', 'fd00::3']);
    const strict = await runCli(['replay', `${FIXTURE_DIR}security.log`, '--json'], { BAN_IGNOREIP: '', BAN_MAXRETRY: '2', BAN_BANTIME: '-1' });
    const ips = strict.stdout.trim().split('\n').map((l) => JSON.parse(l) as { ip: string; banSeconds: number });
    expect(ips.map((b) => b.ip)).toContain('127.0.0.4');
    expect(ips.every((b) => b.banSeconds === -1)).toBe(true);
  });

  it('prints a readable table by default', async () => {
    const r = await runCli(['replay', `${FIXTURE_DIR}security.log`], { BAN_IGNOREIP: '' });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('(security-log): 140 security events, 29 failures counted, 8 bans');
    expect(r.stdout).toMatch(/TIME\s+ADDRESS\s+FAILURES\s+BAN\s+RULE\s+EVENTS/);
    expect(r.stdout).toMatch(/127\.0\.0\.11\s+3\s+1h\s+threshold\s+InvalidAccountID×1,InvalidPassword×1,ChallengeResponseFailed×1/);
  });

  it('--explain: under each ban the failures behind it (time, event, account, transport); with --json as `details`', async () => {
    const r = await runCli(['replay', `${FIXTURE_DIR}attack-tools/svmap-svwar-udp.raw`, '--explain'], { BAN_IGNOREIP: '' });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      /127\.0\.0\.41\s+3\s+1h\s+threshold\s+InvalidAccountID×3\n {4}2026-11-22T04:51:05\.212Z {2}InvalidAccountID {2}UDP\n {4}\S+ {2}InvalidAccountID {2}account \d+ {2}UDP\n {4}2026-11-22T04:51:10\.452Z {2}InvalidAccountID {2}account 937802247 {2}UDP\n/,
    );
    const slow = await runCli(['replay', `${FIXTURE_DIR}attack-tools/v2-slow-scanner-register-unknown.raw`, '--explain', '--json'], { BAN_IGNOREIP: '' });
    const ban = slow.stdout.trim().split('\n').map((l) => JSON.parse(l) as { ip: string; rule: string; details: { event: string }[] }).find((b) => b.ip === '127.0.0.36');
    expect(ban?.rule).toBe('unanswered');
    expect(ban?.details.map((d) => d.event)).toEqual(Array.from({ length: 10 }, () => 'UnansweredChallenge'));
    // Without --explain, --json stays as it was.
    const plain = await runCli(['replay', `${FIXTURE_DIR}attack-tools/svmap-svwar-udp.raw`, '--json'], { BAN_IGNOREIP: '' });
    expect(plain.stdout).not.toContain('details');
  });

  it('a reader that goes away (`| head`) ends replay quietly', async () => {
    const child = startCli(['replay', `${FIXTURE_DIR}security.log`, '--explain'], { BAN_IGNOREIP: '' });
    let err = '';
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout?.once('data', () => child.stdout?.destroy());
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(err).not.toContain('EPIPE');
    expect(code).toBe(0);
  });

  it('refuses a file it cannot read or understand', async () => {
    const missing = await runCli(['replay', '/nonexistent.raw'], {});
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('cannot read /nonexistent.raw');
    const dir = mkdtempSync(join(tmpdir(), 'ami2ban-'));
    writeFileSync(join(dir, 'junk'), 'hello world\n');
    const junk = await runCli(['replay', join(dir, 'junk')], {});
    expect(junk.code).toBe(1);
    expect(junk.stderr).toContain('neither an AMI capture');
    expect(junk.stderr).not.toMatch(/\n\s+at /);
    const usage = await runCli(['replay'], {});
    expect(usage.code).toBe(2);
  });
});

describe('ami2ban check-config', () => {
  it('prints the effective configuration with the secret masked', async () => {
    const r = await runCli(['check-config'], { ...CREDS, BAN_MAXRETRY: '5' });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/BAN_MAXRETRY\s+5\s+env/);
    expect(r.stdout).toMatch(/BAN_FINDTIME\s+10m\s+default/);
    expect(r.stdout).toMatch(/AMI_SECRET\s+\*{8}\s+env/);
    expect(r.stdout).not.toContain(SECRET);
  });

  it('says what derived settings mean once defaults apply: where the control API listens, what is unused', async () => {
    const r = await runCli(['check-config'], { ...CREDS, STATE_DIR: '/srv/a2b', CONTROL_GROUP: 'asterisk', BAN_IGNOREIP: '10.0.0.0/8 sip.example.net' }, ROOT);
    expect(r.code).toBe(0);
    // cleanEnv names a socket; without CONTROL_LISTEN the default is STATE_DIR's
    const unset = await runCli(['check-config'], { ...CREDS, STATE_DIR: '/srv/a2b', CONTROL_LISTEN: '' });
    expect(unset.stdout).toMatch(/CONTROL_LISTEN\s+\(empty\)\s+default\s+unix socket \/srv\/a2b\/control\.sock, mode 0600$/m);
    expect(r.stdout).toMatch(/CONTROL_LISTEN\s+\S+control\.sock\s+env\s+unix socket \S+, mode 0660 group asterisk$/m);
    expect(r.stdout).toMatch(/BAN_MULTIPLIERS\s+\(empty\)\s+default\s+unused: BAN_INCREMENT=false$/m);
    expect(r.stdout).toMatch(/BAN_IGNOREIP\s+10\.0\.0\.0\/8 sip\.example\.net\s+env\s+1 network \+ 1 host name /m);
    expect(r.stdout).toMatch(/BAN_DNS_SERVERS\s+\(empty\)\s+default\s+the system's resolvers$/m);
    expect(r.stdout).toMatch(/METRICS_LISTEN\s+\(empty\)\s+default\s+off: \/metrics on the control socket only$/m);
    expect(r.stdout).toMatch(/LOG_FORMAT\s+auto\s+default\s+json \(not a terminal\)$/m);
    const inc = await runCli(['check-config'], { ...CREDS, BAN_INCREMENT: 'true' });
    expect(inc.stdout).toMatch(/BAN_MULTIPLIERS\s+\(empty\)\s+default\s+the 2\^n formula$/m);
    expect(inc.stdout).toMatch(/BAN_MAXTIME\s+1w\s+default$/m);
  });

  it('lists every bad variable and exits 2, never printing the secret', async () => {
    const r = await runCli(['check-config'], { AMI_SECRET: SECRET, AMI_PORT: 'x', BAN_FINDTIME: 'soon' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('AMI_USERNAME: not set');
    expect(r.stderr).toContain('AMI_PORT: "x" is not valid');
    expect(r.stderr).toContain('BAN_FINDTIME: "soon" is not valid');
    expect(r.stderr + r.stdout).not.toContain(SECRET);
  });

  it('reads .env from the working directory; the real environment wins', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ami2ban-'));
    writeFileSync(join(dir, '.env'), 'AMI_USERNAME=fromfile\nAMI_SECRET=filesecret\nBAN_MAXRETRY=7\n');
    const r = await runCli(['check-config'], { BAN_MAXRETRY: '9' }, dir);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/AMI_USERNAME\s+fromfile\s+\.env/);
    expect(r.stdout).toMatch(/BAN_MAXRETRY\s+9\s+env/);
  });

  it('an unknown command is a usage error', async () => {
    const r = await runCli(['frobnicate'], {});
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown command "frobnicate"');
  });
});

describe('ami2ban run', () => {
  let server: FakeAmiServer | undefined;
  afterEach(async () => {
    await server?.stop();
  });

  it('bans from live AMI events, one JSON line per ban, and stops cleanly on SIGTERM', async () => {
    server = new FakeAmiServer({ username: 'ami2ban', secret: SECRET });
    const port = await server.start();
    // fd00::2 and fd00::3 are on the namespace's lo: not self for this test.
    const child = startCli(['run'], { ...CREDS, AMI_PORT: String(port), BAN_IGNOREIP: '', BAN_IGNORESELF: 'false', FIREWALL: 'dry-run' });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    await server.nextSubscription();
    server.broadcast(Buffer.concat(eventBlocks(fixture('ami-ami2ban-events-security.raw'))));
    const lines = (): Record<string, unknown>[] =>
      out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    await vi.waitUntil(() => lines().filter((l) => l.message === 'ban').length === 8, { timeout: 5000 });
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    const t0 = Date.now();
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(Date.now() - t0).toBeLessThan(5000);
    const all = lines();
    expect(all.filter((l) => l.message === 'ban').map((l) => l.ip).sort()).toEqual([...EXPECTED_BANS].sort());
    expect(all.find((l) => l.message === 'ban')).toMatchObject({ level: 'info', reason: 'threshold', failures: 3, duration: '1h' });
    expect(all.map((l) => l.message)).toContain('ami2ban stopped');
    expect(all.find((l) => l.message === 'counts')).toMatchObject({ bans: 8, events: 139 });
    expect(out).not.toContain(SECRET);
  });

  it('exits non-zero after AMI_GIVEUP without a login (a sidecar stranded in a dead namespace gets restarted)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ami2ban-giveup-'));
    const r = await runCli(['run'], { ...CREDS, AMI_PORT: '1', AMI_GIVEUP: '2s', AMI_RECONNECT_MAX: '1s', FIREWALL: 'dry-run', STATE_DIR: dir });
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('giving up: exiting so that the orchestrator restarts ami2ban');
    expect(r.stdout).toMatch(/no AMI login for \d+ s \(AMI_GIVEUP\); last error: .*ECONNREFUSED/);
  });

  it('against the standalone fake AMI of the image smoke test: ready, and the attacker banned', async () => {
    const fake = spawn(process.execPath, [`${ROOT}dist/src/demo/fake-ami.js`, '0', 'ami2ban', SECRET, '192.0.2.66'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let fakeOut = '';
    fake.stdout.on('data', (d: Buffer) => (fakeOut += d.toString()));
    await vi.waitUntil(() => /listening on 0\.0\.0\.0:(\d+)/.test(fakeOut), { timeout: 5000 });
    const port = /listening on 0\.0\.0\.0:(\d+)/.exec(fakeOut)?.[1] ?? '';
    const env = cleanEnv({ ...CREDS, AMI_PORT: port, BAN_IGNOREIP: '', FIREWALL: 'dry-run' });
    const child = startCli(['run'], env);
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await vi.waitUntil(() => out.includes('"message":"ban"'), { timeout: 5000 });
      const ban = out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((l) => l.message === 'ban');
      expect(ban).toMatchObject({ ip: '192.0.2.66', events: 'InvalidPassword×3', failures: 3 });
      const ready = await runCli(['ready'], env);
      expect(ready.code).toBe(0);
      expect(ready.stdout.trim()).toBe('ready');
    } finally {
      child.kill('SIGTERM');
      fake.kill('SIGTERM');
    }
    const notReady = await runCli(['ready'], env);
    expect(notReady.code).toBe(1);
  });

  it('a bad configuration stops it at start with exit code 2', async () => {
    const r = await runCli(['run'], { AMI_USERNAME: 'u' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('AMI_SECRET: not set');
  });
});

describe('arguments (util.parseArgs)', () => {
  it('--help on a command prints its usage and exits 0 (run --help does not start the daemon)', async () => {
    const r = await runCli(['run', '--help'], {});
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('usage: ami2ban run');
    const ban = await runCli(['ban', '-h'], {});
    expect(ban.code).toBe(0);
    expect(ban.stdout).toContain('-1 for permanent');
  });

  it('names an unknown option or a missing argument, with the usage, exit 2', async () => {
    const unknown = await runCli(['list', '--jsn'], {});
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('ami2ban list: unknown option --jsn');
    expect(unknown.stderr).toContain('usage: ami2ban list [--json]');
    const missing = await runCli(['replay'], {});
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('ami2ban replay: missing argument');
    const extra = await runCli(['status', 'now'], {});
    expect(extra.stderr).toContain('unexpected argument "now"');
  });

  it('--for=1h and --for 1h alike, and a value starting with a dash is the value (--for -1)', async () => {
    const { parseCommand } = await import('../src/cli-args.js');
    expect(parseCommand('ban', ['192.0.2.1', '--for=1h'])).toMatchObject({ kind: 'ok', values: { for: '1h' }, positionals: ['192.0.2.1'] });
    expect(parseCommand('ban', ['--for', '-1', '192.0.2.1', '--force'])).toMatchObject({ kind: 'ok', values: { for: '-1', force: true }, positionals: ['192.0.2.1'] });
    expect(parseCommand('unban', ['--all'])).toMatchObject({ kind: 'ok', values: { all: true }, positionals: [] });
  });

  it('list sorts addresses numerically, IPv4 before IPv6', async () => {
    const { sortedByAddress } = await import('../src/cli-control.js');
    const view = (ip: string): { ip: string } => ({ ip });
    const ips = ['2001:db8::10', '10.0.0.10', '2001:db8::/64', '2001:db8::9', '10.0.0.9', '9.1.1.1', '10.0.0.0/24'];
    expect(sortedByAddress(ips.map(view)).map((b) => b.ip)).toEqual(['9.1.1.1', '10.0.0.0/24', '10.0.0.9', '10.0.0.10', '2001:db8::/64', '2001:db8::9', '2001:db8::10']);
  });
});

describe('signals and the env file', () => {
  it('Ctrl-C ends a client command at once, even while the daemon does not answer', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ami2ban-'));
    const path = join(dir, 'mute.sock');
    const mute = createServer(() => undefined);
    await new Promise<void>((resolve) => mute.listen(path, resolve));
    try {
      const child = startCli(['status'], { ...CREDS, CONTROL_LISTEN: path });
      await new Promise((r) => setTimeout(r, 500));
      expect(child.exitCode).toBeNull();
      const exited = new Promise<NodeJS.Signals | null>((resolve) => {
        child.on('exit', (_code, signal) => {
          resolve(signal);
        });
      });
      child.kill('SIGINT');
      const signal = await Promise.race([
        exited,
        new Promise<'still running'>((r) => {
          setTimeout(() => {
            r('still running');
          }, 2000);
        }),
      ]);
      expect(signal).toBe('SIGINT');
    } finally {
      mute.close();
    }
  });

  it('a missing AMI2BAN_ENV_FILE is an error naming it (a missing ./.env is not)', async () => {
    const r = await runCli(['check-config'], { ...CREDS, AMI2BAN_ENV_FILE: '/nonexistent/ami2ban.env' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('AMI2BAN_ENV_FILE: cannot read "/nonexistent/ami2ban.env": no such file');
    const ok = await runCli(['check-config'], { ...CREDS }, mkdtempSync(join(tmpdir(), 'ami2ban-')));
    expect(ok.code).toBe(0);
  });
});

describe('where the CLI finds the daemon', () => {
  const config = loadConfig({ STATE_DIR: '/var/lib/ami2ban', AMI_USERNAME: 'a', AMI_SECRET: 'b' }, { purpose: 'client' });
  it('STATE_DIR\'s socket by default; the systemd unit\'s (/run/ami2ban) when only that one exists; CONTROL_LISTEN always wins', () => {
    const only = (paths: string[]) => (p: string): boolean => paths.includes(p);
    expect(controlAddress(config, {}, only(['/var/lib/ami2ban/control.sock', SYSTEMD_SOCKET]))).toEqual({ kind: 'unix', path: '/var/lib/ami2ban/control.sock' });
    expect(controlAddress(config, {}, only([SYSTEMD_SOCKET]))).toEqual({ kind: 'unix', path: SYSTEMD_SOCKET });
    expect(controlAddress(config, {}, only([]))).toEqual({ kind: 'unix', path: '/var/lib/ami2ban/control.sock' });
    const named = loadConfig({ STATE_DIR: '/var/lib/ami2ban', CONTROL_LISTEN: '/srv/c.sock', AMI_USERNAME: 'a', AMI_SECRET: 'b' }, { purpose: 'client' });
    expect(controlAddress(named, { CONTROL_LISTEN: '/srv/c.sock' }, only([SYSTEMD_SOCKET]))).toEqual({ kind: 'unix', path: '/srv/c.sock' });
  });
});
