// A standalone fake Asterisk AMI, for scripts/image-smoke.sh and manual trials:
//   node dist/src/demo/fake-ami.js PORT USER SECRET [ATTACKER_IP]
// With ATTACKER_IP, each subscribed session receives three failed logins from that address.
import { FakeAmiServer } from './fake-ami-server.js';

const [portText = '5038', username = 'ami2ban', secret = '', attacker] = process.argv.slice(2);

function failure(ip: string, n: number): string {
  const family = ip.includes(':') ? 'IPV6' : 'IPV4';
  const tv = new Date().toISOString().replace('Z', '+0000');
  return (
    `Event: InvalidPassword\r\nPrivilege: security,all\r\nEventTV: ${tv}\r\nSeverity: Error\r\nService: AMI\r\n` +
    `EventVersion: 2\r\nAccountID: admin\r\nSessionID: 0x7f00000000${n}\r\nLocalAddress: IPV4/TCP/0.0.0.0/5038\r\n` +
    `RemoteAddress: ${family}/TCP/${ip}/4${n}000\r\n\r\n`
  );
}

const server = new FakeAmiServer({ username, secret });
server.on('subscribed', (session) => {
  console.log(`fake AMI: session subscribed (EventMask ${session.eventMask ?? '-'})`);
  if (attacker !== undefined) session.socket.write(failure(attacker, 1) + failure(attacker, 2) + failure(attacker, 3));
});
const port = await server.start(Number(portText), '0.0.0.0');
console.log(`fake AMI listening on 0.0.0.0:${port} (user ${username})`);
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    void server.stop().then(() => process.exit(0));
  });
}
