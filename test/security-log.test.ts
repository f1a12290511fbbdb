import { describe, expect, it } from 'vitest';
import { classifyEvent } from '../src/ami/security-event.js';
import { parseSecurityLogLine } from '../src/ami/security-log.js';
import { fixture } from './helpers/fixtures.js';

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
