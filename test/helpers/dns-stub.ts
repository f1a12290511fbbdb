// A DNS server on loopback that the test controls: A and AAAA answers per name, or a failure.
import { type Socket, createSocket } from 'node:dgram';
import { once } from 'node:events';

export type StubAnswer = { readonly a?: readonly string[]; readonly aaaa?: readonly string[] } | 'servfail';

function v6Bytes(ip: string): Buffer {
  const [head = '', tail] = ip.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

export class DnsStub {
  readonly answers = new Map<string, StubAnswer>();
  queries = 0;
  private readonly socket: Socket = createSocket('udp4');

  async start(): Promise<number> {
    this.socket.on('message', (q, from) => {
      this.queries++;
      this.socket.send(this.reply(q), from.port, from.address);
    });
    this.socket.bind(0, '127.0.0.1');
    await once(this.socket, 'listening');
    return this.socket.address().port;
  }

  stop(): void {
    this.socket.close();
  }

  private reply(q: Buffer): Buffer {
    // The question: labels from byte 12, then QTYPE and QCLASS.
    let at = 12;
    const labels: string[] = [];
    for (let len = q[at] ?? 0; len !== 0; len = q[at] ?? 0) {
      labels.push(q.subarray(at + 1, at + 1 + len).toString('latin1'));
      at += len + 1;
    }
    const qtype = q.readUInt16BE(at + 1);
    const question = q.subarray(12, at + 5);
    const answer = this.answers.get(labels.join('.').toLowerCase());
    const records = answer === undefined || answer === 'servfail' ? [] : qtype === 1 ? (answer.a ?? []) : qtype === 28 ? (answer.aaaa ?? []) : [];
    const rcode = answer === 'servfail' ? 2 : answer === undefined ? 3 : 0;
    const header = Buffer.alloc(12);
    header.writeUInt16BE(q.readUInt16BE(0), 0);
    header.writeUInt16BE(0x8180 | rcode, 2);
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(records.length, 6);
    const rrs = records.map((ip) => {
      const data = qtype === 1 ? Buffer.from(ip.split('.').map(Number)) : v6Bytes(ip);
      const rr = Buffer.alloc(12);
      rr.writeUInt16BE(0xc00c, 0);
      rr.writeUInt16BE(qtype, 2);
      rr.writeUInt16BE(1, 4);
      rr.writeUInt32BE(60, 6);
      rr.writeUInt16BE(data.length, 10);
      return Buffer.concat([rr, data]);
    });
    return Buffer.concat([header, question, ...rrs]);
  }
}
