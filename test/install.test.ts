// The bare-metal install (scripts/install.sh) in a scratch root, and its systemd unit checked by
// systemd itself. Everything but starting systemd: the installed program is run as the unit runs
// it, by an unprivileged user holding only CAP_NET_ADMIN, against the real kernel (in a network
// namespace of its own, so that the kernel tests' ruleset flushes running beside it do not touch it).
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ROOT, runCli } from './helpers/cli.js';
import { OwnNetns, assertPrivateNetns, setElements } from './helpers/kernel.js';

const INSTALL = `${ROOT}scripts/install.sh`;
const UNIT = `${ROOT}deploy/systemd/ami2ban.service`;

function install(root: string, ...args: string[]): { code: number | null; out: string } {
  const r = spawnSync(INSTALL, ['--root', root, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout + r.stderr };
}

/** `KEY=value` lines of an env file, as systemd's EnvironmentFile= reads them (last one wins). */
function envFile(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    if (m?.[1] !== undefined) out[m[1]] = m[2] ?? '';
  }
  return out;
}

describe('deploy/systemd/ami2ban.service', () => {
  it('passes `systemd-analyze verify`', () => {
    const r = spawnSync('systemd-analyze', ['verify', UNIT], { encoding: 'utf8', cwd: tmpdir() });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('is rated OK or better by `systemd-analyze security` (exposure at most 2.0)', () => {
    const r = spawnSync('systemd-analyze', ['security', '--offline=true', '--threshold=20', UNIT], { encoding: 'utf8', cwd: tmpdir() });
    const m = /Overall exposure level for ami2ban\.service: (\d+\.\d) (\w+)/.exec(r.stdout);
    expect(m?.[2]).toMatch(/^(OK|SAFE|PERFECT)$/);
    expect(Number(m?.[1])).toBeLessThanOrEqual(2);
    expect(r.status).toBe(0);
  });

  it('runs unprivileged with only CAP_NET_ADMIN, its state, socket and settings where the README says, reloads with SIGHUP', () => {
    const unit = readFileSync(UNIT, 'utf8');
    const has = (line: string): boolean => unit.split('\n').includes(line);
    for (const line of [
      'User=ami2ban',
      'AmbientCapabilities=CAP_NET_ADMIN',
      'CapabilityBoundingSet=CAP_NET_ADMIN',
      'NoNewPrivileges=yes',
      'StateDirectory=ami2ban',
      'RuntimeDirectory=ami2ban',
      'EnvironmentFile=/etc/ami2ban/ami2ban.env',
      'ProtectSystem=strict',
      'ProtectHome=yes',
      'PrivateTmp=yes',
      'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK',
      'SystemCallFilter=@system-service',
      'Restart=on-failure',
      'ExecReload=/bin/kill -HUP $MAINPID',
    ]) expect(has(line), line).toBe(true);
    expect(unit).toMatch(/^Environment=.*CONTROL_LISTEN=\/run\/ami2ban\/control\.sock/m);
  });
});

describe('scripts/install.sh in a scratch root', () => {
  let root: string;
  let out: string;
  let netns: OwnNetns;

  beforeAll(async () => {
    assertPrivateNetns();
    netns = await new OwnNetns().ready();
    root = mkdtempSync(join(tmpdir(), 'ami2ban-root-'));
    // The unprivileged user must be able to reach the program through the scratch root.
    chmodSync(root, 0o755);
    mkdirSync(join(root, 'etc'));
    for (const f of ['passwd', 'group', 'shadow', 'gshadow']) copyFileSync(`/etc/${f}`, join(root, 'etc', f));
    const r = install(root, '--no-build');
    out = r.out;
    expect(r.code, out).toBe(0);
    // It copies node_modules and prunes it: 2 s alone, over 10 s once beside a busy test file.
  }, 60_000);

  afterAll(() => {
    netns.close();
  });

  it('installs the program, the command, the user, a root-only env file with a fresh secret, and the unit', () => {
    expect(existsSync(join(root, 'opt/ami2ban/dist/src/main.js'))).toBe(true);
    expect(existsSync(join(root, 'opt/ami2ban/packages/nftables-napi/build/Release/nftables_napi.node'))).toBe(true);
    // production dependencies only
    expect(existsSync(join(root, 'opt/ami2ban/node_modules/winston'))).toBe(true);
    expect(existsSync(join(root, 'opt/ami2ban/node_modules/vitest'))).toBe(false);
    expect(existsSync(join(root, 'opt/ami2ban/node_modules/typescript'))).toBe(false);
    expect(readlinkSync(join(root, 'usr/local/bin/ami2ban'))).toBe('/opt/ami2ban/bin/ami2ban.js');
    expect(readFileSync(join(root, 'etc/passwd'), 'utf8')).toMatch(/^ami2ban:x:\d+:\d+::\/var\/lib\/ami2ban:\/usr\/sbin\/nologin$/m);

    const env = join(root, 'etc/ami2ban/ami2ban.env');
    expect(statSync(env).mode & 0o777).toBe(0o600);
    const settings = envFile(env);
    expect(settings.AMI_SECRET).toMatch(/^[0-9a-f]{48}$/);
    expect(settings.CONTROL_LISTEN).toBe('/run/ami2ban/control.sock');
    expect(settings.STATE_DIR).toBe('/var/lib/ami2ban');
    // the manager.conf snippet to add carries the same secret
    expect(out).toContain(`[ami2ban]\nsecret = ${settings.AMI_SECRET ?? ''}\nread = security\n`);

    const unit = readFileSync(join(root, 'etc/systemd/system/ami2ban.service'), 'utf8');
    expect(unit).toContain(`ExecStart=${process.execPath} /opt/ami2ban/bin/ami2ban.js run`);
    expect(spawnSync('systemd-analyze', ['verify', join(root, 'etc/systemd/system/ami2ban.service')], { encoding: 'utf8', cwd: tmpdir() }).status).toBe(0);
  });

  it('the installed program accepts its env file (check-config), and runs as the unit does: unprivileged, CAP_NET_ADMIN only, bans in the kernel', async () => {
    const prefix = join(root, 'opt/ami2ban');
    const envPath = join(root, 'etc/ami2ban/ami2ban.env');
    const check = spawnSync(process.execPath, [join(prefix, 'bin/ami2ban.js'), 'check-config'], { encoding: 'utf8', env: { PATH: process.env.PATH, AMI2BAN_ENV_FILE: envPath } });
    expect(check.stdout).toContain('configuration is valid');
    expect(check.status).toBe(0);

    const [, uid = '', gid = ''] = /^ami2ban:x:(\d+):(\d+):/m.exec(readFileSync(join(root, 'etc/passwd'), 'utf8')) ?? [];
    const state = join(root, 'var/lib/ami2ban');
    const run = join(root, 'run/ami2ban');
    for (const d of [state, run]) {
      mkdirSync(join(d, '..'), { recursive: true });
      mkdirSync(d, { mode: 0o750 });
      execFileSync('chown', [`${uid}:${gid}`, d]);
    }
    const asUnit = ['--reuid', uid, '--regid', gid, '--clear-groups', '--inh-caps=-all,+net_admin', '--ambient-caps=-all,+net_admin', '--bounding-set=-all,+net_admin', '--no-new-privs'];
    // The secret is root's alone: the service user cannot read the env file (systemd reads it for the unit).
    const denied = spawnSync('setpriv', [...asUnit, process.execPath, join(prefix, 'bin/ami2ban.js'), 'check-config'], { encoding: 'utf8', env: { PATH: process.env.PATH, AMI2BAN_ENV_FILE: envPath } });
    expect(denied.stderr).toContain(`AMI2BAN_ENV_FILE: cannot read "${envPath}": permission denied (running as uid ${uid})`);
    expect(denied.status).toBe(2);

    const settings = envFile(envPath);
    const secret = settings.AMI_SECRET ?? '';
    // Asterisk's stand-in, inside the daemon's namespace.
    const ami = spawn(...netns.command(process.execPath, `${ROOT}dist/src/demo/fake-ami.js`, '5038', 'ami2ban', secret), { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      ami.stdout.on('data', (d: Buffer) => { if (d.toString().includes('listening')) resolve(); });
      ami.once('exit', () => { reject(new Error('the fake AMI exited')); });
    });
    const socket = join(run, 'control.sock');
    // What systemd does for the unit: the env file, then the user, group and ambient capability.
    const child: ChildProcess = spawn(...netns.command('setpriv', ...asUnit, process.execPath, join(prefix, 'bin/ami2ban.js'), 'run'), {
      env: { PATH: process.env.PATH, ...settings, STATE_DIR: state, CONTROL_LISTEN: socket, AMI_PORT: '5038', NFT_TABLE: 'ami2ban_installed', BAN_IGNORESELF: 'false', LOG_FORMAT: 'json' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let log = '';
    child.stdout?.on('data', (d: Buffer) => (log += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    try {
      const ctl = (args: string[]): ReturnType<typeof runCli> => runCli(args, { CONTROL_LISTEN: socket });
      await vi.waitUntil(async () => child.exitCode !== null || (await ctl(['ready'])).code === 0, { timeout: 15_000, interval: 100 });
      expect(child.exitCode, log).toBeNull();
      const ban = await ctl(['ban', '198.51.100.77', '--for', '10m']);
      expect(ban.stdout.trim(), ban.stderr).toBe('banned 198.51.100.77 for 10m');
      expect(setElements('ami2ban_installed', 'ipv4_addr', netns).has('198.51.100.77')).toBe(true);
      // the database and the socket belong to the unprivileged user; the socket is theirs alone
      expect(statSync(join(state, 'ami2ban.sqlite')).uid).toBe(Number(uid));
      expect(lstatSync(socket).mode & 0o777).toBe(0o600);
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      ami.kill('SIGKILL');
    }
  });

  it('a second install keeps the settings; --uninstall removes the program and keeps settings, state and kernel bans; --purge removes the rest', () => {
    const env = join(root, 'etc/ami2ban/ami2ban.env');
    const before = readFileSync(env, 'utf8');
    expect(install(root, '--no-build').code).toBe(0);
    expect(readFileSync(env, 'utf8')).toBe(before);

    const u = install(root, '--uninstall');
    expect(u.code, u.out).toBe(0);
    expect(u.out).toContain('left in the kernel');
    for (const gone of ['opt/ami2ban', 'usr/local/bin/ami2ban', 'etc/systemd/system/ami2ban.service']) expect(existsSync(join(root, gone)), gone).toBe(false);
    for (const kept of ['etc/ami2ban/ami2ban.env', 'var/lib/ami2ban/ami2ban.sqlite']) expect(existsSync(join(root, kept)), kept).toBe(true);
    expect(readFileSync(join(root, 'etc/passwd'), 'utf8')).toMatch(/^ami2ban:/m);
    expect(setElements('ami2ban_installed', 'ipv4_addr', netns).has('198.51.100.77')).toBe(true);

    const p = install(root, '--uninstall', '--purge');
    expect(p.code, p.out).toBe(0);
    for (const gone of ['etc/ami2ban', 'var/lib/ami2ban']) expect(existsSync(join(root, gone)), gone).toBe(false);
    expect(readFileSync(join(root, 'etc/passwd'), 'utf8')).not.toMatch(/^ami2ban:/m);
  });

  it('refuses unknown options and a relative prefix', () => {
    expect(install(root, '--bogus').code).toBe(2);
    expect(install(root, '--prefix', 'opt').code).toBe(2);
  });
});
