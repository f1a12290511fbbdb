// npm run bench:flood — the whole daemon (AMI client, engine, SQLite, libnftables, control API, JSON
// logs) under floods, in a private network namespace, watched from outside: the AMI server and its
// events come from another process (as Asterisk is one), which also watches the kernel.
//  A. 100 000 addresses × 3 failures: time until every ban is acknowledged (in the kernel and the
//     database), the longest event-loop stall, and the control API's answer times (another process
//     asks /v1/status every 25 ms);
//  B. with those 100 000 bans active, a 10 000 events/s background flood and /metrics scraped every
//     5 s: ban latency from the third failure written to the AMI socket to the element seen by
//     `nft monitor`, 500 sequential bans; and meanwhile, from the scheduler, how long the daemon's main
//     thread waited for a CPU at its wake-ups, and how busy the machine was.
// Settings: BENCH_AMI_NODELAY=1 (the sender without Nagle's algorithm), BENCH_ADDRESSES (A's size),
// BENCH_PHASES=A, BENCH_SETTLE=<s> (a pause between A and B), BENCH_FLOOD=0 and BENCH_SCRAPE=0 (B
// without its background flood or without scrapes), BENCH_TRACE=1 (where B's time goes),
// BENCH_STALLS=<ms> (print each event-loop stall longer than that, with when and, from the
// scheduler's account, how long the main thread was on a CPU and how long it waited for one).
import { type ChildProcess, execFileSync, fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Nftables } from '@ami2ban/nftables-napi';
import { loadConfig } from '../src/config/config.js';
import { ControlServer } from '../src/control/server.js';
import { FakeAmiServer } from '../src/demo/fake-ami-server.js';
import { createLogger } from '../src/log/logger.js';
import { buildDaemon } from '../src/service/build.js';
import { machineSeconds } from './proc.js';

const TABLE = 'ami2ban_flood';
const N = Number(process.env.BENCH_ADDRESSES ?? 100_000);

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

function summary(samples: number[]): string {
  const s = [...samples].sort((a, b) => a - b);
  return `p50 ${percentile(s, 50).toFixed(2)} ms, p90 ${percentile(s, 90).toFixed(2)} ms, p99 ${percentile(s, 99).toFixed(2)} ms, max ${percentile(s, 100).toFixed(2)} ms (${s.length} samples)`;
}

function event(ip: string, n: number): string {
  return (
    `Event: InvalidAccountID\r\nPrivilege: security,all\r\nEventTV: 2026-11-21T22:36:02.621+0000\r\nSeverity: Error\r\n` +
    `Service: PJSIP\r\nEventVersion: 1\r\nAccountID: bench\r\nSessionID: call-${n}@bench\r\n` +
    `LocalAddress: IPV4/UDP/127.0.0.1/5060\r\nRemoteAddress: IPV4/UDP/${ip}/5060\r\n\r\n`
  );
}

/** Addresses are strings in events and elements of a set in this namespace only. */
function attacker(i: number): string {
  return `198.${18 + ((i >> 16) & 1)}.${(i >> 8) & 255}.${i & 255}`;
}

// ---- the observer process: asks the control API on a schedule, reports its answer times ----

function get(socketPath: string, path: string): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path }, (res) => {
      res.resume();
      res.on('end', () => {
        resolve(performance.now() - t0);
      });
    });
    req.on('error', reject);
    req.end();
  });
}

async function poll(socketPath: string): Promise<void> {
  const status: number[] = [];
  const metrics: number[] = [];
  const state = { running: true };
  process.on('message', () => {
    state.running = false;
  });
  let nextScrape = performance.now();
  while (state.running) {
    status.push(await get(socketPath, '/v1/status'));
    if (process.env.BENCH_SCRAPE !== '0' && performance.now() >= nextScrape) {
      metrics.push(await get(socketPath, '/metrics'));
      nextScrape += 5000;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  process.send?.({ status, metrics });
}

async function stopPoller(child: ChildProcess): Promise<{ status: number[]; metrics: number[] }> {
  child.send('stop');
  const [r] = (await once(child, 'message')) as [{ status: number[]; metrics: number[] }];
  // Its IPC channel would keep both processes alive.
  child.kill();
  return r;
}

// ---- the sender process: plays Asterisk (the AMI server and its events) and watches the kernel ----
// It is not the daemon's process, as Asterisk is not: its own allocations and timers do not count
// against the daemon's heap and event loop, and what it measures is seen from outside.

type ToDriver = { phase: 'A' } | { phase: 'B' } | { phase: 'stop' };
type FromDriver =
  | { kind: 'port'; port: number }
  | { kind: 'subscribed' }
  | { kind: 'started'; at: number }
  | { kind: 'sent' }
  | { kind: 'samples'; samples: number[]; written: Record<string, [number, number]> };

const now = (): number => performance.timeOrigin + performance.now();

function send(message: FromDriver): void {
  process.send?.(message);
}

async function driver(): Promise<void> {
  const noDelay = process.env.BENCH_AMI_NODELAY === '1';
  const server = new FakeAmiServer({ username: 'bench', secret: 'bench', noDelay });
  const subscribed = server.nextSubscription();
  send({ kind: 'port', port: await server.start() });
  const socket = (await subscribed).socket;
  send({ kind: 'subscribed' });
  let n = 0;
  process.on('message', (m: ToDriver) => {
    if (m.phase === 'A') void phaseA();
    else if (m.phase === 'B') void phaseB();
    else process.exit(0);
  });

  async function phaseA(): Promise<void> {
    send({ kind: 'started', at: now() });
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < N; ) {
        let chunk = '';
        const end = Math.min(N, i + 1000);
        for (; i < end; i++) chunk += event(attacker(i), n++);
        if (!socket.write(chunk)) await once(socket, 'drain');
      }
    }
    send({ kind: 'sent' });
  }

  async function phaseB(): Promise<void> {
    // Line-buffered: nft's stdout to a pipe would otherwise hold the lines back.
    const monitor = spawn('stdbuf', ['-oL', 'nft', 'monitor', 'new', 'elements'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const seen = new Map<string, () => void>();
    let monitorLines = 0;
    let pending = '';
    monitor.stdout.on('data', (d: Buffer) => {
      pending += d.toString();
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const l of lines) {
        monitorLines++;
        const m = /add element inet \S+ ipv4_addr \{ ([0-9.]+)/.exec(l);
        if (m?.[1] !== undefined) seen.get(m[1])?.();
      }
    });
    // Ready once it reports a probe element (it loads the 100 000 elements first).
    const probeSeen = new Promise<void>((resolve) => seen.set('203.0.113.1', resolve));
    for (let tries = 0; ; tries++) {
      execFileSync('nft', ['add', 'element', 'inet', TABLE, 'ipv4_addr', '{ 203.0.113.1 timeout 1s }']);
      const ok = await Promise.race([probeSeen.then(() => true), new Promise<boolean>((r) => setTimeout(() => { r(false); }, 1000))]);
      if (ok) break;
      if (tries === 30) throw new Error('nft monitor reported nothing in 30 s');
    }
    // 10 000 events/s: 100 every 10 ms, each from an address seen once (a distributed scan).
    let scan = 0;
    const flood = setInterval(() => {
      if (process.env.BENCH_FLOOD === '0') return;
      let chunk = '';
      for (let k = 0; k < 100; k++, scan++) chunk += event(`10.${(scan >> 16) & 255}.${(scan >> 8) & 255}.${scan & 255}`, n++);
      socket.write(chunk);
    }, 10);
    const samples: number[] = [];
    const written: Record<string, [number, number]> = {};
    for (let i = 0; i < 500; i++) {
      const target = i < 250 ? `192.0.2.${i}` : `198.51.100.${i - 250}`;
      socket.write(event(target, n++) + event(target, n++));
      await new Promise((r) => setTimeout(r, 3));
      const inKernelAt = new Promise<number>((resolve) => seen.set(target, () => { resolve(performance.now()); }));
      const start = performance.now();
      socket.write(event(target, n++));
      const watchdog = setTimeout(() => {
        console.error(`  no element for ${target} after 5 s (monitor lines so far ${monitorLines})`);
      }, 5000);
      const seenAt = await inKernelAt;
      samples.push(seenAt - start);
      written[target] = [performance.timeOrigin + start, performance.timeOrigin + seenAt];
      clearTimeout(watchdog);
      if (process.env.BENCH_VERBOSE !== undefined && i % 50 === 0) console.error(`  … ${i} bans measured`);
      await new Promise((r) => setTimeout(r, 7));
    }
    clearInterval(flood);
    monitor.kill();
    send({ kind: 'samples', samples, written });
  }
}

// ---- the daemon's process: the daemon, its log sink and a stall clock, nothing else ----

async function main(): Promise<void> {
  if (process.env.AMI2BAN_NETNS !== 'private') {
    console.error('run through `npm run bench:flood` (it runs in a private network namespace)');
    process.exit(2);
  }
  execFileSync('nft', ['flush', 'ruleset']);
  const dir = mkdtempSync(join(tmpdir(), 'ami2ban-flood-'));
  const socketPath = join(dir, 'control.sock');
  // Asterisk leaves Nagle's algorithm on for AMI sessions: so does the sender, unless
  // BENCH_AMI_NODELAY=1 (then what is measured is the daemon alone, without the sender's TCP
  // holding small writes).
  const noDelay = process.env.BENCH_AMI_NODELAY === '1';
  // (The other processes run without node options given to this one: they measure the daemon's process.)
  const sender = fork(fileURLToPath(import.meta.url), ['--driver'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [] });
  const inbox: FromDriver[] = [];
  const waiters: (() => void)[] = [];
  sender.on('message', (m: FromDriver) => {
    inbox.push(m);
    for (const w of waiters.splice(0)) w();
  });
  async function receive<K extends FromDriver['kind']>(kind: K): Promise<Extract<FromDriver, { kind: K }>> {
    for (;;) {
      const at = inbox.findIndex((m) => m.kind === kind);
      if (at !== -1) return inbox.splice(at, 1)[0] as Extract<FromDriver, { kind: K }>;
      await new Promise<void>((r) => waiters.push(r));
    }
  }
  const { port } = await receive('port');
  const config = loadConfig({
    AMI_USERNAME: 'bench',
    AMI_SECRET: 'bench',
    AMI_PORT: String(port),
    BAN_IGNOREIP: '',
    // Address bans are what is measured: the attackers share /24s, so escalation to networks is off.
    BAN_V4_SUBNET_ESCALATE: '0',
    BAN_SUBNET_ESCALATE: '0',
    BAN_SUBNET_MAXRETRY: '0',
    BAN_IGNORESELF: 'false',
    NFT_TABLE: TABLE,
    STATE_DIR: join(dir, 'state'),
    CONTROL_LISTEN: socketPath,
    ...(process.env.NFT_CHECK_INTERVAL === undefined ? {} : { NFT_CHECK_INTERVAL: process.env.NFT_CHECK_INTERVAL }),
  });
  // Real JSON log lines, written to a sink that counts the acknowledged bans.
  let acknowledged = 0;
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      const text = chunk.toString();
      for (let at = text.indexOf('"message":"ban"'); at !== -1; at = text.indexOf('"message":"ban"', at + 1)) acknowledged++;
      done();
    },
  });
  const logger = createLogger({ level: 'info', format: 'json', isTTY: false, stream: sink });
  const traced = new Map<string, [number, number]>();
  const contexts = new Set<Nftables>();
  const arrived = new Map<string, number>();
  if (process.env.BENCH_TRACE === '1') {
    const dc = await import('node:diagnostics_channel');
    // The AMI connection's socket, once the daemon holds it: its arrival times.
    dc.subscribe('net.client.socket', (m) => {
      const socket = (m as { socket: import('node:net').Socket }).socket;
      socket.once('connect', () => {
        setTimeout(() => {
          socket.prependListener('data', (d: Buffer | string) => {
            const t = now();
            for (const ip of String(d).match(/(192\.0\.2|198\.51\.100)\.\d+/g) ?? []) arrived.set(ip, t);
          });
        }, 1000);
      });
    });
    // When each transaction holding a measured address is handed to libnftables' binding, and when
    // that call returns (for a transaction committed by netlink, it is in the kernel by then).
    // eslint-disable-next-line @typescript-eslint/unbound-method -- called with its own `this` below
    const original = Nftables.prototype.run;
    Nftables.prototype.run = function (this: Nftables, commands) {
      const ips = JSON.stringify(commands).match(/(192\.0\.2|198\.51\.100)\.\d+/g) ?? [];
      const t = now();
      contexts.add(this);
      const p = original.call(this, commands);
      const r = now();
      for (const ip of ips) traced.set(ip, [t, r]);
      return p;
    };
  }
  const { daemon, metrics } = buildDaemon(config, logger, 'bench');
  const control = new ControlServer({ listen: config.control.listen, token: undefined, target: daemon, metrics });
  await daemon.start();
  await control.listen();
  await receive('subscribed');

  let maxStall = 0;
  let last = performance.now();
  // With BENCH_STALLS, each long stall is told with what the main thread did meanwhile (from the
  // scheduler's own account): on a CPU, or runnable but waiting for one (the other processes and
  // threads had both cores).
  const stalls = process.env.BENCH_STALLS === undefined ? undefined : Number(process.env.BENCH_STALLS);
  /** The main thread's time on a CPU and waiting for one (ms), and how many times it ran. */
  const schedstat = (): [number, number, number] => {
    const [onCpu = 0, waiting = 0, slices = 0] = readFileSync(`/proc/self/task/${String(process.pid)}/schedstat`, 'utf8').split(' ').map(Number);
    return [onCpu / 1e6, waiting / 1e6, slices];
  };
  let lastSched = stalls === undefined ? [0, 0, 0] : schedstat();
  const stallTimer = setInterval(() => {
    const t = performance.now();
    if (stalls !== undefined) {
      const sched = schedstat();
      if (t - last - 5 > stalls) console.error(`stall ${(t - last - 5).toFixed(1)} ms ending at ${t.toFixed(0)}: the main thread on a CPU ${(sched[0] - (lastSched[0] ?? 0)).toFixed(1)} ms, waiting for one ${(sched[1] - (lastSched[1] ?? 0)).toFixed(1)} ms`);
      lastSched = sched;
    }
    maxStall = Math.max(maxStall, t - last - 5);
    last = t;
  }, 5);

  console.log(`bench:flood — node ${process.version}, whole daemon in a private network namespace (libnftables, SQLite in ${tmpdir()})`);
  console.log(`AMI sender (another process): ${noDelay ? 'TCP_NODELAY (BENCH_AMI_NODELAY=1)' : "Nagle's algorithm on, as Asterisk's AMI sessions"}\n`);

  // A. the burst
  const pollerA = fork(fileURLToPath(import.meta.url), ['--poll', socketPath], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [] });
  await new Promise((r) => setTimeout(r, 300));
  maxStall = 0;
  last = performance.now();
  sender.send({ phase: 'A' } satisfies ToDriver);
  const { at: t0 } = await receive('started');
  while (acknowledged < N) await new Promise((r) => setTimeout(r, 5));
  const tA = now() - t0;
  const stallA = maxStall;
  const a = await stopPoller(pollerA);
  const inKernel = execFileSync('nft', ['-j', 'list', 'set', 'inet', TABLE, 'ipv4_addr'], { encoding: 'utf8', maxBuffer: 256 << 20 }).split('"val"').length - 1;
  console.log(`A. ${N.toLocaleString('en')} addresses × 3 failures (${(3 * N).toLocaleString('en')} events):`);
  console.log(`   every ban acknowledged (kernel + database) after ${(tA / 1000).toFixed(2)} s; ${inKernel.toLocaleString('en')} elements in the kernel set`);
  console.log(`   longest event-loop stall: ${stallA.toFixed(1)} ms`);
  console.log(`   control API /v1/status from another process: ${summary(a.status)}`);

  if (process.env.BENCH_PHASES !== 'A') {
    const settle = Number(process.env.BENCH_SETTLE ?? 0);
    await new Promise((r) => setTimeout(r, settle * 1000));
    // B. latency with the bans active, a background flood and scrapes
    const pollerB = fork(fileURLToPath(import.meta.url), ['--poll', socketPath], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [] });
    maxStall = 0;
    last = performance.now();
    const schedB = schedstat();
    const busyB = machineSeconds().busy;
    const tB = performance.now();
    sender.send({ phase: 'B' } satisfies ToDriver);
    const { samples, written } = await receive('samples');
    const stallB = maxStall;
    const schedAfter = schedstat();
    const waits = schedAfter[2] - schedB[2];
    const b = await stopPoller(pollerB);
    console.log(`\nB. with ${inKernel.toLocaleString('en')} bans active, a 10 000 events/s background flood, /metrics scraped every 5 s:`);
    console.log(`   ban latency, third failure written to the AMI socket → element seen by nft monitor: ${summary(samples)}`);
    console.log(`   longest event-loop stall: ${stallB.toFixed(1)} ms`);
    console.log(`   meanwhile (${((performance.now() - tB) / 1000).toFixed(1)} s): the daemon's main thread on a CPU ${((schedAfter[0] - schedB[0]) / 1000).toFixed(2)} s, runnable but waiting for one ${((schedAfter[1] - schedB[1]) / 1000).toFixed(2)} s over its ${String(waits)} wake-ups (${((schedAfter[1] - schedB[1]) / Math.max(1, waits)).toFixed(3)} ms each on average); the machine busy ${((machineSeconds().busy - busyB) / ((performance.now() - tB) / 1000) * 50).toFixed(0)} % of its 2 cores`);
    console.log(`   control API /v1/status: ${summary(b.status)}`);
    console.log(`   /metrics scrapes: ${summary(b.metrics)}`);
    if (process.env.BENCH_TRACE === '1') {
      const parts: [string, number[]][] = [
        ['written → read by the daemon', []],
        ['read → transaction handed to the binding', []],
        ['handed → committed (call returned)', []],
        ['committed → seen by nft monitor', []],
      ];
      const each: number[][] = [];
      for (const [ip, [w, seen]] of Object.entries(written)) {
        const c = traced.get(ip);
        const a = arrived.get(ip);
        if (c === undefined || a === undefined) continue;
        const steps = [a - w, c[0] - a, c[1] - c[0], seen - c[1]];
        steps.forEach((v, k) => parts[k]?.[1].push(v));
        each.push([seen - w, ...steps, w]);
      }
      console.log('   where the time goes (BENCH_TRACE=1):');
      for (const [label, xs] of parts) console.log(`     ${label}: ${summary(xs)}`);
      console.log('     the 10 slowest (total = the four steps above, in order; ms; when written):');
      for (const e of each.sort((x, y) => (y[0] ?? 0) - (x[0] ?? 0)).slice(0, 10)) console.log(`       ${e.slice(0, 5).map((v) => v.toFixed(2)).join('  ')}  at ${(e[5] ?? 0).toFixed(0)}`);
      for (const c of contexts) console.log(`     libnftables context: ${c.fastPath.committed} transactions by netlink, ${c.fastPath.declined} handed to libnftables`);
    }
  }

  clearInterval(stallTimer);
  sender.send({ phase: 'stop' } satisfies ToDriver);
  await control.close();
  await daemon.stop();
  rmSync(dir, { recursive: true, force: true });
  execFileSync('nft', ['flush', 'ruleset']);
  process.exit(0);
}

const pollAt = process.argv.indexOf('--poll');
if (pollAt !== -1) await poll(process.argv[pollAt + 1] ?? '');
else if (process.argv.includes('--driver')) await driver();
else await main();
