// npm run bench:firewall — in a private network namespace: elements/s per batch size for both
// backends, adopting 100 000 elements at start, and ban latency from the AMI socket to the kernel.
import { execFileSync } from 'node:child_process';
import type { Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config/config.js';
import { FakeAmiServer } from '../src/demo/fake-ami-server.js';
import type { Firewall } from '../src/firewall/firewall.js';
import { NftablesFirewall } from '../src/firewall/nftables.js';
import { AddonRunner, CliRunner, type NftRunner } from '../src/firewall/runner.js';
import { silentLogger } from '../src/log/logger.js';
import { buildDaemon } from '../src/service/build.js';

const TABLE = 'ami2ban_bench';
const ADDRESS_BANS_ONLY = { BAN_V4_SUBNET_ESCALATE: '0', BAN_SUBNET_ESCALATE: '0', BAN_SUBNET_MAXRETRY: '0' };

if (process.env.AMI2BAN_NETNS !== 'private') {
  console.error('run through `npm run bench:firewall` (it runs in a private network namespace)');
  process.exit(2);
}

function ipv4(i: number): string {
  return `198.${18 + ((i >> 16) & 1)}.${(i >> 8) & 255}.${i & 255}`;
}

function firewall(runner: NftRunner, maxBatch = 100_000): NftablesFirewall {
  return new NftablesFirewall({ table: TABLE, blockType: 'drop', ports: [], runner, logger: silentLogger, cleanupOnExit: false, checkIntervalMs: 0, maxBatch });
}

function reset(): void {
  execFileSync('nft', ['flush', 'ruleset']);
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en');

async function throughput(name: string, makeRunner: () => NftRunner): Promise<void> {
  for (const size of [1, 100, 1_000, 10_000, 100_000]) {
    reset();
    const fw = firewall(makeRunner());
    await fw.start();
    // Batches of 1 are sequential transactions; the others are one burst of `size` bans.
    const rounds = size === 1 ? (name.startsWith('nft') ? 300 : 2_000) : 1;
    const t0 = performance.now();
    let n = 0;
    for (let r = 0; r < rounds; r++) {
      const bans: Promise<void>[] = [];
      for (let i = 0; i < size; i++) bans.push(fw.ban(ipv4(n++), 'ipv4', 3600));
      await Promise.all(bans);
    }
    const seconds = (performance.now() - t0) / 1000;
    console.log(`  ${name.padEnd(18)} batch ${String(size).padStart(6)}: ${fmt(n / seconds).padStart(9)} elements/s  (${n} in ${seconds.toFixed(3)} s, ${fw.stats.transactions} transactions)`);
    await fw.stop();
  }
}

/**
 * Why networks have sets of their own: the same bans (single addresses) added to the address set
 * (a hash set with timeouts) and to the network set (an interval set with timeouts, each as a /32).
 */
async function setKinds(): Promise<void> {
  for (const [kind, suffix] of [['hash set (ipv4_addr)', ''], ['interval set (ipv4_net)', '/32']] as const) {
    for (const [size, rounds] of [[1, 1_000], [10_000, 1]] as const) {
      reset();
      const fw = firewall(new AddonRunner());
      await fw.start();
      let n = 0;
      const t0 = performance.now();
      for (let r = 0; r < rounds; r++) {
        const bans: Promise<void>[] = [];
        for (let i = 0; i < size; i++) bans.push(fw.ban(`${ipv4(n++)}${suffix}`, 'ipv4', 3600));
        await Promise.all(bans);
      }
      const seconds = (performance.now() - t0) / 1000;
      console.log(`  ${kind.padEnd(24)} batch ${String(size).padStart(6)}: ${fmt(n / seconds).padStart(9)} elements/s`);
      await fw.stop();
    }
  }
}

async function adopt(name: string, makeRunner: () => NftRunner): Promise<void> {
  reset();
  const filler = firewall(new AddonRunner());
  await filler.start();
  const bans: Promise<void>[] = [];
  for (let i = 0; i < 100_000; i++) bans.push(filler.ban(ipv4(i), 'ipv4', 3600));
  await Promise.all(bans);
  await filler.stop();
  const fw = firewall(makeRunner());
  const t0 = performance.now();
  const adopted = await fw.start();
  const ms = performance.now() - t0;
  console.log(`  ${name.padEnd(18)} start over 100 000 elements: ${ms.toFixed(0)} ms (${fmt(adopted.length)} adopted)`);
  await fw.stop();
}

function event(ip: string, n: number): string {
  return (
    `Event: InvalidAccountID\r\nPrivilege: security,all\r\nEventTV: 2026-11-21T22:36:02.621+0000\r\nSeverity: Error\r\n` +
    `Service: PJSIP\r\nEventVersion: 1\r\nAccountID: bench\r\nSessionID: call-${n}@bench\r\n` +
    `LocalAddress: IPV4/UDP/127.0.0.1/5060\r\nRemoteAddress: IPV4/UDP/${ip}/5060\r\n\r\n`
  );
}

/** The real daemon (AMI client → engine → SQLite store → nftables firewall), in process. */
async function pipeline(): Promise<{ socket: Socket; onBan: Map<string, () => void>; events: () => number; stop: () => Promise<void> }> {
  reset();
  const server = new FakeAmiServer({ username: 'bench', secret: 'bench' });
  const port = await server.start();
  const stateDir = mkdtempSync(join(tmpdir(), 'ami2ban-bench-'));
  // Address bans are what is measured: the bench's addresses share /24s, so escalation to networks is off.
  const config = loadConfig({ AMI_USERNAME: 'bench', AMI_SECRET: 'bench', AMI_PORT: String(port), BAN_IGNOREIP: '', STATE_DIR: stateDir, NFT_TABLE: TABLE, ...ADDRESS_BANS_ONLY });
  const fw = firewall(new AddonRunner(), 500);
  const onBan = new Map<string, () => void>();
  // The firewall as the daemon sees it, telling the benchmark when each ban is committed.
  const observed: Firewall = {
    name: fw.name,
    start: () => fw.start(),
    ban: (ip, family, seconds) => fw.ban(ip, family, seconds).then(() => onBan.get(ip)?.()),
    banMany: (items) =>
      fw.banMany(items).then((errors) => {
        for (const [i, b] of items.entries()) if (errors[i] === null) onBan.get(b.ip)?.();
        return errors;
      }),
    ensure: (ip, family, seconds) => fw.ensure(ip, family, seconds),
    unban: (ip, family) => fw.unban(ip, family),
    stop: () => fw.stop(),
  };
  const { daemon } = buildDaemon(config, silentLogger, 'bench', { firewall: observed });
  const subscribed = server.nextSubscription();
  await daemon.start();
  const session = await subscribed;
  return {
    socket: session.socket,
    onBan,
    events: () => daemon.counters.events,
    stop: async () => {
      await daemon.stop();
      await server.stop();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/** Resolves once `check` holds, looking again after each turn of the event loop. */
async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((r) => setImmediate(r));
}

async function latency(): Promise<void> {
  const p = await pipeline();
  const samples: number[] = [];
  let n = 0;
  for (let i = 0; i < 1_000; i++) {
    const ip = ipv4(i);
    p.socket.write(event(ip, n++) + event(ip, n++));
    await until(() => p.events() === n);
    const banned = new Promise<number>((resolve) => p.onBan.set(ip, () => { resolve(performance.now()); }));
    const t0 = performance.now();
    p.socket.write(event(ip, n++));
    samples.push((await banned) - t0);
  }
  samples.sort((a, b) => a - b);
  console.log(`  1 000 sequential bans, third failure written to the AMI socket → element committed to the kernel set:`);
  console.log(`    p50 ${percentile(samples, 50).toFixed(2)} ms, p90 ${percentile(samples, 90).toFixed(2)} ms, p99 ${percentile(samples, 99).toFixed(2)} ms, max ${percentile(samples, 100).toFixed(2)} ms`);
  await p.stop();
}

async function burst(): Promise<void> {
  const p = await pipeline();
  const N = 10_000;
  let chunk = '';
  let n = 0;
  for (let i = 0; i < N; i++) chunk += event(ipv4(i), n++) + event(ipv4(i), n++);
  p.socket.write(chunk);
  await until(() => p.events() === n);
  let banned = 0;
  const all = new Promise<number>((resolve) => {
    for (let i = 0; i < N; i++) p.onBan.set(ipv4(i), () => { if (++banned === N) resolve(performance.now()); });
  });
  chunk = '';
  for (let i = 0; i < N; i++) chunk += event(ipv4(i), n++);
  const t0 = performance.now();
  p.socket.write(chunk);
  const t1 = await all;
  const inKernel = execFileSync('nft', ['-j', 'list', 'set', 'inet', TABLE, 'ipv4_addr'], { encoding: 'utf8', maxBuffer: 256 << 20 }).split('"val"').length - 1;
  console.log(`  burst: ${fmt(N)} addresses cross the threshold at once → all in the kernel after ${(t1 - t0).toFixed(0)} ms (${fmt(inKernel)} elements listed)`);
  await p.stop();
}

async function main(): Promise<void> {
  console.log(`bench:firewall — node ${process.version}, in a private network namespace\n`);
  console.log('elements per second (each ban its own element with a 1 h timeout):');
  await throughput('libnftables addon', () => new AddonRunner());
  await throughput('nft -j -f -', () => new CliRunner());
  console.log('\naddresses in a hash set or in an interval set (libnftables addon):');
  await setKinds();
  console.log('\nadopting existing bans at start:');
  await adopt('libnftables addon', () => new AddonRunner());
  await adopt('nft -j -f -', () => new CliRunner());
  console.log('\nban latency (the daemon in process: AMI client → engine → SQLite history → batcher → libnftables):');
  await latency();
  await burst();
  reset();
}

await main();
