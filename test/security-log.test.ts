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
