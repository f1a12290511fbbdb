// npm run bench:store — what a start reads from the ban database: BENCH_STORE_BANS bans in force
// (default 100 000, each with 3 failures' details, as threshold bans have), written once; then, in
// a fresh process per run, the database opened and the start's three reads (history, trusted
// pairs, bans in force) as the daemon makes them, with the heap they leave.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BanStore } from '../src/store/store.js';

const BANS = Number(process.env.BENCH_STORE_BANS ?? 100_000);
const RUNS = 3;
const DAY = 86_400_000;

async function make(dir: string): Promise<void> {
  const store = await BanStore.open(dir, { historyKeepMs: 7 * DAY });
  const now = Date.now();
  for (let i = 0; i < BANS; i++) {
    const details = [1, 2, 3].map((k) => ({ at: now - k * 1000, event: 'InvalidAccountID', account: String(1000 + k), transport: 'UDP' }));
    store.recordBan({ ip: `10.${String(i >> 16)}.${String((i >> 8) & 255)}.${String(i & 255)}`, family: 'ipv4', at: now, banSeconds: 86_400, until: now + DAY, reason: 'threshold', failures: 3, events: { InvalidAccountID: 3 }, details, previousBans: 0 });
  }
  await store.durable();
  await store.close();
}

/** One start's reads, in this (fresh) process: printed as JSON for the parent. */
async function read(dir: string): Promise<void> {
  const t0 = performance.now();
  const store = new BanStore(dir, { historyKeepMs: 7 * DAY });
  await store.open();
  const t1 = performance.now();
  const now = Date.now();
  const [starts, , active] = await Promise.all([store.banStarts(), store.trustedPairs(now), store.activeBans(now)]);
  const t2 = performance.now();
  const heapMiB = process.memoryUsage().heapUsed / 1_048_576;
  console.log(JSON.stringify({ openMs: t1 - t0, readsMs: t2 - t1, heapMiB, starts: starts.length, active: active.length }));
  await store.close();
}

async function main(): Promise<void> {
  if (process.argv[2] === 'read') {
    await read(process.argv[3] ?? '');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'ami2ban-bench-store-'));
  try {
    console.log(`bench:store — node ${process.version}, ${BANS.toLocaleString('en')} bans in force with 3 failures each`);
    await make(dir);
    for (let i = 0; i < RUNS; i++) {
      const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), 'read', dir], { encoding: 'utf8' });
      const r = JSON.parse(out) as { openMs: number; readsMs: number; heapMiB: number; starts: number; active: number };
      if (r.active !== BANS) throw new Error(`read ${String(r.active)} bans in force, not ${String(BANS)}`);
      console.log(`   opened in ${r.openMs.toFixed(0)} ms; the start's reads in ${r.readsMs.toFixed(0)} ms (${r.starts.toLocaleString('en')} ban starts, ${r.active.toLocaleString('en')} bans in force); heap after them ${r.heapMiB.toFixed(0)} MiB`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
