// bench:fleet — a fleet of ami2ban daemons, each in its own network namespace with its own
// nftables, on one redis-server: how fast a ban decided on one host is in the others' kernels.
//   A. propagation latency: the third failure written to the origin's AMI → the element in each
//      other host's kernel (seen by `nft monitor` there), one address at a time;
//   B. a 10 000-address burst on the origin → present on every other host;
//   C. catch-up: a host that missed 100 000 bans, from its start to all of them in its kernel.
// Settings: BENCH_FLEET_HOSTS, BENCH_FLEET_SAMPLES, BENCH_FLEET_MISSED (smaller runs),
// BENCH_FLEET_LOG_LEVEL (the daemons' LOG_LEVEL, warn by default), BENCH_FLEET_NODE_ARGS (options
// for node in every daemon, e.g. `--single-threaded-gc`), BENCH_FLEET_WARMUP=<n> (n addresses
// banned at once before A, unmeasured), PROF=<k> (--cpu-prof for host k), BENCH_FLEET_DEBUG=1
// (C's late host's log lines with their times), BENCH_FLEET_RT=0 (A's observers at the daemons'
// priority), BENCH_FLEET_FLOOR=1 (A and B, the other hosts running bench/floor-receiver.ts).
import { type ChildProcess, execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { FleetHost, type LogLine, RedisServer } from '../src/demo/fleet-lab.js';
import { machineSeconds } from './proc.js';

const HOSTS = Number(process.env.BENCH_FLEET_HOSTS ?? 10);
const SAMPLES = Number(process.env.BENCH_FLEET_SAMPLES ?? 200);
const BURST = 10_000;
const MISSED = Number(process.env.BENCH_FLEET_MISSED ?? 100_000);
const WARMUP = Number(process.env.BENCH_FLEET_WARMUP ?? 0);
const DECISIONS = `/tmp/ami2ban-bench-fleet-decisions-${String(process.pid)}`;

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? Number.NaN;
}

function summary(samples: readonly number[]): string {
  const s = [...samples].sort((a, b) => a - b);
  return `p50 ${percentile(s, 50).toFixed(2)} ms, p90 ${percentile(s, 90).toFixed(2)} ms, p99 ${percentile(s, 99).toFixed(2)} ms, max ${percentile(s, 100).toFixed(2)} ms (${s.length} samples)`;
}

/** Every address added to the host's address set, as `nft monitor` reports it, with when. */
class Monitor {
  readonly child: ChildProcess;
  readonly waiters = new Map<string, (at: number) => void>();
  count = 0;

  constructor(readonly host: FleetHost) {
    // Line-buffered: nft's stdout to a pipe would otherwise hold the lines back.
    this.child = host.spawnInside(['stdbuf', '-oL', 'nft', 'monitor', 'new', 'elements']);
    let pending = '';
    this.child.stdout?.on('data', (d: Buffer) => {
      const at = performance.now();
      pending += d.toString();
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const l of lines) {
        const m = /add element inet \S+ ipv4_addr \{ (.*) \}/.exec(l);
        if (m?.[1] === undefined) continue;
        for (const part of m[1].split(',')) {
          const ip = part.trim().split(' ')[0] ?? '';
          this.count++;
          this.waiters.get(ip)?.(at);
        }
      }
    });
  }

  seen(ip: string): Promise<number> {
    return new Promise((resolve) => this.waiters.set(ip, resolve));
  }

  /** Resolves once the monitor reports elements (it has subscribed). */
  async ready(): Promise<void> {
    for (let tries = 0; tries < 50; tries++) {
      const probe = `203.0.113.${String(200 + (tries % 50))}`;
      const seen = this.seen(probe);
      this.host.inside('nft', 'add', 'element', 'inet', 'ami2ban', 'ipv4_addr', `{ ${probe} timeout 1s }`);
      if (await Promise.race([seen.then(() => true), new Promise<boolean>((r) => setTimeout(() => { r(false); }, 200))])) return;
    }
    throw new Error(`nft monitor in ${this.host.name} reported nothing`);
  }

  stop(): void {
    this.child.kill();
  }
}

const addr = (base: number, i: number): string => `${String(base)}.${String((i >> 16) & 255)}.${String((i >> 8) & 255)}.${String(i & 255)}`;

async function waitUntil(what: string, ok: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/**
 * A watcher in the host's namespace (bench/watch-element.ts) for some addresses: `ready` once it
 * asks the kernel, `present(ip)` with the epoch time (ms) that address was first seen in the
 * host's address set.
 */
function watch(host: FleetHost, ips: readonly string[], everyMs: number): { ready: Promise<void>; present: (ip: string) => Promise<number>; cpuMs: () => number; watchingCpuMs: () => number } {
  const child = host.spawnInside([process.execPath, fileURLToPath(new URL('./watch-element.js', import.meta.url)), 'ami2ban', 'ipv4_addr', ips.join(','), String(everyMs)]);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  const at = (ip: string): number => Number(new RegExp(`present ${ip.replaceAll('.', '\\.')} (\\S+)`).exec(out)?.[1]);
  // 'close': after its output is all read. It ends by itself once every address is there.
  const exited = new Promise<never>((_, reject) =>
    child.once('close', () => {
      if (ips.some((ip) => Number.isNaN(at(ip)))) reject(new Error(`${host.name}: the watcher of ${ips.join(', ')} ended: ${out}`));
    }),
  );
  const ready = Promise.race([waitUntil(`${host.name}'s watcher`, () => out.includes('watching'), 10_000), exited]);
  const present = (ip: string): Promise<number> => Promise.race([waitUntil(`${ip} in ${host.name}'s kernel`, () => !Number.isNaN(at(ip)), 300_000), exited]).then(() => at(ip));
  // The CPU it printed last: once the last address is there.
  // cpuMs: all it used, its start included; watchingCpuMs: since it began watching.
  const cpuMs = (): number => Number([...out.matchAll(/ cpu (\S+)/g)].at(-1)?.[1] ?? Number.NaN);
  return { ready, present, cpuMs, watchingCpuMs: () => cpuMs() - Number(/watching cpu (\S+)/.exec(out)?.[1] ?? Number.NaN) };
}

/** CPU seconds (user + system) a process has used so far: its main thread, and its other threads. */
function cpuSeconds(pid: number | undefined): { main: number; others: number } {
  const out = { main: 0, others: 0 };
  if (pid === undefined) return out;
  try {
    for (const tid of readdirSync(`/proc/${String(pid)}/task`)) {
      // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
      const f = readFileSync(`/proc/${String(pid)}/task/${tid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
      const s = (Number(f[11]) + Number(f[12])) / 100;
      if (tid === String(pid)) out.main += s;
      else out.others += s;
    }
  } catch {
    // ended meanwhile
  }
  return out;
}

/** What each kind of process used during a phase: where the two cores went. */
function cpuDuring(before: Map<string, { main: number; others: number }>, after: Map<string, { main: number; others: number }>): string {
  const roles = new Map<string, { main: number; others: number }>();
  for (const [key, a] of after) {
    const b = before.get(key) ?? { main: 0, others: 0 };
    const role = key.split('#')[0] ?? key;
    const r = roles.get(role) ?? { main: 0, others: 0 };
    r.main += a.main - b.main;
    r.others += a.others - b.others;
    roles.set(role, r);
  }
  return [...roles].map(([role, r]) => `${role} ${(r.main + r.others).toFixed(2)} s (main thread ${r.main.toFixed(2)}, others ${r.others.toFixed(2)})`).join('; ');
}

async function main(): Promise<void> {
  if (process.env.AMI2BAN_NETNS !== 'private') {
    console.error('run through `npm run bench:fleet` (it runs in a private network namespace)');
    process.exit(2);
  }
  const redis = await RedisServer.start();
  const hosts: FleetHost[] = [];
  for (let i = 0; i < HOSTS; i++) {
    // TCP_NODELAY on the fake AMI: what is measured is the fleet, not the sender's Nagle delay.
    // Warnings only: every daemon's ban lines would otherwise be parsed here, slowing the observer.
    const h = new FleetHost(`pbx-${String(i)}`, { NFT_CHECK_INTERVAL: '10s', LOG_LEVEL: process.env.BENCH_FLEET_LOG_LEVEL ?? 'warn'}, true);
    const nodeArgs = process.env.BENCH_FLEET_NODE_ARGS ?? '';
    if (nodeArgs !== '') h.nodeArgs = nodeArgs.split(' ');
    if (String(i) === process.env.PROF) h.nodeArgs = [...h.nodeArgs, '--cpu-prof', '--cpu-prof-dir=/tmp/prof'];
    if (i === 0) {
      // The origin tells when it hands each of A's bans to its kernel (right after deciding it).
      rmSync(DECISIONS, { force: true });
      h.nodeArgs = [...h.nodeArgs, '--import', fileURLToPath(new URL('./decision-hook.js', import.meta.url))];
      h.env.BENCH_FLEET_DECISIONS = DECISIONS;
    }
    h.env.FLEET_REDIS_URL = `redis://${h.hostAddress}:${String(redis.port)}`;
    await h.start();
    hosts.push(h);
  }
  for (const h of hosts) await h.connected();
  const [origin, ...others] = hosts;
  if (origin === undefined || others.length === 0) throw new Error('BENCH_FLEET_HOSTS must be at least 2');
  // BENCH_FLEET_FLOOR=1: the other hosts' daemons replaced by the least a receiver can do
  // (bench/floor-receiver.ts), for A and B: what the two cores allow any receiver written for Node.
  const floor = process.env.BENCH_FLEET_FLOOR === '1';
  const floors: ChildProcess[] = [];
  if (floor) {
    for (const h of others) {
      await h.stopDaemon();
      const child = h.spawnInside([process.execPath, fileURLToPath(new URL('./floor-receiver.js', import.meta.url)), h.hostAddress, String(redis.port)]);
      floors.push(child);
      await new Promise((r) => child.stdout?.once('data', r));
    }
  }
  // The observers of A (this process and the nft monitors, started from it) at a real-time
  // priority: an element is seen when it is added, not when its observer next gets one of the two
  // cores the daemons keep busy (at the daemons' priority, that wait added ~2 ms to A's p50).
  // Only for A: the daemons started later (C's) must not inherit it. BENCH_FLEET_RT=0: off.
  let rt = process.env.BENCH_FLEET_RT !== '0';
  let observers = rt ? 'observers at real-time priority' : 'observers at the daemons\' priority (BENCH_FLEET_RT=0)';
  if (rt) {
    try {
      execFileSync('chrt', ['-f', '-p', '50', String(process.pid)], { stdio: 'pipe' });
    } catch (err) {
      rt = false;
      observers = `observers at the daemons' priority (chrt failed: ${String((err as { stderr?: unknown }).stderr ?? err).trim()})`;
    }
  }
  const monitors = hosts.map((h) => new Monitor(h));
  for (const m of monitors) await m.ready();
  console.log(`bench:fleet — node ${process.version}, ${String(HOSTS)} ami2ban daemons, each in its own network namespace (libnftables, SQLite), one redis-server ${redis.cli('INFO', 'server').match(/redis_version:(\S+)/)?.[1] ?? '?'}; A's ${observers}${floor ? '; the other hosts: floor receivers (BENCH_FLEET_FLOOR=1)' : ''}\n`);

  const end = async (): Promise<never> => {
    for (const c of floors) c.kill();
    for (const m of monitors) m.stop();
    rmSync(DECISIONS, { force: true });
    await Promise.all(hosts.map((h) => h.stopDaemon()));
    await Promise.all(hosts.map((h) => h.close()));
    await redis.kill();
    process.exit(0);
  };

  let monitorsRunning = true;
  const cpu = (): Map<string, { main: number; others: number }> =>
    new Map([
      ['the origin', cpuSeconds(origin.daemonPid)],
      ...(floor ? floors.map((c, k) => [`the floor receivers#${String(k)}`, cpuSeconds(c.pid)] as const) : others.map((h, k) => [`the other daemons#${String(k)}`, cpuSeconds(h.daemonPid)] as const)),
      ['redis-server', cpuSeconds(redis.pid)],
      // While they run (A): the observers' share of the two cores.
      ...(monitorsRunning ? monitors.map((m, k) => [`the nft monitors#${String(k)}`, cpuSeconds(m.child.pid)] as const) : []),
    ]);

  // Warm-up (WARMUP addresses at once, not measured): a fleet runs for weeks, its code optimized by
  // the JIT; freshly started daemons would run A's first hundreds of bans in the interpreter.
  if (WARMUP > 0) {
    let warm = '';
    for (let i = 0; i < WARMUP; i++) warm += origin.failures(addr(198, 0x110000 + i), 3);
    const lastWarm = addr(198, 0x110000 + WARMUP - 1);
    const arrived = monitors.map((m) => m.seen(lastWarm));
    origin.ami.broadcast(warm);
    await Promise.all(arrived);
    await new Promise((r) => setTimeout(r, 2000));
  }

  // A. one address at a time
  const cpuBeforeA = cpu();
  const remote: number[] = [];
  const local: number[] = [];
  const fromOrigin: number[] = [];
  /** Each sample's address, and when each other host's kernel had it (epoch ms). */
  const seenAt: [string, number[]][] = [];
  for (let s = 0; s < SAMPLES; s++) {
    const ip = addr(198, 0x120000 + s);
    const seen = monitors.map((m) => m.seen(ip));
    const text = origin.failures(ip, 3);
    const t0 = performance.now();
    origin.ami.broadcast(text);
    const times = await Promise.all(seen);
    local.push((times[0] ?? t0) - t0);
    for (const t of times.slice(1)) {
      remote.push(t - t0);
      fromOrigin.push(t - (times[0] ?? t0));
    }
    seenAt.push([ip, times.slice(1).map((t) => performance.timeOrigin + t)]);
    await new Promise((r) => setTimeout(r, 10));
  }
  console.log(`A. propagation, one ban at a time (third failure written to the origin's AMI → element in the kernel):`);
  console.log(`   origin's own kernel:          ${summary(local)}`);
  console.log(`   each of the ${String(others.length)} other hosts:   ${summary(remote)}`);
  // The origin's hook writes its lines every 100 ms.
  await new Promise((r) => setTimeout(r, 300));
  const handed = new Map<string, number>();
  for (const l of (existsSync(DECISIONS) ? readFileSync(DECISIONS, 'utf8') : '').split('\n')) {
    const [ip, t] = l.split(' ');
    if (ip !== undefined && t !== undefined) handed.set(ip, Number(t));
  }
  const fromDecision = seenAt.flatMap(([ip, ts]) => {
    const d = handed.get(ip);
    return d === undefined ? [] : ts.map((t) => t - d);
  });
  console.log(`   the same from the origin's decision (its kernel transaction handed to the binding, right after): ${summary(fromDecision)}`);
  console.log(`   the same from the origin's own kernel (its transaction committed there): ${summary(fromOrigin)}`);
  console.log(`   CPU used for the ${String(SAMPLES)} bans (and the 10 ms pauses between them): ${cpuDuring(cpuBeforeA, cpu())}`);
  if (rt) execFileSync('chrt', ['-o', '-p', '0', String(process.pid)]);

  // Their output is for A only: under a burst, ten of them print 10 000 lines each, and the kernel
  // copies every element added to each listener, all on the two cores being measured.
  for (const m of monitors) m.stop();
  monitorsRunning = false;

  // B. a burst. Bans reach every host in the origin's order (one stream): the last address of the
  // burst in a kernel means the burst is there (each set listed and checked in full after). A
  // watcher in each host's namespace looks it up every 50 ms (each wake-up costs; every 5 ms, the
  // ten watchers used a third of a core, every 20 ms a fifth).
  let text = '';
  const burst: string[] = [];
  for (let i = 0; i < BURST; i++) {
    const ip = addr(198, 0x130000 + i);
    burst.push(ip);
    text += origin.failures(ip, 3);
  }
  const last = burst[burst.length - 1] ?? '';
  const watchers = hosts.map((h) => watch(h, [last], 50));
  await Promise.all(watchers.map((w) => w.ready));
  const cpuBefore = cpu();
  const tB = performance.timeOrigin + performance.now();
  origin.ami.broadcast(text);
  const times = await Promise.all(watchers.map((w) => w.present(last)));
  const cpuB = cpuDuring(cpuBefore, cpu());
  const spans = times.slice(1).map((t) => t - tB).sort((a, b) => a - b);
  const complete = others.filter((h) => {
    const inKernel = new Set(h.elements());
    return burst.every((ip) => inKernel.has(ip));
  }).length;
  console.log(`\nB. ${BURST.toLocaleString('en')} addresses × 3 failures on the origin at once:`);
  console.log(`   in every other host's kernel after ${((spans[spans.length - 1] ?? 0) / 1000).toFixed(2)} s (fastest host ${((spans[0] ?? 0) / 1000).toFixed(2)} s; the origin's own kernel ${(((times[0] ?? tB) - tB) / 1000).toFixed(2)} s); all ${BURST.toLocaleString('en')} checked present on ${String(complete)} of ${String(others.length)} hosts`);
  console.log(`   CPU used meanwhile: ${cpuB}; the ${String(watchers.length)} watchers ${(watchers.reduce((sum, w) => sum + w.watchingCpuMs(), 0) / 1000).toFixed(2)} s in all (their start before B not counted)`);
  // The floor (BENCH_FLEET_FLOOR=1) is for A and B.
  if (floor) await end();

  // C. catch-up: one host stopped while the origin bans MISSED addresses (the others stopped
  // too, to leave the two cores to the origin and Redis), then started again.
  const late = others[0];
  if (late === undefined) throw new Error('hosts');
  await Promise.all(others.map((h) => h.stopDaemon()));
  const bansBefore = Number(redis.cli('ZCARD', 'ami2ban:bans'));
  const missed = new Set<string>();
  for (let i = 0; i < MISSED; ) {
    let chunk = '';
    for (const end = Math.min(MISSED, i + 1000); i < end; i++) {
      const ip = addr(198, 0x140000 + i);
      missed.add(ip);
      chunk += origin.failures(ip, 3);
    }
    origin.ami.broadcast(chunk);
    await new Promise((r) => setImmediate(r));
  }
  await waitUntil('the origin to share them', () => Number(redis.cli('ZCARD', 'ami2ban:bans')) >= bansBefore + MISSED, 300_000);
  // Shared is not finished: its records, rows and log lines may still be going. The late host
  // starts into a quiet fleet (the origin under 5 % of a core over 200 ms).
  for (let quiet = false, waited = 0; !quiet && waited < 60_000; waited += 200) {
    const before = cpuSeconds(origin.daemonPid);
    await new Promise((r) => setTimeout(r, 200));
    const after = cpuSeconds(origin.daemonPid);
    quiet = after.main + after.others - before.main - before.others < 0.01;
    if (process.env.BENCH_FLEET_DEBUG === '1') console.log(`origin after sharing: ${((after.main + after.others - before.main - before.others) * 1000).toFixed(0)} ms of CPU in 200 ms`);
  }
  // The first and the last address it missed in the snapshot's order (Redis', which the host applies
  // in): the first one in the kernel says its catch-up is under way, the last that it is through;
  // all of them are checked by listing the set afterwards.
  const inForce = redis.cli('ZRANGE', 'ami2ban:bans', String(Date.now()), '+inf', 'BYSCORE').split('\n');
  const firstIp = inForce.find((ip) => missed.has(ip)) ?? '';
  const lastIp = [...inForce].reverse().find((ip) => missed.has(ip)) ?? '';
  // Every 10 ms: every millisecond, the watcher's wake-ups took CPU from the host it watches.
  const watcher = watch(late, [firstIp, lastIp], 10);
  await watcher.ready;
  const underWay = watcher.present(firstIp);
  const quietBefore = new Map([['the origin', cpuSeconds(origin.daemonPid)], ['redis-server', cpuSeconds(redis.pid)]]);
  const machineBefore = machineSeconds();
  const tC = performance.timeOrigin + performance.now();
  await late.startDaemon();
  const caughtUp = await watcher.present(lastIp);
  const firstIn = await underWay;
  const machineAfter = machineSeconds();
  const cpuC = cpuDuring(new Map([['the late host', { main: 0, others: 0 }], ...quietBefore]), new Map([['the late host', cpuSeconds(late.daemonPid)], ['the origin', cpuSeconds(origin.daemonPid)], ['redis-server', cpuSeconds(redis.pid)]]));
  const inKernel = new Set(late.elements());
  const absent = [...missed].filter((ip) => !inKernel.has(ip)).length;
  if (process.env.BENCH_FLEET_DEBUG === '1') {
    const byMessage = new Map<string, number>();
    for (const l of late.lines) byMessage.set(l.message, (byMessage.get(l.message) ?? 0) + 1);
    console.log(JSON.stringify([...byMessage]), `start ${new Date(tC).toISOString()}`);
    for (const l of late.lines) if (l.message !== 'ban') console.log(String(l.timestamp), l.message);
    const bans = late.lines.filter((l) => l.message === 'ban');
    console.log('first ban line', String(bans[0]?.timestamp), 'last', String(bans[bans.length - 1]?.timestamp));
  }
  console.log(`\nC. a host that missed ${MISSED.toLocaleString('en')} bans, started again:`);
  const since = (l: LogLine | undefined): string => (l === undefined ? '?' : ((Date.parse(String(l.timestamp)) - tC) / 1000).toFixed(2));
  console.log(`   all ${MISSED.toLocaleString('en')} in its kernel ${((caughtUp - tC) / 1000).toFixed(2)} s after its start (the last of the snapshot seen there by a lookup every 10 ms, the watcher using ${(watcher.cpuMs() / 1000).toFixed(2)} s of CPU with its start; then the set listed: ${absent === 0 ? 'none missing' : `${String(absent)} MISSING`}; process start, reconcile, snapshot of ${redis.cli('ZCARD', 'ami2ban:bans')} bans)`);
  console.log(`   the first address it missed in its kernel ${((firstIn - tC) / 1000).toFixed(2)} s after its start (node's start, the daemon's own, connecting to Redis, the snapshot's first part); from there to the last ${((caughtUp - firstIn) / 1000).toFixed(2)} s`);
  console.log(`   CPU used meanwhile: ${cpuC}; the whole machine ${(machineAfter.busy - machineBefore.busy).toFixed(2)} s busy (all processes and the kernel, the watcher included), ${(machineAfter.steal - machineBefore.steal).toFixed(2)} s stolen by the hypervisor`);
  // With BENCH_FLEET_LOG_LEVEL=info (the hosts log at warn by default, which hides these):
  const connected = late.lines.find((l) => l.message === 'fleet bus connected');
  if (connected !== undefined) console.log(`   its time line: daemon started ${since(late.lines.find((l) => l.message === 'ami2ban started'))} s, the whole snapshot read (bus connected) ${since(connected)} s; its parts go to the kernel as they are read`);
  console.log(`   Redis memory with ${redis.cli('ZCARD', 'ami2ban:bans')} bans and ${redis.cli('XLEN', 'ami2ban:stream')} stream entries: ${redis.cli('INFO', 'memory').match(/used_memory_human:(\S+)/)?.[1] ?? '?'}`);

  await end();
}

await main();
