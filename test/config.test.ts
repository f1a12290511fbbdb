import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { PERMANENT, formatDuration, parseDuration } from '../src/config/duration.js';
import { ConfigError } from '../src/errors.js';
import { BASE_ENV, config } from './helpers/policy.js';

function problems(env: Record<string, string>): Record<string, string> {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return Object.fromEntries(err.problems.map((p) => [p.variable, p.problem]));
    throw err;
  }
  return {};
}

describe('durations', () => {
  it.each([
    ['600', 600],
    ['90s', 90],
    ['10m', 600],
    ['1h', 3600],
    ['1d', 86400],
    ['1w', 604800],
    ['1.5h', 5400],
  ])('%s = %d s', (text, seconds) => {
    expect(parseDuration(text, false)).toBe(seconds);
  });

  it('-1 is permanent only where a ban time is meant', () => {
    expect(parseDuration('-1', true)).toBe(PERMANENT);
    expect(parseDuration('-1', false)).toBeNull();
    expect(parseDuration('1y', true)).toBeNull();
    expect(parseDuration('', true)).toBeNull();
  });

  it('formats for people', () => {
    expect(formatDuration(3723)).toBe('1h 2m 3s');
    expect(formatDuration(PERMANENT)).toBe('permanent');
    expect(formatDuration(604800)).toBe('1w');
  });
});

describe('loadConfig', () => {
  it('applies the documented defaults', () => {
    const c = loadConfig(BASE_ENV);
    expect(c.ami).toMatchObject({ host: '127.0.0.1', port: 5038, username: 'ami2ban', pingInterval: 15, pingTimeout: 5, reconnectMax: 30 });
    expect(c.ban).toMatchObject({
      events: ['InvalidAccountID', 'ChallengeResponseFailed', 'FailedACL', 'InvalidPassword', 'UnexpectedAddress'],
      maxRetry: 3,
      findTime: 600,
      banTime: 3600,
      increment: false,
      factor: 1,
      multipliers: [],
      maxTime: 604800,
      rndTime: 0,
      collapseWindow: 2,
      maxTracked: 1_000_000,
    });
    expect(c.ban.ignoreIp.map((x) => `${x.address.ip}/${x.prefix}`)).toEqual(['127.0.0.1/8', '::1/128']);
    expect(c.nftables).toEqual({ table: 'ami2ban', blockType: 'drop', ports: [], cleanupOnExit: false, backend: 'auto', checkInterval: 10 });
    expect(c).toMatchObject({ firewall: 'nftables', stateDir: '/var/lib/ami2ban', log: { level: 'info', format: 'auto' } });
  });

  it('is frozen, deeply', () => {
    const c = loadConfig(BASE_ENV);
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.ban.events)).toBe(true);
    expect(Object.isFrozen(c.ban.ignoreIp[0]?.address)).toBe(true);
  });

  it('reads values of every kind', () => {
    const c = loadConfig({
      ...BASE_ENV,
      AMI_PORT: '15038',
      BAN_BANTIME: '-1',
      BAN_INCREMENT: 'yes',
      BAN_MULTIPLIERS: '1 5 30',
      BAN_IGNOREIP: '',
      BAN_EVENTS: 'InvalidAccountID FailedACL',
      LOG_LEVEL: 'DEBUG',
    });
    expect(c.ami.port).toBe(15038);
    expect(c.ban.banTime).toBe(PERMANENT);
    expect(c.ban.increment).toBe(true);
    expect(c.ban.multipliers).toEqual([1, 5, 30]);
    expect(c.ban.ignoreIp).toEqual([]);
    expect(c.ban.events).toEqual(['InvalidAccountID', 'FailedACL']);
    expect(c.log.level).toBe('debug');
  });

  it('an empty scalar means the default', () => {
    expect(loadConfig({ ...BASE_ENV, AMI_PORT: '', BAN_MAXRETRY: ' ' }).ban.maxRetry).toBe(3);
  });

  it('names every bad variable at once, with what is expected', () => {
    const p = problems({
      AMI_PORT: '70000',
      AMI_PING_INTERVAL: 'often',
      BAN_MAXRETRY: '0',
      BAN_BANTIME: '1y',
      BAN_FINDTIME: '-1',
      BAN_INCREMENT: 'maybe',
      BAN_FACTOR: '-2',
      BAN_MULTIPLIERS: '1 x',
      BAN_IGNOREIP: '10.0.0.0/33 999.1.1.1 ok',
      BAN_EVENTS: 'InvalidAccountID,NoSuchEvent',
      FIREWALL: 'iptables',
      STATE_DIR: 'relative/dir',
      LOG_LEVEL: 'loud',
      LOG_FORMAT: 'xml',
      BAN_MAXRETRIES: '5',
    });
    expect(Object.keys(p).sort()).toEqual(
      [
        'AMI_USERNAME',
        'AMI_SECRET',
        'AMI_PORT',
        'AMI_PING_INTERVAL',
        'BAN_MAXRETRY',
        'BAN_BANTIME',
        'BAN_FINDTIME',
        'BAN_INCREMENT',
        'BAN_FACTOR',
        'BAN_MULTIPLIERS',
        'BAN_IGNOREIP',
        'BAN_EVENTS',
        'FIREWALL',
        'STATE_DIR',
        'LOG_LEVEL',
        'LOG_FORMAT',
        'BAN_MAXRETRIES',
      ].sort(),
    );
    expect(p.AMI_PORT).toContain('from 1 to 65535');
    expect(p.BAN_BANTIME).toContain('-1 (permanent)');
    expect(p.BAN_FINDTIME).not.toContain('permanent');
    expect(p.BAN_IGNOREIP).toContain('10.0.0.0/33');
    expect(p.BAN_IGNOREIP).toContain('999.1.1.1');
    expect(p.BAN_EVENTS).toContain('NoSuchEvent');
    expect(p.BAN_MAXRETRIES).toContain('did you mean BAN_MAXRETRY');
  });

  it('durations are bounded by what the kernel accepts', () => {
    expect(config({ BAN_BANTIME: '18446744073' }).ban.banTime).toBe(18_446_744_073);
    for (const v of ['18446744074', '100000000w', '1e30', '99999999999999999999999']) {
      expect(problems({ BAN_BANTIME: v }).BAN_BANTIME, v).toContain('at most 584 years');
    }
    expect(problems({ BAN_MAXTIME: '999999999999d' }).BAN_MAXTIME).toContain('at most 584 years');
  });

  it('the control API defaults to a unix socket in STATE_DIR; TCP needs a token; secrets are one line', () => {
    expect(config({ STATE_DIR: '/srv/a2b' }).control.listen).toEqual({ kind: 'unix', path: '/srv/a2b/control.sock' });
    const tcp = problems({ CONTROL_LISTEN: '0.0.0.0:9180' });
    expect(tcp.CONTROL_LISTEN).toContain('needs CONTROL_TOKEN');
    expect(config({ CONTROL_LISTEN: '127.0.0.1:9180', CONTROL_TOKEN: 't0ken' }).control.listen).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 9180 });
    expect(problems({ AMI_SECRET: 'abc\r\nAction: Originate' }).AMI_SECRET).toContain('CR or LF');
    expect(problems({ CONTROL_TOKEN: 'a\nb' }).CONTROL_TOKEN).toContain('CR or LF');
    expect(problems({ CONTROL_GROUP: 'bad group' }).CONTROL_GROUP).toContain('expected a group name or id');
    expect(config({ CONTROL_GROUP: 'asterisk' }).control.group).toBe('asterisk');
    expect(config({ METRICS_LISTEN: '0.0.0.0:9181' }).metricsListen).toEqual({ kind: 'tcp', host: '0.0.0.0', port: 9181 });
    expect(problems({ METRICS_LISTEN: '/tmp/x.sock' }).METRICS_LISTEN).toContain('expected host:port');
  });

  it('reads the secret from AMI_SECRET_FILE, without its trailing newline', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ami2ban-'));
    const file = join(dir, 'secret');
    writeFileSync(file, 's3cret-from-file\n');
    const c = loadConfig({ AMI_USERNAME: 'u', AMI_SECRET_FILE: file });
    expect(c.ami.secret.reveal()).toBe('s3cret-from-file');
  });

  it('an unreadable or empty secret file, or both secret forms, are errors', () => {
    expect(problems({ AMI_USERNAME: 'u', AMI_SECRET_FILE: '/nonexistent/secret' }).AMI_SECRET_FILE).toContain('cannot read "/nonexistent/secret"');
    const dir = mkdtempSync(join(tmpdir(), 'ami2ban-'));
    writeFileSync(join(dir, 'empty'), '');
    expect(problems({ AMI_USERNAME: 'u', AMI_SECRET_FILE: join(dir, 'empty') }).AMI_SECRET_FILE).toContain('is empty');
    expect(problems({ AMI_USERNAME: 'u', AMI_SECRET: 'a', AMI_SECRET_FILE: join(dir, 'empty') }).AMI_SECRET).toContain('only one');
  });

  it('never shows the secret: in errors, JSON or inspection', () => {
    const secret = 'hunter2-very-secret';
    const c = loadConfig({ ...BASE_ENV, AMI_SECRET: secret });
    expect(JSON.stringify(c)).not.toContain(secret);
    expect(inspect(c, { depth: 10 })).not.toContain(secret);
    expect(String(c.ami.secret)).not.toContain(secret);
    let message = '';
    try {
      loadConfig({ AMI_SECRET: secret, AMI_PORT: 'x' });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain('AMI_USERNAME');
    expect(message).toContain('AMI_PORT');
    expect(message).not.toContain(secret);
  });

  it('replay needs no AMI credentials', () => {
    expect(loadConfig({}, { purpose: 'replay' }).ban.maxRetry).toBe(3);
  });
});

describe('trunks by name in the ignore list', () => {
  it('host names are kept apart from addresses and CIDRs; bad entries and DNS servers are refused by name', () => {
    const c = loadConfig({ ...BASE_ENV, BAN_IGNOREIP: '192.0.2.0/24, sip.Provider.example., 2001:db8::/32 trunk-2.example', BAN_DNS_SERVERS: '192.0.2.53, 127.0.0.1:5353, [2001:db8::53]:53' });
    expect(c.ban.ignoreHosts).toEqual(['sip.provider.example', 'trunk-2.example']);
    expect(c.ban.ignoreIp.length).toBe(2);
    expect(c.ban.dnsServers).toEqual(['192.0.2.53', '127.0.0.1:5353', '[2001:db8::53]:53']);
    expect(c.ban.dnsRefresh).toBe(300);
    let err: unknown;
    try {
      loadConfig({ ...BASE_ENV, BAN_IGNOREIP: 'bad_host!, -dash.example', BAN_DNS_SERVERS: 'dns.example' });
    } catch (e) {
      err = e;
    }
    expect(String(err)).toContain('BAN_IGNOREIP');
    expect(String(err)).toContain('"bad_host!" is not an IP address or CIDR');
    expect(String(err)).toContain('"-dash.example"');
    expect(String(err)).toContain('BAN_DNS_SERVERS: "dns.example": expected IP addresses, optionally with :port');
  });
});
