// npm run bench:ingest — events per second through AMI parse → engine, over loopback TCP,
// from a fake Asterisk in a child process, and the daemon side's peak RSS. BENCH_QUICKACK=0: the
// AMI connection without its TCP_QUICKACK after each read.
import { tcpQuickAck } from '@ami2ban/nftables-napi';
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

function address(i: number, addresses: number): string {
  // One in five attackers is IPv6. These are only strings in events: nothing is sent anywhere.
  const n = i % addresses;
  return n % 5 === 4 ? `IPV6/UDP/2001:db8::${(n >> 16).toString(16)}:${(n & 0xffff).toString(16)}/5060` : `IPV4/UDP/10.${n >> 16}.${(n >> 8) & 255}.${n & 255}/5060`;
}

function block(i: number, addresses: number, challenges: boolean): string {
  // With challenges, each request is two events on one Call-ID: InvalidAccountID, then a
  // ChallengeSent that is never answered (a scanner), so the unanswered rule has work to do.
  const kind = challenges ? (i % 2 === 0 ? 'InvalidAccountID' : 'ChallengeSent') : i % 2 === 0 ? 'InvalidAccountID' : 'ChallengeResponseFailed';
  const severity = kind === 'ChallengeSent' ? 'Informational' : 'Error';
  const call = challenges ? i >> 1 : i;
  const from = challenges ? address(call, addresses) : address(i, addresses);
  return (
    `Event: ${kind}\r\nPrivilege: security,all\r\nSystemName: astlab\r\nEventTV: 2026-11-21T22:36:02.621+0000\r\n` +
    `Severity: ${severity}\r\nService: PJSIP\r\nEventVersion: 1\r\nAccountID: user${i % 997}\r\nSessionID: call-${call}@bench\r\n` +
    `LocalAddress: IPV4/UDP/127.0.0.1/5060\r\nRemoteAddress: ${from}\r\n\r\n`
  );
}

async function serve(addresses: number, challenges: boolean): Promise<void> {
  const server = new FakeAmiServer({ username: USER, secret: SECRET });
  const port = await server.start();
  process.send?.({ port });
  const session = await server.nextSubscription();
  const socket = session.socket;
  for (let i = 0; i < EVENTS; ) {
    let chunk = '';
    const end = Math.min(EVENTS, i + 2000);
    for (; i < end; i++) chunk += block(i, addresses, challenges);
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
  readonly evicted: number;
  /** Peak RSS of the process that ran this scenario alone. */
  readonly peakRssMiB: number;
  /** The longest gap between two turns of a 5 ms timer while the events came (ms). */
  readonly longestStallMs: number;
}

interface Scenario {
  readonly label: string;
  readonly addresses: number;
  readonly env: Record<string, string>;
  readonly challenges?: boolean;
}

const SCENARIOS: readonly Scenario[] = [
  { label: 'default policy (maxretry 3: most events hit banned addresses)', addresses: ADDRESSES, env: {} },
  { label: 'counting only (maxretry 1000, findtime 1d: every event is a failure in the window)', addresses: ADDRESSES, env: { BAN_MAXRETRY: '1000', BAN_FINDTIME: '1d' } },
  { label: 'distributed scan (every event from a new address, default BAN_MAX_TRACKED 1 000 000)', addresses: EVENTS, env: {} },
  { label: 'distributed scan with BAN_MAX_TRACKED=100000 (evicting from the 100 001st address on)', addresses: EVENTS, env: { BAN_MAX_TRACKED: '100000' } },
  {
    label: 'every rule on: a scan of 500 000 addresses, each request InvalidAccountID + an unanswered ChallengeSent, BAN_INCREMENT=true',
    addresses: EVENTS / 2,
    env: { BAN_INCREMENT: 'true' },
    challenges: true,
  },
];

async function measure(label: string, addresses: number, env: Record<string, string>, challenges = false): Promise<Run> {
  const child = fork(fileURLToPath(import.meta.url), ['--serve', String(addresses), ...(challenges ? ['--challenges'] : [])], { execArgv: [], env: { ...process.env, BENCH_EVENTS: String(EVENTS) } });
  const [msg] = (await once(child, 'message')) as [{ port: number }];
  const config = loadConfig({ AMI_USERNAME: USER, AMI_SECRET: SECRET, AMI_PORT: String(msg.port), BAN_IGNOREIP: '', ...env });
  const engine = new Engine(config.ban);
  const client = new AmiClient({
    target: { host: '127.0.0.1', port: msg.port, username: USER, secret: SECRET },
    connector: new AsteriskManagerConnector(process.env.BENCH_QUICKACK === '0' ? {} : { quickAck: tcpQuickAck() }),
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
      // The daemon's housekeeping, every 10 000 events here: challenges past their timeout.
      if (seen % 10_000 === 0) bans += engine.challengesDue(receivedAt).length;
      if (o.kind !== 'ignored') failures++;
      if (++seen === EVENTS) resolve(performance.now());
    });
  });
  let longestStallMs = 0;
  let last = performance.now();
  const clock = setInterval(() => {
    const t = performance.now();
    if (seen > 0) longestStallMs = Math.max(longestStallMs, t - last - 5);
    last = t;
  }, 5);
  client.start();
  const finished = await done;
  clearInterval(clock);
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
  return { label, seconds: (finished - started) / 1000, bans, failures, liveHeapMiB, evicted: stats.evicted, peakRssMiB: process.resourceUsage().maxRSS / 1024, longestStallMs };
}

async function main(): Promise<void> {
  const serveAt = process.argv.indexOf('--serve');
  if (serveAt !== -1) {
    await serve(Number(process.argv[serveAt + 1]), process.argv.includes('--challenges'));
    return;
  }
  const scenarioAt = process.argv.indexOf('--scenario');
  if (scenarioAt !== -1) {
    const sc = SCENARIOS[Number(process.argv[scenarioAt + 1])];
    if (sc === undefined) throw new Error('no such scenario');
    const run = await measure(sc.label, sc.addresses, sc.env, sc.challenges);
    if (process.send === undefined) console.log(run);
    else process.send(run);
    return;
  }
  console.log(`bench:ingest — ${EVENTS.toLocaleString('en')} security events over ${ADDRESSES.toLocaleString('en')} addresses, AMI over loopback TCP`);
  console.log(`node ${process.version}, ${process.platform}/${process.arch}\n`);
  // Each scenario in a process of its own, so that its peak RSS is its own.
  const only = process.env.BENCH_SCENARIOS?.split(',').map(Number);
  for (let i = 0; i < SCENARIOS.length; i++) {
    if (only !== undefined && !only.includes(i)) continue;
    const child = fork(fileURLToPath(import.meta.url), ['--scenario', String(i)], { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const [r] = (await once(child, 'message')) as [Run];
    const rate = Math.round(EVENTS / r.seconds);
    console.log(r.label);
    console.log(`  ${rate.toLocaleString('en')} events/s  (${r.seconds.toFixed(2)} s; ${r.failures.toLocaleString('en')} failures counted, ${r.bans.toLocaleString('en')} bans, ${r.evicted.toLocaleString('en')} evicted)`);
    if (r.liveHeapMiB !== undefined) console.log(`  live heap after a full GC, engine state held: ${r.liveHeapMiB.toFixed(1)} MiB`);
    console.log(`  peak RSS of the parsing/engine process: ${r.peakRssMiB.toFixed(0)} MiB; longest event-loop stall ${r.longestStallMs.toFixed(1)} ms`);
  }
}

await main();
