// The netlink encoding of element transactions, without a kernel: which commands it takes, how
// addresses become keys.
import { isIP } from 'node:net';
import { describe, expect, it } from 'vitest';
import { addressBytes, addressText, decodeReplies, elementBatch, encodeBatch, readQuery } from '../packages/nftables-napi/src/netlink.js';

const add = (elem: unknown[], name = 's'): object => ({ add: { element: { family: 'inet', table: 't', name, elem } } });

describe('netlink element batches', () => {
  it('reads addresses in every valid text form, and nothing else', () => {
    expect(addressBytes('192.0.2.1')?.toString('hex')).toBe('c0000201');
    expect(addressBytes('2001:db8::1')?.toString('hex')).toBe('20010db8000000000000000000000001');
    expect(addressBytes('::')?.toString('hex')).toBe('0'.repeat(32));
    expect(addressBytes('::ffff:192.0.2.1')?.toString('hex')).toBe('00000000000000000000ffffc0000201');
    expect(addressBytes('1:2:3:4:5:6:7:8')?.toString('hex')).toBe('00010002000300040005000600070008');
    for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.0.0.1', '01.2.3.4', '1.2.3.4/32', 'fe80::1%eth0', '1:2:3:4:5:6:7:8:9', '1::2::3', ':::', 'g::1', '12345::1', '1:2:3:4:5:6:7::8', 'example.com', ' 1.2.3.4']) {
      expect(addressBytes(bad), bad).toBeUndefined();
      // Node agrees these are not addresses (or not plain ones).
      if (!bad.includes('%')) expect(isIP(bad) === 0 || bad === '1:2:3:4:5:6:7::8', bad).toBe(true);
    }
  });

  it('reads dotted quads as node does: the same texts accepted, the same bytes', () => {
    const parts = ['0', '1', '00', '09', '10', '99', '255', '256', '300', '1000', '', '-1', '+1', ' 1', 'a'];
    let checked = 0;
    for (const a of parts) {
      for (const b of ['0', '255', a]) {
        for (const text of [`${a}.${b}.2.3`, `1.${b}.${a}.4`, `1.2.3.${a}`, `${a}.2.3`, `1.2.3.4.${a}`, `1..${a}.4`, `.${a}.2.3.4`, `1.2.3.${a}.`]) {
          const bytes = addressBytes(text);
          expect(bytes !== undefined, text).toBe(isIP(text) === 4);
          if (bytes !== undefined) expect([...bytes].join('.'), text).toBe(text);
          checked++;
        }
      }
    }
    expect(checked).toBe(parts.length * 3 * 8);
  });

  it('takes only add/delete of single addresses of one family per command', () => {
    expect(elementBatch([add(['192.0.2.1', { elem: { val: '192.0.2.2', timeout: 60 } }])])?.messages).toHaveLength(1);
    expect(elementBatch([{ delete: { element: { family: 'inet', table: 't', name: 's', elem: ['2001:db8::1'] } } }])?.sets[0]?.keyLen).toBe(16);
    // A long command is split over messages of 1 000 (an attribute's length is 16 bits); past 256 messages, libnftables.
    expect(elementBatch([add(Array.from({ length: 2_500 }, (_, i) => `10.0.${i >> 8}.${i & 255}`))])?.messages.map((m) => m.keys.length)).toEqual([1000, 1000, 500]);
    expect(elementBatch([add(Array.from({ length: 256_001 }, () => '10.0.0.1'))])).toBeUndefined();
    const refused: object[][] = [
      [],
      [{ add: { table: { family: 'inet', name: 't' } } }],
      [add([{ prefix: { addr: '10.0.0.0', len: 8 } }])],
      [add(['192.0.2.1', '2001:db8::1'])],
      [add([{ elem: { val: '192.0.2.1', timeout: 1.5 } }])],
      [add([{ elem: { val: '192.0.2.1', timeout: 0 } }])],
      [add([{ elem: { val: '192.0.2.1', expires: 5 } }])],
      [add([{ elem: { val: '192.0.2.1', timeout: 60, comment: 'x' } }])],
      [{ delete: { element: { family: 'inet', table: 't', name: 's', elem: [{ elem: { val: '192.0.2.1', timeout: 60 } }] } } }],
      [{ add: { element: { family: 'bridge', table: 't', name: 's', elem: ['192.0.2.1'] } } }],
      [{ add: { element: { family: 'inet', table: 't\0x', name: 's', elem: ['192.0.2.1'] } } }],
      [{ add: { element: { family: 'inet', table: 't', name: 's', elem: [] } } }],
      [{ add: { element: { family: 'inet', table: 't', name: 's', elem: ['192.0.2.1'], handle: 3 } } }],
      [{ replace: { element: { family: 'inet', table: 't', name: 's', elem: ['192.0.2.1'] } } }],
      Array.from({ length: 257 }, () => add(['192.0.2.1'])),
    ];
    for (const c of refused) expect(elementBatch(c), JSON.stringify(c).slice(0, 80)).toBeUndefined();
  });

  it('encodes one batch whose messages the decoder reads back, in order', () => {
    const batch = elementBatch([add([{ elem: { val: '192.0.2.1', timeout: 60 } }]), { delete: { element: { family: 'inet', table: 't', name: 's', elem: ['192.0.2.1'] } } }]);
    if (batch === undefined) throw new Error('not taken');
    const wire = encodeBatch(batch, 100);
    const messages = decodeReplies(wire) ?? [];
    // Batch begin, the two commands (nf_tables NEWSETELEM, DELSETELEM), batch end; sequence numbers follow.
    expect(messages.map((m) => [m.type, m.seq])).toEqual([[0x10, 100], [(10 << 8) | 12, 101], [(10 << 8) | 14, 102], [0x11, 103]]);
    expect(messages[1]?.attrs.get(1)?.toString()).toBe('t\0');
    expect(messages[1]?.attrs.get(2)?.toString()).toBe('s\0');
    // The timeout travels in milliseconds, big-endian.
    expect(wire.includes(Buffer.from('000000000000ea60', 'hex'))).toBe(true);
    expect(decodeReplies(wire.subarray(0, wire.length - 3))).toBeUndefined();
  });

  it('writes addresses back as inet_ntop (and nft) writes them', () => {
    const cases: [string, string][] = [
      ['192.0.2.1', '192.0.2.1'],
      ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
      ['::ffff:192.0.2.9', '::ffff:192.0.2.9'],
      ['::192.0.2.9', '::192.0.2.9'],
      ['::1', '::1'],
      ['::', '::'],
      ['1::', '1::'],
      ['fe80:0:0:0:1:0:0:5', 'fe80::1:0:0:5'],
      ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
      ['1:0:0:2:0:0:3:4', '1::2:0:0:3:4'],
      ['1:2:3:4:5:6:0:8', '1:2:3:4:5:6:0:8'],
      ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2:3:4:5:6'],
    ];
    for (const [input, text] of cases) expect(addressText(addressBytes(input) ?? Buffer.alloc(0)), input).toBe(text);
  });

  it('takes `list set` and `list counter` of one named object, nothing else', () => {
    expect(readQuery([{ list: { set: { family: 'inet', table: 't', name: 's' } } }])).toMatchObject({ what: 'set', family: 1 });
    expect(readQuery([{ list: { counter: { family: 'inet', table: 't', name: 'c' } } }])).toMatchObject({ what: 'counter' });
    for (const c of [
      [{ list: { chain: { family: 'inet', table: 't', name: 'c' } } }],
      [{ list: { sets: { family: 'inet' } } }],
      [{ list: { set: { family: 'inet', table: 't', name: 's', handle: 1 } } }],
      [{ list: { set: { family: 'netdev', table: 't', name: 's' } } }],
      [{ list: { set: { family: 'inet', table: 't', name: 's' } } }, { list: { set: { family: 'inet', table: 't', name: 's' } } }],
      [{ add: { set: { family: 'inet', table: 't', name: 's' } } }],
    ]) {
      expect(readQuery(c), JSON.stringify(c)).toBeUndefined();
    }
  });
});
