import { describe, expect, it } from 'vitest';
import { AddressSet, parseCidr, parseIp, unbannable } from '../src/common/ip.js';

function set(...entries: string[]): AddressSet {
  return new AddressSet(entries.map((e) => {
    const c = parseCidr(e);
    if (typeof c === 'string') throw new Error(c);
    return c;
  }));
}

function has(s: AddressSet, ip: string): boolean {
  const a = parseIp(ip);
  if (a === null) throw new Error(ip);
  return s.has(a);
}

describe('parseIp', () => {
  it.each([
    ['192.0.2.1', 'ipv4', '192.0.2.1'],
    ['2001:0DB8:0000:0000:0000:0000:0000:0001', 'ipv6', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', 'ipv6', '2001:db8::1:0:0:1'],
    ['1:0:0:2:0:0:0:3', 'ipv6', '1:0:0:2::3'],
    ['2001:db8:0:1:1:1:1:1', 'ipv6', '2001:db8:0:1:1:1:1:1'],
    ['::', 'ipv6', '::'],
    ['::1', 'ipv6', '::1'],
    ['::ffff:192.0.2.1', 'ipv4', '192.0.2.1'],
    ['::ffff:c000:0201', 'ipv4', '192.0.2.1'],
    ['0:0:0:0:0:ffff:10.1.2.3', 'ipv4', '10.1.2.3'],
    ['64:ff9b::192.0.2.1', 'ipv6', '64:ff9b::c000:201'],
  ])('%s → %s %s', (text, family, ip) => {
    expect(parseIp(text)).toEqual({ family, ip });
  });

  it('keeps an IPv6 zone apart from the canonical text', () => {
    expect(parseIp('FE80:0::1%eth0')).toEqual({ family: 'ipv6', ip: 'fe80::1', zone: 'eth0' });
  });

  it.each(['', '1.2.3', '01.2.3.4', '256.1.1.1', '1:2:3:4:5:6:7:8:9', 'fd00:::1', 'example.com', '1.2.3.4/8', '192.0.2.1%eth0', 'fe80::1%', '::ffff:192.0.2.1%eth0'])(
    'rejects %j',
    (text) => {
      expect(parseIp(text)).toBeNull();
    },
  );
});

describe('unbannable', () => {
  it.each([
    ['0.0.0.0', 'unspecified'],
    ['::', 'unspecified'],
    ['255.255.255.255', 'broadcast'],
    ['224.0.0.0', 'multicast'],
    ['239.255.255.255', 'multicast'],
    ['ff00::', 'multicast'],
    ['ff05::1:3', 'multicast'],
    ['169.254.0.0', 'link-local'],
    ['169.254.255.255', 'link-local'],
    ['fe80::', 'link-local'],
    ['febf:ffff::1', 'link-local'],
    ['fd00::1%lo', 'zone'],
    ['0.0.0.1', null],
    ['223.255.255.255', null],
    ['240.0.0.0', null],
    ['255.255.255.254', null],
    ['169.255.0.0', null],
    ['fec0::1', null],
    ['fe00::1', null],
    ['feff::1', null],
    ['::1', null],
    ['2001:db8::1', null],
  ])('%s → %s', (text, reason) => {
    const a = parseIp(text);
    if (a === null) throw new Error(text);
    expect(unbannable(a)).toBe(reason);
  });
});

describe('parseCidr', () => {
  it('reads addresses and prefixes, and says what is wrong', () => {
    expect(parseCidr('10.0.0.0/8')).toEqual({ address: { family: 'ipv4', ip: '10.0.0.0' }, prefix: 8 });
    expect(parseCidr('2001:db8::/32')).toEqual({ address: { family: 'ipv6', ip: '2001:db8::' }, prefix: 32 });
    expect(parseCidr('::ffff:10.0.0.0/104')).toEqual({ address: { family: 'ipv4', ip: '10.0.0.0' }, prefix: 8 });
    expect(parseCidr('192.0.2.1')).toEqual({ address: { family: 'ipv4', ip: '192.0.2.1' }, prefix: 32 });
    expect(parseCidr('10.0.0.0/33')).toContain('outside 0..32');
    expect(parseCidr('10.0.0.0/x')).toContain('invalid prefix');
    expect(parseCidr('nope/8')).toContain('not an IP address');
  });
});

describe('AddressSet', () => {
  it('matches IPv4 prefixes at their edges', () => {
    const s = set('10.0.0.0/8', '192.0.2.128/25', '198.51.100.7', '203.0.113.0/31');
    expect(has(s, '10.255.255.255')).toBe(true);
    expect(has(s, '11.0.0.0')).toBe(false);
    expect(has(s, '9.255.255.255')).toBe(false);
    expect(has(s, '192.0.2.128')).toBe(true);
    expect(has(s, '192.0.2.127')).toBe(false);
    expect(has(s, '198.51.100.7')).toBe(true);
    expect(has(s, '198.51.100.8')).toBe(false);
    expect(has(s, '203.0.113.1')).toBe(true);
    expect(has(s, '203.0.113.2')).toBe(false);
  });

  it('matches IPv6 prefixes at their edges, including ones not on a group boundary', () => {
    const s = set('2001:db8::/32', 'fd00::/7', '2001:db9:0:8000::/49', '::1');
    expect(has(s, '2001:db8:ffff:ffff::1')).toBe(true);
    expect(has(s, '2001:db9::1')).toBe(false);
    expect(has(s, 'fc00::1')).toBe(true);
    expect(has(s, 'fdff:ffff::1')).toBe(true);
    expect(has(s, 'fe00::1')).toBe(false);
    expect(has(s, '2001:db9:0:8000::1')).toBe(true);
    expect(has(s, '2001:db9:0:ffff::1')).toBe(true);
    expect(has(s, '2001:db9:0:7fff::1')).toBe(false);
    expect(has(s, '::1')).toBe(true);
    expect(has(s, '::2')).toBe(false);
  });

  it('/0 matches everything of its family only', () => {
    const v4 = set('0.0.0.0/0');
    expect(has(v4, '198.51.100.1')).toBe(true);
    expect(has(v4, '2001:db8::1')).toBe(false);
    expect(has(set('::/0'), '2001:db8::1')).toBe(true);
  });

  it('an empty set matches nothing', () => {
    expect(has(set(), '127.0.0.1')).toBe(false);
  });
});
