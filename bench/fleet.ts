// bench:fleet — a fleet of ami2ban daemons, each in its own network namespace with its own
// nftables, on one redis-server: how fast a ban decided on one host is in the others' kernels.
//   A. propagation latency: the third failure written to the origin's AMI → the element in each
//      other host's kernel (seen by `nft monitor` there), one address at a time;
//   B. a 10 000-address burst on the origin → present on every other host;
//   C. catch-up: a host that missed 100 000 bans, from its start to all of them in its kernel.
import type { ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { FleetHost, type LogLine, RedisServer } from '../src/demo/fleet-lab.js';

const HOSTS = Number(process.env.BENCH_FLEET_HOSTS ?? 10);
const SAMPLES = Number(process.env.BENCH_FLEET_SAMPLES ?? 200);
const BURST = 10_000;
const MISSED = Number(process.env.BENCH_FLEET_MISSED ?? 100_000);

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? Number.NaN;
}

function summary(samples: readonly number[]): string {
  const s = [...samples].sort((a, b) => a - b);
  return `p50 ${percentile(s, 50).toFixed(2)} ms, p90 ${percentile(s, 90).toFixed(2)} ms, p99 ${percentile(s, 99).toFixed(2)} ms, max ${percentile(s, 100).toFixed(2)} ms (${s.length} samples)`;
}

/** Every address added to the host's address set, as `nft monitor` reports it, with when. */
class Monitor {
  private readonly child: ChildProcess;
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
    if (String(i) === process.env.PROF) h.nodeArgs = ['--cpu-prof', '--cpu-prof-dir=/tmp/prof'];
    h.env.FLEET_REDIS_URL = `redis://${h.hostAddress}:${String(redis.port)}`;
    await h.start();
    hosts.push(h);
  }
  for (const h of hosts) await h.connected();
  const [origin, ...others] = hosts;
  if (origin === undefined || others.length === 0) throw new Error('BENCH_FLEET_HOSTS must be at least 2');
  const monitors = hosts.map((h) => new Monitor(h));
  for (const m of monitors) await m.ready();
  console.log(`bench:fleet — node ${process.version}, ${String(HOSTS)} ami2ban daemons, each in its own network namespace (libnftables, SQLite), one redis-server ${redis.cli('INFO', 'server').match(/redis_version:(\S+)/)?.[1] ?? '?'}\n`);

  // A. one address at a time
  const remote: number[] = [];
  const local: number[] = [];
  for (let s = 0; s < SAMPLES; s++) {
    const ip = addr(198, 0x120000 + s);
    const seen = monitors.map((m) => m.seen(ip));
    const text = origin.failures(ip, 3);
    const t0 = performance.now();
    origin.ami.broadcast(text);
    const times = await Promise.all(seen);
    local.push((times[0] ?? t0) - t0);
    for (const t of times.slice(1)) remote.push(t - t0);
    await new Promise((r) => setTimeout(r, 10));
  }
  console.log(`A. propagation, one ban at a time (third failure written to the origin's AMI → element in the kernel):`);
  console.log(`   origin's own kernel:          ${summary(local)}`);
  console.log(`   each of the ${String(others.length)} other hosts:   ${summary(remote)}`);

  // B. a burst. Bans reach every host in the origin's order (one stream): the last address of the
  // burst in a kernel means the burst is there (checked in full after). nft monitor reports it; under
  // a burst it may drop events (netlink buffer), so each host is also asked every 250 ms.
  let text = '';
  const burst: string[] = [];
  for (let i = 0; i < BURST; i++) {
    const ip = addr(198, 0x130000 + i);
    burst.push(ip);
    text += origin.failures(ip, 3);
  }
  const last = burst[burst.length - 1] ?? '';
  const present = (h: FleetHost): boolean => h.elements().includes(last);
  const arrival = (k: number): Promise<number> =>
    new Promise((resolve, reject) => {
      const h = hosts[k];
      if (h === undefined) return;
      const started = Date.now();
      const poll = setInterval(() => {
        if (Date.now() - started > 120_000) {
          clearInterval(poll);
          void h.api('GET', '/v1/fleet').then((f) => {
            reject(new Error(`${h.name}: the burst never arrived: ${String(h.elements().length)} elements; ${JSON.stringify(f.body)}`));
          });
          return;
        }
        if (!present(h)) return;
        clearInterval(poll);
        resolve(performance.now());
      }, 1000);
      void monitors[k]?.seen(last).then((at) => {
        clearInterval(poll);
        resolve(at);
      });
    });
  const arrivals = hosts.map((_, k) => arrival(k));
  const tB = performance.now();
  origin.ami.broadcast(text);
  const times = await Promise.all(arrivals);
  const spans = times.slice(1).map((t) => t - tB).sort((a, b) => a - b);
  const complete = others.filter((h) => {
    const inKernel = new Set(h.elements());
    return burst.every((ip) => inKernel.has(ip));
  }).length;
  console.log(`\nB. ${BURST.toLocaleString('en')} addresses × 3 failures on the origin at once:`);
  console.log(`   in every other host's kernel after ${((spans[spans.length - 1] ?? 0) / 1000).toFixed(2)} s (fastest host ${((spans[0] ?? 0) / 1000).toFixed(2)} s; the origin's own kernel ${(((times[0] ?? tB) - tB) / 1000).toFixed(2)} s); all ${BURST.toLocaleString('en')} checked present on ${String(complete)} of ${String(others.length)} hosts`);

  // C. catch-up: one host stopped while the origin bans MISSED addresses (the others stopped
  // too, to leave the two cores to the origin and Redis), then started again.
  const late = others[0];
  const lateMonitor = monitors[1];
  if (late === undefined || lateMonitor === undefined) throw new Error('hosts');
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
  // The last address of the snapshot (Redis' order, which the host applies in): once it is in the
  // kernel, the host is through; all of them are checked by listing the set afterwards.
  const inForce = redis.cli('ZRANGE', 'ami2ban:bans', String(Date.now()), '+inf', 'BYSCORE').split('\n');
  const lastIp = [...inForce].reverse().find((ip) => missed.has(ip)) ?? '';
  const watcher = late.spawnInside([process.execPath, fileURLToPath(new URL('./watch-element.js', import.meta.url)), 'ami2ban', 'ipv4_addr', lastIp]);
  let watched = '';
  watcher.stdout?.on('data', (d: Buffer) => (watched += d.toString()));
  await waitUntil('the watcher', () => watched.includes('watching'), 10_000);
  // Its nft monitor would print 100 000 lines for this process to parse meanwhile: not needed here.
  lateMonitor.stop();
  const tC = performance.timeOrigin + performance.now();
  await late.startDaemon();
  await waitUntil('the late host to catch up', () => watched.includes('present') || watcher.exitCode !== null, 120_000);
  const caughtUp = Number(/present (\S+)/.exec(watched)?.[1]);
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
  console.log(`   all ${MISSED.toLocaleString('en')} in its kernel ${((caughtUp - tC) / 1000).toFixed(2)} s after its start (the last of the snapshot seen there by a lookup every ms; then the set listed: ${absent === 0 ? 'none missing' : `${String(absent)} MISSING`}; process start, reconcile, snapshot of ${redis.cli('ZCARD', 'ami2ban:bans')} bans)`);
  // With BENCH_FLEET_LOG_LEVEL=info (the hosts log at warn by default, which hides these):
  const connected = late.lines.find((l) => l.message === 'fleet bus connected');
  if (connected !== undefined) console.log(`   its time line: daemon started ${since(late.lines.find((l) => l.message === 'ami2ban started'))} s, the whole snapshot read (bus connected) ${since(connected)} s; its parts go to the kernel as they are read`);
  console.log(`   Redis memory with ${redis.cli('ZCARD', 'ami2ban:bans')} bans and ${redis.cli('XLEN', 'ami2ban:stream')} stream entries: ${redis.cli('INFO', 'memory').match(/used_memory_human:(\S+)/)?.[1] ?? '?'}`);

  for (const m of monitors) m.stop();
  await Promise.all(hosts.map((h) => h.stopDaemon()));
  await Promise.all(hosts.map((h) => h.close()));
  await redis.kill();
  process.exit(0);
}

await main();
