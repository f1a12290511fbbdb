import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { StoreError } from '../src/errors.js';
import { BanStore } from '../src/store/store.js';
import { fillUp, freezableMount, smallTmpfs } from './helpers/filesystems.js';

const H = 3_600_000;

/** Rows for an address in the database file itself, whether open or ended. */
function rowsFor(d: string, ip: string): number {
  const db = new Database(join(d, 'ami2ban.sqlite'), { readonly: true });
  try {
    return (db.prepare('SELECT COUNT(*) AS n FROM bans WHERE ip = ?').get(ip) as { n: number }).n;
  } finally {
    db.close();
  }
}

/** Bans of an address within the history window, once the queued writes are done (what the engine is given at start). */
async function bansOf(s: BanStore, ip: string): Promise<number> {
  await s.durable();
  return (await s.banStarts()).filter((b) => b.ip === ip).length;
}

/** Whether a promise is still unsettled after `turns` timer turns of 10 ms: the loop kept turning meanwhile. */
async function stillPending(p: Promise<unknown>, turns: number): Promise<boolean> {
  let settled = false;
  void p.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < turns; i++) await new Promise((r) => setTimeout(r, 10));
  return !settled;
}

function dir(): string {
  return mkdtempSync(join(tmpdir(), 'ami2ban-store-'));
}

function ban(ip: string, at: number, seconds: number, extra: Partial<Parameters<BanStore['recordBan']>[0]> = {}): Parameters<BanStore['recordBan']>[0] {
  return {
    ip,
    family: ip.includes(':') ? 'ipv6' : 'ipv4',
    at,
    banSeconds: seconds,
    until: seconds === Infinity ? Infinity : at + seconds * 1000,
    reason: 'threshold',
    failures: 3,
    events: { InvalidAccountID: 3 },
    previousBans: 0,
    ...extra,
  };
}

describe('BanStore (a real SQLite file)', () => {
  it('an extension continues the open ban: one ban for escalation, two rows of history', async () => {
    const d = dir();
    const s = await BanStore.open(d, { historyKeepMs: 30 * 24 * H, now: () => 10 * H });
    s.recordBan(ban('192.0.2.77', 1 * H, 600));
    s.recordBan(ban('192.0.2.77', 1 * H + 60_000, 7200, { reason: 'manual', extendsBan: true }));
    await s.durable();
    expect(await bansOf(s, '192.0.2.77')).toBe(1);
    expect(await s.historyOf('192.0.2.77')).toHaveLength(2);
    s.recordBan(ban('192.0.2.77', 5 * H, 600));
    await s.durable();
    expect(await bansOf(s, '192.0.2.77')).toBe(2);
    await s.close();
  });

  it('a write that fails (a full disk) keeps its rows and says so; the next attempt writes them', async () => {
    const m = smallTmpfs(1024);
    try {
      const errors: string[] = [];
      const s = await BanStore.open(m.dir, { historyKeepMs: 30 * 24 * H, onWriteError: (e) => errors.push(e.message) });
      const free = fillUp(m.dir);
      s.recordBan(ban('192.0.2.78', Date.now(), 600, { details: [{ at: 1, event: 'InvalidAccountID', account: 'x'.repeat(8000), transport: 'UDP' }] }));
      await expect(s.durable()).rejects.toThrow(`writing to the ban database ${join(m.dir, 'ami2ban.sqlite')} failed: database or disk is full`);
      expect(s.health()).toMatchObject({ healthy: false, pending: 1, writeErrors: 1 });
      expect(errors.length).toBe(1);
      free();
      // The next attempt (after the backoff) writes the kept row.
      await s.durable().catch(() => s.durable());
      expect(s.health()).toMatchObject({ healthy: true, pending: 0 });
      await s.close();
      expect(rowsFor(m.dir, '192.0.2.78')).toBe(1);
    } finally {
      m.cleanup();
    }
  });

  it('records bans and unbans, and survives reopening', async () => {
    const d = dir();
    let now = 10 * H;
    const s1 = await BanStore.open(d, { historyKeepMs: 30 * 24 * H, now: () => now });
    s1.recordBan(ban('192.0.2.1', now, 3600));
    s1.recordBan(ban('2001:db8::1', now, Infinity, { reason: 'manual', failures: 0, events: {} }));
    s1.recordBan(ban('192.0.2.2', now, 60));
    s1.recordUnban('192.0.2.2', now + 1000, 'manual');
    await s1.close();

    now += 1000;
    const s2 = await BanStore.open(d, { historyKeepMs: 30 * 24 * H, now: () => now });
    const active = await s2.activeBans(now);
    expect(active.map((b) => b.ip).sort()).toEqual(['192.0.2.1', '2001:db8::1']);
    expect(active.find((b) => b.ip === '2001:db8::1')).toMatchObject({ family: 'ipv6', expiresAt: Infinity, reason: 'manual' });
    expect(active.find((b) => b.ip === '192.0.2.1')).toMatchObject({ startedAt: 10 * H, expiresAt: 11 * H, failures: 3, events: { InvalidAccountID: 3 } });
    await s2.close();
  });

  it('counts previous bans within the history window, once the queued ones are written', async () => {
    let now = 100 * 24 * H;
    const s = await BanStore.open(dir(), { historyKeepMs: 30 * 24 * H, now: () => now });
    s.recordBan(ban('192.0.2.1', now - 40 * 24 * H, 3600)); // outside the window
    s.recordBan(ban('192.0.2.1', now - 10 * 24 * H, 3600));
    s.recordBan(ban('192.0.2.1', now - 1 * 24 * H, 3600));
    expect(await bansOf(s, '192.0.2.1')).toBe(2);
    expect(await bansOf(s, '192.0.2.9')).toBe(0);
    await s.durable();
    expect(await bansOf(s, '192.0.2.1')).toBe(2);
    now += 21 * 24 * H;
    expect(await bansOf(s, '192.0.2.1')).toBe(1);
    await s.close();
  });

  it('a re-ban replaces the open ban: never two open bans for one address', async () => {
    const now = 10 * H;
    const d = dir();
    const s = await BanStore.open(d, { historyKeepMs: 30 * 24 * H, now: () => now });
    s.recordBan(ban('192.0.2.1', now, 3600));
    s.recordBan(ban('192.0.2.1', now + 5000, 7200, { previousBans: 1 }));
    await s.durable();
    const active = await s.activeBans(now + 6000);
    expect(active.length).toBe(1);
    expect(active[0]).toMatchObject({ startedAt: now + 5000, expiresAt: now + 5000 + 7200_000, previousBans: 1 });
    await s.close();
    expect(rowsFor(d, '192.0.2.1')).toBe(2);
  });

  it('closes bans that expired while down, and purges old history', async () => {
    const now = 100 * 24 * H;
    const d = dir();
    const s = await BanStore.open(d, { historyKeepMs: 30 * 24 * H, now: () => now });
    s.recordBan(ban('192.0.2.1', now - 2 * H, 3600));
    s.recordBan(ban('192.0.2.2', now - 40 * 24 * H, 3600));
    s.recordBan(ban('192.0.2.3', now - 40 * 24 * H, Infinity));
    expect(await s.expireDue(now)).toBe(2);
    expect((await s.activeBans(now)).map((b) => b.ip)).toEqual(['192.0.2.3']);
    expect(await s.purge(now)).toBe(1); // 192.0.2.2 only: .1 is recent, .3 still active
    await s.close();
    expect(rowsFor(d, '192.0.2.2')).toBe(0);
    expect(rowsFor(d, '192.0.2.3')).toBe(1);
  });

  it('a corrupt database is a clear error naming the file and the cause', async () => {
    const d = dir();
    writeFileSync(join(d, 'ami2ban.sqlite'), Buffer.alloc(4096, 0x41));
    let err: unknown;
    try {
      await BanStore.open(d, { historyKeepMs: H });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).message).toBe(`cannot open the ban database ${join(d, 'ami2ban.sqlite')}: file is not a database`);
  });

  it('a damaged page inside a valid file is found at open, naming the file and the cause', async () => {
    const d = dir();
    const s = await BanStore.open(d, { historyKeepMs: H });
    for (let i = 0; i < 2000; i++) s.recordBan(ban(`198.18.${i >> 8}.${i & 255}`, Date.now(), 3600));
    await s.close();
    // Page 3 of 4096 bytes (an index or table page) overwritten; the header stays valid.
    const { fd, close } = await import('node:fs/promises').then(async (fs) => {
      const h = await fs.open(join(d, 'ami2ban.sqlite'), 'r+');
      return { fd: h, close: () => h.close() };
    });
    await fd.write(Buffer.alloc(4096, 0x5a), 0, 4096, 2 * 4096);
    await close();
    await expect(BanStore.open(d, { historyKeepMs: H })).rejects.toThrow(new RegExp(`^cannot open the ban database ${join(d, 'ami2ban.sqlite')}: .*malformed`));
  });

  it('a STATE_DIR that cannot be made fails at once (Node 20\'s recursive mkdir spins on /proc paths)', async () => {
    await expect(BanStore.open('/proc/1/no-such/state', { historyKeepMs: H })).rejects.toThrow(/^cannot open the ban database \/proc\/1\/no-such\/state\/ami2ban\.sqlite: ENOENT/);
  });

  it('a write hung on a frozen disk blocks nothing: health says stalled, and the write completes after the thaw', async () => {
    const m = freezableMount();
    try {
      const errors: string[] = [];
      const s = await BanStore.open(m.dir, { historyKeepMs: H, stallMs: 100, onWriteError: (e) => errors.push(e.message) });
      m.freeze();
      s.recordBan(ban('192.0.2.80', Date.now(), 600));
      const durable = s.durable();
      // The loop turns while the writer thread waits on the disk.
      expect(await stillPending(durable, 30)).toBe(true);
      expect(s.health()).toMatchObject({ healthy: false, pending: 1 });
      expect(s.health().lastError).toMatch(/^a write to the ban database .* has not completed for 0 s \(disk hung or full\?\)$/);
      expect(errors.length).toBe(1);
      m.thaw();
      await durable;
      expect(s.health()).toMatchObject({ healthy: true, pending: 0 });
      await s.close();
      expect(rowsFor(m.dir, '192.0.2.80')).toBe(1);
    } finally {
      m.cleanup();
    }
  });

  it('opened later (a start while STATE_DIR did not answer): reads refuse, writes wait in order, and go once it opens', async () => {
    const d = dir();
    const now = Date.now();
    const before = await BanStore.open(d, { historyKeepMs: H });
    before.recordBan(ban('192.0.2.90', now - 1000, 600));
    await before.close();
    const s = new BanStore(d, { historyKeepMs: H });
    expect(s.isOpen).toBe(false);
    await expect(s.activeBans(now)).rejects.toThrow(/^reading active bans from .*ami2ban\.sqlite failed: the ban database .* is not open yet: STATE_DIR does not answer \(disk hung\?\)$/);
    await expect(s.historyOf('192.0.2.90')).rejects.toThrow(StoreError);
    s.recordUnban('192.0.2.90', now, 'manual');
    s.recordBan(ban('192.0.2.91', now, 600));
    const durable = s.durable();
    expect(await stillPending(durable, 10)).toBe(true);
    expect(s.health()).toMatchObject({ healthy: false, pending: 2 });
    expect(s.health().lastError).toMatch(/is not open yet/);
    await s.open();
    await durable;
    expect(s.health()).toMatchObject({ healthy: true, pending: 0, lastError: null });
    expect((await s.activeBans(now)).map((b) => b.ip)).toEqual(['192.0.2.91']);
    expect((await s.historyOf('192.0.2.90')).map((h) => h.endReason)).toEqual(['manual']);
    await s.close();
  });

  // (Waiting for the writes, as an opened store does for up to 10 s, would outlast this timeout.)
  it('closed without ever opening: returns at once, saying how many writes were not done', { timeout: 5000 }, async () => {
    const errors: string[] = [];
    const s = new BanStore(dir(), { historyKeepMs: H, onWriteError: (e) => errors.push(e.message) });
    s.recordBan(ban('192.0.2.92', Date.now(), 600));
    await s.close();
    expect(errors).toEqual([expect.stringMatching(/with 1 writes not done \(the kernel keeps those bans; the next start adopts them\)$/)]);
  });

  it('keeps no shared mapping of the database: a write hung on a frozen disk leaves the process free to fork', async () => {
    const m = freezableMount();
    // Thaws in 10 s whatever happens here: were the process unable to fork, the test would end, failing.
    const watchdog = spawn('sh', ['-c', 'sleep 10; fsfreeze --unfreeze "$0" 2>/dev/null', m.dir], { stdio: 'ignore' });
    try {
      const s = await BanStore.open(m.dir, { historyKeepMs: H });
      s.recordBan(ban('192.0.2.82', Date.now(), 600));
      await s.durable();
      // SQLite's WAL index is in the process's own memory: nothing of STATE_DIR is mapped.
      expect(readFileSync('/proc/self/maps', 'utf8')).not.toContain(m.dir);
      m.freeze();
      s.recordBan(ban('192.0.2.83', Date.now(), 600));
      const written = s.durable();
      expect(await stillPending(written, 30)).toBe(true);
      expect(s.health().pending).toBe(1);
      // Forking copies the memory map: it goes through while the write still waits (the disk is
      // still frozen, so freezing it again is refused).
      const again = spawnSync('fsfreeze', ['--freeze', m.dir], { encoding: 'utf8' });
      expect(again.status).toBe(1);
      expect(again.stderr).toMatch(/busy/i);
      expect(s.health().pending).toBe(1);
      m.thaw();
      await written;
      await s.close();
    } finally {
      watchdog.kill();
      m.cleanup();
    }
  });

  it('a writer thread that ends (killed) is made again: its database is opened anew and the next writes go through', async () => {
    const d = dir();
    const s = await BanStore.open(d, { historyKeepMs: H });
    s.recordBan(ban('192.0.2.84', Date.now(), 600));
    await s.durable();
    // Fault injection: the thread that holds the one connection is ended from outside.
    await (s as unknown as { writer: { terminate(): Promise<number> } }).writer.terminate();
    s.recordBan(ban('192.0.2.85', Date.now(), 600));
    await s.durable().catch(() => s.durable());
    expect((await s.activeBans(Date.now())).map((b) => b.ip).sort()).toEqual(['192.0.2.84', '192.0.2.85']);
    expect(s.health()).toMatchObject({ healthy: true, pending: 0 });
    await s.close();
  });

  it('holds the database alone while open: a second ami2ban on the same STATE_DIR is refused, naming the file', async () => {
    const d = dir();
    const s = await BanStore.open(d, { historyKeepMs: H });
    await expect(BanStore.open(d, { historyKeepMs: H })).rejects.toThrow(`cannot open the ban database ${join(d, 'ami2ban.sqlite')}: database is locked`);
    const other = new Database(join(d, 'ami2ban.sqlite'), { readonly: true, timeout: 0 });
    expect(() => other.prepare('SELECT COUNT(*) FROM bans').get()).toThrow(/database is locked/);
    other.close();
    await s.close();
    expect(rowsFor(d, '192.0.2.1')).toBe(0);
  });

  it('the history read for explain runs on the writer thread: behind a write hung on a frozen disk it waits, the loop does not', async () => {
    const m = freezableMount();
    try {
      const s = await BanStore.open(m.dir, { historyKeepMs: H });
      const now = Date.now();
      s.recordBan(ban('192.0.2.81', now - 2000, 1));
      await s.durable();
      m.freeze();
      s.recordBan(ban('192.0.2.81', now, 600));
      // Queued in this turn, so written before the read: the read then waits behind it.
      const read = s.historyOf('192.0.2.81');
      expect(await stillPending(read, 30)).toBe(true);
      await m.thawWithoutFork();
      const rows = await read;
      expect(rows.map((r) => r.endReason)).toEqual(['replaced', null]);
      expect(await s.historyOf('192.0.2.81')).toEqual(rows);
      await s.close();
      await expect(s.historyOf('192.0.2.81')).rejects.toThrow(/^reading the history of an address from .*ami2ban\.sqlite failed: it is closed$/);
    } finally {
      m.cleanup();
    }
  });

  it('an unusable directory is a clear error too', async () => {
    const d = dir();
    const file = join(d, 'not-a-dir');
    writeFileSync(file, '');
    await expect(BanStore.open(join(file, 'sub'), { historyKeepMs: H })).rejects.toThrow(/cannot open the ban database .*not-a-dir\/sub\/ami2ban\.sqlite: ENOTDIR/);
  });
});

describe('BanStore: its writer thread', () => {
  it('runs at a lower priority than the main thread (nice 5), which keeps its own', async () => {
    // Linux keeps a nice value per thread: /proc/self/task/<tid>/stat, 19th field.
    // (A thread of an earlier test's store may end between the listing and the read: skipped.)
    const nices = (): Map<string, number> =>
      new Map(
        readdirSync('/proc/self/task').flatMap((tid): [string, number][] => {
          let stat: string;
          try {
            stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
          } catch {
            return [];
          }
          return [[tid, Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])]];
        }),
      );
    const mainBefore = Number(readFileSync(`/proc/self/task/${String(process.pid)}/stat`, 'utf8').split(') ')[1]?.split(' ')[16]);
    const before = nices();
    const s = await BanStore.open(dir(), { historyKeepMs: 30 * 24 * H });
    s.recordBan(ban('192.0.2.80', 1 * H, 600));
    await s.durable();
    // Among the threads made since (the writer, maybe more of libuv's pool), one is at nice + 5.
    const made = [...nices()].filter(([tid]) => !before.has(tid));
    expect(made.filter(([, nice]) => nice === mainBefore + 5)).toHaveLength(1);
    expect(Number(readFileSync(`/proc/self/task/${String(process.pid)}/stat`, 'utf8').split(') ')[1]?.split(' ')[16])).toBe(mainBefore);
    await s.close();
  });
});

describe('BanStore: what explain and trust need', () => {
  it('keeps the failures behind a ban, and trusted pairs (with their expiry, renewals and revocations) over a reopen', async () => {
    const d = dir();
    const store = await BanStore.open(d, { historyKeepMs: 24 * H, now: () => 1000 });
    const details = [{ at: 900, event: 'InvalidAccountID', account: '1001', transport: 'UDP' }];
    store.recordBan(ban('198.51.100.1', 1000, 3600, { details }));
    store.recordTrust([{ ip: '192.0.2.1', account: '1001', until: 5000 }, { ip: '192.0.2.2', account: '1002', until: 500 }]);
    store.recordTrust([{ ip: '192.0.2.1', account: '1001', until: 9000 }]);
    store.recordTrust([{ ip: '192.0.2.3', account: '1003', until: 9000 }]);
    store.revokeTrust([{ ip: '192.0.2.3', account: '1003' }]);
    await store.close();
    const again = await BanStore.open(d, { historyKeepMs: 24 * H, now: () => 1000 });
    expect((await again.historyOf('198.51.100.1'))[0]?.details).toEqual(details);
    // The bans in force read at start leave them out (a ban in force does not keep them).
    expect(await again.activeBans(1000)).toMatchObject([{ ip: '198.51.100.1', failures: 3, details: [] }]);
    // expired at 1000: 192.0.2.2's pair is not given back
    expect((await again.trustedPairs(1000))).toEqual([{ ip: '192.0.2.1', account: '1001', until: 9000 }]);
    await again.close();
  });

  it('opens a database left by a killed process of an earlier version (WAL in shared memory, not checkpointed): nothing lost', async () => {
    const d = dir();
    const path = join(d, 'ami2ban.sqlite');
    const writer = `
      const db = new (require('better-sqlite3'))(${JSON.stringify(path)});
      db.pragma('journal_mode = WAL');
      db.pragma('wal_autocheckpoint = 0');
      db.exec("CREATE TABLE bans (id INTEGER PRIMARY KEY, ip TEXT NOT NULL, family TEXT NOT NULL, started_at INTEGER NOT NULL, duration_s REAL, expires_at INTEGER, reason TEXT NOT NULL, failures INTEGER NOT NULL DEFAULT 0, events TEXT NOT NULL DEFAULT '{}', previous_bans INTEGER NOT NULL DEFAULT 0, ended_at INTEGER, end_reason TEXT)");
      for (let i = 0; i < 50; i++) db.prepare("INSERT INTO bans (ip, family, started_at, duration_s, expires_at, reason) VALUES (?, 'ipv4', 1000, 3600, 3601000, 'threshold')").run('192.0.2.' + i);
      process.kill(process.pid, 'SIGKILL');`;
    const killed = spawnSync(process.execPath, ['-e', writer], { cwd: process.cwd() });
    expect(killed.signal).toBe('SIGKILL');
    expect(readdirSync(d).sort()).toEqual(['ami2ban.sqlite', 'ami2ban.sqlite-shm', 'ami2ban.sqlite-wal']);
    const store = await BanStore.open(d, { historyKeepMs: 24 * H, now: () => 2000 });
    expect(await store.activeBans(2000)).toHaveLength(50);
    await store.close();
    // Folded into the file at close.
    expect(readdirSync(d)).not.toContain('ami2ban.sqlite-wal');
    expect(rowsFor(d, '192.0.2.49')).toBe(1);
  });

  it('opens a database made before details and trust were kept, and adds them', async () => {
    const d = dir();
    const old = new Database(join(d, 'ami2ban.sqlite'));
    old.exec(`CREATE TABLE bans (id INTEGER PRIMARY KEY, ip TEXT NOT NULL, family TEXT NOT NULL, started_at INTEGER NOT NULL, duration_s REAL, expires_at INTEGER,
      reason TEXT NOT NULL, failures INTEGER NOT NULL DEFAULT 0, events TEXT NOT NULL DEFAULT '{}', previous_bans INTEGER NOT NULL DEFAULT 0, ended_at INTEGER, end_reason TEXT)`);
    old.prepare("INSERT INTO bans (ip, family, started_at, duration_s, expires_at, reason, failures, events) VALUES ('198.51.100.2', 'ipv4', 1000, 3600, 3601000, 'threshold', 3, '{}')").run();
    old.close();
    const store = await BanStore.open(d, { historyKeepMs: 24 * H, now: () => 2000 });
    expect((await store.activeBans(2000))).toMatchObject([{ ip: '198.51.100.2', enforcer: 'nftables', details: [] }]);
    expect((await store.trustedPairs(2000))).toEqual([]);
    store.recordTrust([{ ip: '192.0.2.9', account: '9', until: 9000 }]);
    await store.durable();
    expect((await store.trustedPairs(2000))).toHaveLength(1);
    await store.close();
  });
});

describe('BanStore write batching', () => {
  it('bans recorded in one turn are written together, counted once written, and survive close', async () => {
    const d = dir();
    const now = 50 * H;
    const s = await BanStore.open(d, { historyKeepMs: 30 * 24 * H, now: () => now });
    for (let i = 0; i < 100; i++) s.recordBan(ban(`198.18.0.${i}`, now, 3600));
    s.recordBan(ban('198.18.0.1', now, 7200, { previousBans: 1 }));
    expect(s.health().pending).toBe(101);
    expect(await bansOf(s, '198.18.0.1')).toBe(2);
    expect((await s.activeBans(now)).length).toBe(100);
    s.recordBan(ban('198.18.1.1', now, 60));
    await s.close();
    const reopened = await BanStore.open(d, { historyKeepMs: 30 * 24 * H, now: () => now });
    expect((await reopened.activeBans(now)).map((b) => b.ip)).toContain('198.18.1.1');
    await reopened.close();
  });
});
