import { describe, expect, it } from 'vitest';
import { classifyEvent } from '../src/ami/security-event.js';
import { parseSecurityLogLine } from '../src/ami/security-log.js';
import { fixture } from './helpers/fixtures.js';
import { Replayer, replay } from '../src/service/replay.js';
import { policy } from './helpers/policy.js';

const LINE =
  '[2026-11-21 22:36:02] SECURITY[30188] res_security_log.c: SecurityEvent="InvalidAccountID",EventTV="2026-11-21T22:36:02.100+0000",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="ghost",SessionID="abc@127.0.0.2",LocalAddress="IPV4/UDP/127.0.0.1/5060",RemoteAddress="IPV4/UDP/127.0.0.2/42142"';

describe('parseSecurityLogLine', () => {
  it('turns a log line into the equivalent AMI event', () => {
    const r = parseSecurityLogLine(LINE);
    expect(r.kind).toBe('event');
    const c = r.kind === 'event' ? classifyEvent(r.message) : undefined;
    expect(c).toMatchObject({
      kind: 'security',
      event: { name: 'InvalidAccountID', service: 'PJSIP', accountId: 'ghost', remoteAddress: { ip: '127.0.0.2', port: 42142 } },
    });
  });

  it('skips lines that are not security events', () => {
    expect(parseSecurityLogLine('[2026-11-21 22:35:54] Asterisk 22.10.1 built by root')).toEqual({ kind: 'skip' });
  });

  it('refuses a line where a forged value repeats a field', () => {
    const forged = LINE.replace('AccountID="ghost"', 'AccountID="x",RemoteAddress="IPV4/UDP/192.0.2.1/5060"');
    expect(parseSecurityLogLine(forged)).toMatchObject({ kind: 'malformed', reason: 'field RemoteAddress appears twice' });
  });

  it('refuses unparsable text', () => {
    expect(parseSecurityLogLine('SecurityEvent="X",junk')).toMatchObject({ kind: 'malformed' });
  });

  it('reads every event line of the captured security.log', () => {
    const lines = fixture('security.log').toString('utf8').split('\n');
    const results = lines.map(parseSecurityLogLine);
    const events = results.filter((r) => r.kind === 'event');
    expect(results.filter((r) => r.kind === 'malformed')).toEqual([]);
    expect(events.length).toBe(lines.filter((l) => l.includes('SecurityEvent="')).length);
    expect(events.length).toBe(140);
  });
});

describe('Replayer: the capture as a stream of chunks', () => {
  it.each(['security.log', 'ami-ami2ban-events-security.raw'])('%s gives the same bans in chunks of 1, 7 and 4096 bytes as whole', (name) => {
    const input = fixture(name);
    const whole = replay(input, policy({ BAN_IGNOREIP: '' }));
    for (const size of [1, 7, 4096]) {
      const r = new Replayer(policy({ BAN_IGNOREIP: '' }));
      for (let i = 0; i < input.length; i += size) r.push(input.subarray(i, i + size));
      const got = r.end();
      expect(got.bans, `chunks of ${size}`).toEqual(whole.bans);
      expect(got.securityEvents).toBe(whole.securityEvents);
      expect(got.skipped).toEqual(whole.skipped);
    }
  });

  it('hands each ban to a callback as it falls, without keeping them', () => {
    const seen: string[] = [];
    const r = new Replayer(policy({ BAN_IGNOREIP: '' }), (b) => seen.push(b.ip));
    r.push(fixture('security.log'));
    const result = r.end();
    expect(seen.length).toBe(8);
    expect(result.banCount).toBe(8);
    expect(result.bans).toEqual([]);
  });
});

describe('trust learned from logins, on the real captures', () => {
  /** The capture with every EventTV moved by `ms` and the address `from` replaced by `to`. */
  function shifted(capture: Buffer, ms: number, from?: string, to?: string): Buffer {
    let text = capture.toString('latin1').replace(/^EventTV: (\S+)$/gm, (_l, tv: string) => `EventTV: ${new Date(Date.parse(tv.replace(/([+-]\d\d)(\d\d)$/, '$1:$2')) + ms).toISOString().replace('Z', '+0000')}`);
    if (from !== undefined && to !== undefined) text = text.replaceAll(`/${from}/`, `/${to}/`);
    return Buffer.from(text, 'latin1');
  }
  const phone = fixture('attack-tools/good-phone-10-ok-2-badpass.raw');
  const banned = (input: Buffer, env: Record<string, string> = {}): string[] => replay(input, policy({ BAN_IGNOREIP: '', ...env })).bans.map((b) => b.ip).sort();

  it("the good phone's session twice (4 wrong passwords in 10 minutes, 20 logins): its mistypes never ban it; without trust they do", () => {
    const twice = Buffer.concat([phone, shifted(phone, 120_000)]);
    expect(banned(twice)).not.toContain('127.0.0.8');
    expect(banned(twice, { BAN_TRUST_SUCCESS: 'false' })).toContain('127.0.0.8');
  });

  it('an attacker that logged in once (as the phone did) and then enumerates accounts (svwar) is banned all the same', () => {
    // The phone's session from svwar's address, ten minutes earlier: 127.0.0.41 is trusted for account 1001.
    const svwar = fixture('attack-tools/svmap-svwar-udp.raw');
    const loggedIn = shifted(phone, -600_000, '127.0.0.8', '127.0.0.41');
    const r = replay(Buffer.concat([loggedIn, svwar]), policy({ BAN_IGNOREIP: '' }));
    expect(r.bans.map((b) => b.ip)).toContain('127.0.0.41');
    expect(banned(svwar)).toContain('127.0.0.41');
  });
});

describe('networks on the real capture (the defaults: escalation on)', () => {
  it("the lab's attackers share 127.0.0.0/24 and fd00::/64: the /64 falls to its 6 failures, the /24 at its 5th banned address", () => {
    const r = replay(fixture('ami-ami2ban-events-security.raw'), policy({ BAN_IGNOREIP: '', BAN_V4_SUBNET_ESCALATE: '5', BAN_SUBNET_ESCALATE: '3', BAN_SUBNET_MAXRETRY: 'auto' }));
    const bans = r.bans.map((b) => `${b.ip} ${b.rule}`);
    expect(bans).toContain('fd00::/64 subnet');
    expect(bans).toContain('127.0.0.0/24 subnet');
    // four addresses of the /24 were banned one by one before it; none after it
    expect(bans.filter((b) => b.startsWith('127.0.0.') && b.endsWith('threshold'))).toHaveLength(4);
    expect(bans.indexOf('127.0.0.0/24 subnet')).toBe(bans.length - 1);
  });
});
