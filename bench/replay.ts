// npm run bench:replay — `ami2ban replay` (the real CLI) over a generated million-line Asterisk
// security log: lines per second and the process's peak RSS (VmHWM from /proc).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const LINES = Number(process.env.BENCH_LINES ?? 1_000_000);
const ADDRESSES = Number(process.env.BENCH_ADDRESSES ?? 100_000);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const EVENTS = ['InvalidAccountID', 'ChallengeResponseFailed', 'InvalidPassword'];

/** The line shape of fail2ban's benchmark log generator (Asterisk security-log lines), so both tools read the same kind of log. */
function line(i: number): string {
  const k = (i % ADDRESSES) + 1;
  const ip = `198.${18 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`;
  const t = new Date(Date.UTC(2026, 0, 15, 10) + Math.floor(i / 1000) * 1000).toISOString().replace('Z', '+0000');
  const ev = EVENTS[i % 3] ?? 'InvalidAccountID';
  let s =
    `[2026-01-15 10:00:00] SECURITY[1234] res_security_log.c: SecurityEvent="${ev}",EventTV="${t}",Severity="Error",Service="PJSIP",` +
    `EventVersion="1",AccountID="${1000 + (i % 50)}",SessionID="0x7f${i.toString(16).padStart(8, '0')}",` +
    `LocalAddress="IPV4/UDP/127.0.0.1/5060",RemoteAddress="IPV4/UDP/${ip}/5060"`;
  if (ev === 'ChallengeResponseFailed') s += ',Challenge="1a2b3c4d",Response="0123456789abcdef0123456789abcdef",ExpectedResponse=""';
  return `${s}\n`;
}

async function generate(file: string): Promise<void> {
  const out = createWriteStream(file);
  for (let i = 0; i < LINES; ) {
    let chunk = '';
    const end = Math.min(LINES, i + 5000);
    for (; i < end; i++) chunk += line(i);
    if (!out.write(chunk)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
}

function peakRssMiB(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return Number(m?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ami2ban-bench-replay-'));
  const file = join(dir, 'security.log');
  await generate(file);
  console.log(`bench:replay — ${LINES.toLocaleString('en')} security-log lines over ${ADDRESSES.toLocaleString('en')} addresses (${(statSync(file).size / 1024 / 1024).toFixed(0)} MiB)`);
  const t0 = performance.now();
  const child = spawn(process.execPath, [join(ROOT, 'bin/ami2ban.js'), 'replay', file, '--json'], {
    // One ban per address, as fail2ban-regex counts them: escalation to networks off.
    env: { PATH: process.env.PATH ?? '', BAN_IGNOREIP: '', BAN_V4_SUBNET_ESCALATE: '0', BAN_SUBNET_ESCALATE: '0', BAN_SUBNET_MAXRETRY: '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let bans = 0;
  child.stdout.on('data', (d: Buffer) => {
    for (const b of d) if (b === 0x0a) bans++;
  });
  let peak = 0;
  const poll = setInterval(() => {
    peak = Math.max(peak, peakRssMiB(child.pid ?? 0));
  }, 20);
  const [code] = (await once(child, 'close')) as [number];
  clearInterval(poll);
  const seconds = (performance.now() - t0) / 1000;
  rmSync(dir, { recursive: true });
  console.log(`  exit ${code}, ${bans.toLocaleString('en')} bans`);
  console.log(`  ${Math.round(LINES / seconds).toLocaleString('en')} lines/s (${seconds.toFixed(1)} s, whole process including start-up)`);
  console.log(`  peak RSS: ${peak.toFixed(0)} MiB (sampled every 20 ms)`);
}

await main();
