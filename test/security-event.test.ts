import { describe, expect, it } from 'vitest';
import { AmiMessage, AmiParser } from '../src/ami/parser.js';
import { classifyEvent, parseAmiAddress, parseEventTime } from '../src/ami/security-event.js';
import { fixture } from './helpers/fixtures.js';

function message(text: string): AmiMessage {
  return AmiMessage.of(
    text
      .trim()
      .split('\n')
      .map((l) => {
        const at = l.indexOf(':');
        return [l.slice(0, at), l.slice(at + 1).trimStart()] as const;
      }),
  );
}

const CHALLENGE_FAILED = `
Event: ChallengeResponseFailed
Privilege: security,all
SystemName: astlab
EventTV: 2026-11-21T22:36:02.621+0100
Severity: Error
Service: PJSIP
EventVersion: 1
AccountID: <unknown>
SessionID: 2je1nijmgtu2jehr3mtf@127.0.0.2
LocalAddress: IPV4/UDP/127.0.0.1/5060
RemoteAddress: IPV4/UDP/127.0.0.2/42142
Challenge: 1763764562/abc
Response: deadbeef
ExpectedResponse: `;

describe('parseAmiAddress', () => {
  it.each([
    ['IPV4/UDP/198.51.100.7/5071', { family: 'ipv4', transport: 'UDP', ip: '198.51.100.7', zone: null, port: 5071 }],
    ['IPV6/TCP/fd00::2/5060', { family: 'ipv6', transport: 'TCP', ip: 'fd00::2', zone: null, port: 5060 }],
    ['IPV6/WSS/2001:DB8:0::5/443', { family: 'ipv6', transport: 'WSS', ip: '2001:db8::5', zone: null, port: 443 }],
    ['IPV4/1.2.3.4/5060', { family: 'ipv4', transport: null, ip: '1.2.3.4', zone: null, port: 5060 }],
    ['IPV6/UDP/::ffff:203.0.113.9/5060', { family: 'ipv4', transport: 'UDP', ip: '203.0.113.9', zone: null, port: 5060 }],
    ['IPV6/UDP/fe80::1%eth0/5060', { family: 'ipv6', transport: 'UDP', ip: 'fe80::1', zone: 'eth0', port: 5060 }],
    ['IPV4/TCP/10.0.0.1/(null)', { family: 'ipv4', transport: 'TCP', ip: '10.0.0.1', zone: null, port: null }],
  ])('%s', (text, expected) => {
    expect(parseAmiAddress(text)).toEqual(expected);
  });

  it('(null) address means no address', () => {
    expect(parseAmiAddress('IPV6/(null)/(null)')).toBeNull();
    expect(parseAmiAddress('IPV6/UDP/(null)/(null)')).toBeNull();
  });

  it.each(['', 'IPV4', 'IPV4/UDP/1.2.3.4', 'IPX/UDP/1.2.3.4/1', 'IPV4/SCTP/1.2.3.4/5', 'IPV4/UDP/1.2.3.400/5', 'IPV4/UDP/fd00::1/5', 'IPV4/UDP/1.2.3.4/70000', 'IPV4/UDP/a/b/c/d', 'IPV4/UDP/1.2.3.4%eth0/5060'])(
    'rejects %j',
    (text) => {
      expect(typeof parseAmiAddress(text)).toBe('string');
    },
  );
});

describe('parseEventTime', () => {
  it('reads Asterisk local time with its offset', () => {
    expect(parseEventTime('2026-01-15T10:23:45.123+0100')?.epochMs).toBe(Date.parse('2026-01-15T09:23:45.123Z'));
    expect(parseEventTime('2026-01-15T10:23:45.123-0530')?.epochMs).toBe(Date.parse('2026-01-15T15:53:45.123Z'));
    expect(parseEventTime('2026-01-15T10:23:45+0000')?.epochMs).toBe(Date.parse('2026-01-15T10:23:45.000Z'));
  });

  it('refuses other formats', () => {
    expect(parseEventTime('1763764562.123456')).toBeNull();
    expect(parseEventTime('yesterday')).toBeNull();
  });
});

describe('classifyEvent', () => {
  it('normalizes a PJSIP ChallengeResponseFailed', () => {
    const c = classifyEvent(message(CHALLENGE_FAILED));
    expect(c).toEqual({
      kind: 'security',
      event: {
        name: 'ChallengeResponseFailed',
        severity: 'Error',
        service: 'PJSIP',
        eventVersion: '1',
        accountId: '<unknown>',
        sessionId: '2je1nijmgtu2jehr3mtf@127.0.0.2',
        localAddressText: 'IPV4/UDP/127.0.0.1/5060',
        remoteAddress: { family: 'ipv4', transport: 'UDP', ip: '127.0.0.2', zone: null, port: 42142 },
        eventTv: '2026-11-21T22:36:02.621+0100',
        aclName: null,
        requestType: null,
      },
    });
  });

  it('takes the address from RemoteAddress, not from an address-looking AccountID', () => {
    const c = classifyEvent(message(CHALLENGE_FAILED.replace('AccountID: <unknown>', 'AccountID: IPV4/UDP/192.0.2.66/5060')));
    expect(c.kind === 'security' && c.event.remoteAddress?.ip).toBe('127.0.0.2');
  });

  it.each([
    ['before the real one', (t: string) => t.replace('SessionID: 2je1nijmgtu2jehr3mtf@127.0.0.2', 'SessionID: x\nRemoteAddress: IPV4/UDP/192.0.2.77/5060')],
    ['after the real one', (t: string) => `${t}\nRemoteAddress: IPV4/UDP/192.0.2.77/5060`],
    ['in another case', (t: string) => `${t}\nremoteaddress: IPV4/UDP/192.0.2.77/5060`],
  ])('a repeated RemoteAddress (%s) is malformed, never counted against either address', (_, edit) => {
    expect(classifyEvent(message(edit(CHALLENGE_FAILED)))).toMatchObject({ kind: 'malformed', reason: expect.stringMatching(/RemoteAddress appears twice/i) as unknown });
  });

  it('a line feed smuggled inside a value makes the event malformed (real parser, CRLF stream)', () => {
    const crlf = (t: string): string => `${t.trim().split('\n').join('\r\n')}\r\n\r\n`;
    const results: string[] = [];
    const parser = new AmiParser({ message: (m) => results.push(classifyEvent(m).kind) });
    parser.push(Buffer.from(crlf(CHALLENGE_FAILED)));
    // AccountID carries "x\nFoo: forged": no header repeats, but the bare LF shows.
    parser.push(Buffer.from(crlf(CHALLENGE_FAILED).replace('AccountID: <unknown>\r\n', 'AccountID: x\nFoo: forged\r\n')));
    expect(results).toEqual(['security', 'malformed']);
  });

  it('a missing RemoteAddress is malformed; a (null) one is an event without address', () => {
    const missing = classifyEvent(message(CHALLENGE_FAILED.replace(/RemoteAddress: .*\n/, '')));
    expect(missing).toMatchObject({ kind: 'malformed', reason: 'missing RemoteAddress' });
    const nulled = classifyEvent(message(CHALLENGE_FAILED.replace('IPV4/UDP/127.0.0.2/42142', 'IPV4/(null)/(null)')));
    expect(nulled.kind === 'security' && nulled.event.remoteAddress).toBeNull();
  });

  it('separates non-security, unknown security and malformed events', () => {
    expect(classifyEvent(message('Event: Newchannel\nPrivilege: call,all'))).toEqual({ kind: 'non-security', name: 'Newchannel' });
    expect(classifyEvent(message('Event: FutureThing\nPrivilege: security,all'))).toEqual({ kind: 'unknown', name: 'FutureThing' });
    expect(classifyEvent(message('Event: InvalidAccountID\nRemoteAddress: IPV4/UDP/1.2.3.4/5'))).toMatchObject({ kind: 'malformed' });
    expect(classifyEvent(message(CHALLENGE_FAILED.replace('IPV4/UDP/127.0.0.2/42142', 'IPV4/UDP/999.1.1.1/5')))).toMatchObject({
      kind: 'malformed',
    });
  });

  it('classifies every event of the captured security stream', () => {
    const kinds: Record<string, number> = {};
    const names = new Set<string>();
    const parser = new AmiParser({
      message: (m) => {
        if (m.get('Event') === undefined) return;
        const c = classifyEvent(m);
        kinds[c.kind] = (kinds[c.kind] ?? 0) + 1;
        if (c.kind === 'security') names.add(`${c.event.name}/${c.event.service}/${c.event.remoteAddress?.family ?? '-'}`);
      },
    });
    parser.push(fixture('ami-ami2ban-events-security.raw'));
    expect(kinds).toEqual({ security: 139 });
    expect(names).toContain('InvalidAccountID/PJSIP/ipv6');
    expect(names).toContain('InvalidPassword/AMI/ipv4');
    expect(names).toContain('FailedACL/PJSIP/ipv4');
  });
});
