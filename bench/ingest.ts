// npm run bench:ingest — events per second through AMI parse → engine, over loopback TCP,
// from a fake Asterisk in a child process, and the daemon side's peak RSS.
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { AsteriskManagerConnector } from '../src/ami/asterisk-manager-connector.js';
import { AmiClient } from '../src/ami/client.js';
import { loadConfig } from '../src/config/config.js';
import { FakeAmiServer } from '../src/demo/fake-ami-server.js';
import { Engine } from '../src/engine/engine.js';
import { silentLogger } from '../src/log/logger.js';
import { toEngineEvent } from '../src/service/pipeline.js';

const EVENTS = Number(process.env.BENCH_EVENTS ?? 1_000_000);
const ADDRESSES = Number(process.env.BENCH_ADDRESSES ?? 10_000);
const USER = 'bench';
const SECRET = 'bench-secret';

function address(i: number): string {
  // One in five attackers is IPv6; documentation/benchmark ranges only, nothing is sent to them.
  const n = i % ADDRESSES;
  return n % 5 === 4 ? `IPV6/UDP/2001:db8::${n.toString(16)}/5060` : `IPV4/UDP/198.18.${n >> 8}.${n & 255}/5060`;
}

function block(i: number): string {
  const kind = i % 2 === 0 ? 'InvalidAccountID' : 'ChallengeResponseFailed';
  return (
    `Event: ${kind}\r\nPrivilege: security,all\r\nSystemName: astlab\r\nEventTV: 2026-11-21T22:36:02.621+0000\r\n` +
    `Severity: Error\r\nService: PJSIP\r\nEventVersion: 1\r\nAccountID: user${i % 997}\r\nSessionID: call-${i}@bench\r\n` +
    `LocalAddress: IPV4/UDP/127.0.0.1/5060\r\nRemoteAddress: ${address(i)}\r\n\r\n`
  );
}

async function serve(): Promise<void> {
  const server = new FakeAmiServer({ username: USER, secret: SECRET });
  const port = await server.start();
  process.send?.({ port });
  const session = await server.nextSubscription();
  const socket = session.socket;
  for (let i = 0; i < EVENTS; ) {
    let chunk = '';
    const end = Math.min(EVENTS, i + 2000);
    for (; i < end; i++) chunk += block(i);
    if (!socket.write(chunk)) await once(socket, 'drain');
  }
}

interface Run {
  readonly label: string;
  readonly seconds: number;
  readonly bans: number;
  readonly failures: number;
  /** Live heap while the engine still holds its state, after a full GC (when --expose-gc). */
  readonly liveHeapMiB: number | undefined;
}

async function measure(label: string, env: Record<string, string>): Promise<Run> {
  const child = fork(fileURLToPath(import.meta.url), ['--serve'], { execArgv: [], env: { ...process.env, BENCH_EVENTS: String(EVENTS) } });
  const [msg] = (await once(child, 'message')) as [{ port: number }];
  const config = loadConfig({ AMI_USERNAME: USER, AMI_SECRET: SECRET, AMI_PORT: String(msg.port), BAN_IGNOREIP: '', ...env });
  const engine = new Engine(config.ban);
  const client = new AmiClient({
    target: { host: '127.0.0.1', port: msg.port, username: USER, secret: SECRET },
    connector: new AsteriskManagerConnector(),
    logger: silentLogger,
    pingIntervalMs: 60_000,
    pingTimeoutMs: 60_000,
    reconnectMaxMs: 30_000,
  });
  let seen = 0;
  let bans = 0;
  let failures = 0;
  let started = 0;
  const done = new Promise<number>((resolve) => {
    client.on('event', (e, receivedAt) => {
      if (seen === 0) started = performance.now();
      const o = engine.observe(toEngineEvent(e), receivedAt);
      if (o.kind === 'banned') bans++;
      if (o.kind !== 'ignored') failures++;
      if (++seen === EVENTS) resolve(performance.now());
    });
  });
  client.start();
  const finished = await done;
  const gc = (globalThis as { gc?: () => void }).gc;
  let liveHeapMiB: number | undefined;
  if (gc !== undefined) {
    gc();
    liveHeapMiB = process.memoryUsage().heapUsed / 1024 / 1024;
  }
  client.stop();
  child.kill();
  const stats = engine.stats();
  console.error(`  (${label.split(' (')[0] ?? ''}: ${stats.tracked} addresses tracked, ${stats.activeBans} active bans at the end)`);
  return { label, seconds: (finished - started) / 1000, bans, failures, liveHeapMiB };
}

async function main(): Promise<void> {
  if (process.argv.includes('--serve')) {
    await serve();
    return;
  }
  console.log(`bench:ingest — ${EVENTS.toLocaleString('en')} security events over ${ADDRESSES.toLocaleString('en')} addresses, AMI over loopback TCP`);
  console.log(`node ${process.version}, ${process.platform}/${process.arch}\n`);
  const runs = [
    await measure('default policy (maxretry 3: most events hit banned addresses)', {}),
    await measure('counting only (maxretry 1000, findtime 1d: every event is a failure in the window)', { BAN_MAXRETRY: '1000', BAN_FINDTIME: '1d' }),
  ];
  for (const r of runs) {
    const rate = Math.round(EVENTS / r.seconds);
    console.log(r.label);
    console.log(`  ${rate.toLocaleString('en')} events/s  (${r.seconds.toFixed(2)} s; ${r.failures.toLocaleString('en')} failures counted, ${r.bans.toLocaleString('en')} bans)`);
    if (r.liveHeapMiB !== undefined) console.log(`  live heap after a full GC, engine state held: ${r.liveHeapMiB.toFixed(1)} MiB`);
  }
  const rss = process.resourceUsage().maxRSS / 1024;
  console.log(`\npeak RSS of the parsing/engine process: ${rss.toFixed(0)} MiB`);
}

await main();
