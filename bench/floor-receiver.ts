// The least a Node receiver can do for a remote ban, for bench:fleet (BENCH_FLEET_FLOOR=1): XREAD
// on a raw socket, the address taken from the entry by a regular expression, one element added by
// netlink. No checks, no records, no database: a floor for what a ban costs a receiver, not one.
//   node dist/bench/floor-receiver.js HOST PORT STREAM
import { createConnection } from 'node:net';
import { Nftables } from '@ami2ban/nftables-napi';

const [host = '127.0.0.1', port = '6379', stream = 'ami2ban:stream'] = process.argv.slice(2);
const nft = new Nftables();
const sock = createConnection({ host, port: Number(port), noDelay: true });
const command = (args: readonly string[]): string => `*${String(args.length)}\r\n${args.map((a) => `$${String(Buffer.byteLength(a))}\r\n${a}\r\n`).join('')}`;
let cursor = '$';
const read = (): void => {
  sock.write(command(['XREAD', 'COUNT', '1000', 'BLOCK', '0', 'STREAMS', stream, cursor]));
};
let pending = '';
sock.on('data', (d: Buffer) => {
  pending += d.toString('latin1');
  // A whole reply ends with an entry's JSON (`}`) and its CRLF. One cut right after an entry is
  // taken as two; the entries of its second part are read again, and adding them again changes nothing.
  if (!pending.endsWith('}\r\n')) return;
  const ips = [...pending.matchAll(/"op":"ban","ip":"([^"]+)"/g)].map((m) => m[1] ?? '');
  const ids = [...pending.matchAll(/\$\d+\r\n(\d+-\d+)\r\n/g)];
  cursor = ids[ids.length - 1]?.[1] ?? cursor;
  pending = '';
  if (ips.length > 0) void nft.run({ nftables: [{ add: { element: { family: 'inet', table: 'ami2ban', name: 'ipv4_addr', elem: ips.map((ip) => ({ elem: { val: ip, timeout: 600 } })) } } }] });
  read();
});
sock.on('connect', read);
sock.on('error', (e) => {
  console.error(`floor-receiver: ${e.message}`);
  process.exit(2);
});
console.log('ready');
