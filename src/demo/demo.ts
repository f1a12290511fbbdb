// `npm run demo`: a real captured attack, replayed by a fake Asterisk on loopback, against the real daemon.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AmiParser } from '../ami/parser.js';
import { parseEventTime } from '../ami/security-event.js';
import { FakeAmiServer, eventBlocks } from './fake-ami-server.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const CAPTURE = process.argv[2] ?? `${ROOT}test/fixtures/asterisk-22.10.1/ami-ami2ban-events-security.raw`;
const SPEEDUP = 10;
const MAX_GAP_MS = 400;

interface LogLine {
  message?: string;
  level?: string;
  [k: string]: unknown;
}

function eventTimes(capture: Buffer): number[] {
  const times: number[] = [];
  const parser = new AmiParser({
    message: (m) => {
      if (m.get('Event') !== undefined) times.push(parseEventTime(m.get('EventTV') ?? '')?.epochMs ?? Number.NaN);
    },
  });
  parser.push(capture);
  parser.end();
  return times;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<number> {
  const capture = readFileSync(CAPTURE);
  const blocks = eventBlocks(capture);
  const times = eventTimes(capture);
  const secret = randomBytes(12).toString('hex');
  const work = mkdtempSync(join(tmpdir(), 'ami2ban-demo-'));
  const server = new FakeAmiServer({ username: 'ami2ban', secret });
  const port = await server.start(0, '127.0.0.1');

  console.log('ami2ban demo');
  console.log(`  fake Asterisk AMI on 127.0.0.1:${port}, replaying ${blocks.length} security events`);
  console.log(`  captured from a real Asterisk 22.10.1 under SIP and AMI attack (${CAPTURE.replace(ROOT, '')})`);
  console.log('  policy: 3 failures in 10m → ban 1h; ignore list emptied (the attackers are on loopback); firewall: dry-run\n');

  const daemon = spawn(process.execPath, [`${ROOT}bin/ami2ban.js`, 'run'], {
    env: {
      PATH: process.env.PATH ?? '',
      AMI_HOST: '127.0.0.1',
      AMI_PORT: String(port),
      AMI_USERNAME: 'ami2ban',
      AMI_SECRET: secret,
      BAN_IGNOREIP: '',
      // The captured attackers (127.0.0.x, fd00::x) may be addresses of the machine running the demo.
      BAN_IGNORESELF: 'false',
      // They also all share 127.0.0.0/24 and fd00::/64 (a lab): shown address by address.
      BAN_V4_SUBNET_ESCALATE: '0',
      BAN_SUBNET_ESCALATE: '0',
      BAN_SUBNET_MAXRETRY: '0',
      FIREWALL: 'dry-run',
      STATE_DIR: join(work, 'state'),
      CONTROL_LISTEN: join(work, 'control.sock'),
      LOG_FORMAT: 'json',
      LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const bans: LogLine[] = [];
  let counts: LogLine | undefined;
  let pending = '';
  daemon.stdout.on('data', (d: Buffer) => {
    pending += d.toString();
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const raw of lines) {
      let line: LogLine;
      try {
        line = JSON.parse(raw) as LogLine;
      } catch {
        console.log(raw);
        continue;
      }
      if (line.message === 'ban') {
        bans.push(line);
        const ip = String(line.ip).padEnd(12);
        console.log(`  BAN  ${ip} after ${String(line.failures)} failures (${String(line.events)}), for ${String(line.duration)}`);
      } else if (line.message === 'AMI ready') {
        console.log(`  daemon logged in to AMI as ${String(line.username)}, events: security only\n`);
      } else if (line.message === 'counts') {
        counts = line;
      } else if (line.level === 'error') {
        console.log(`  ERROR ${String(line.message)} ${JSON.stringify(line)}`);
      }
    }
  });
  const exited = new Promise<number | null>((resolve) => daemon.on('exit', resolve));

  await server.nextSubscription();
  const t0 = Date.now();
  for (let i = 0; i < blocks.length; i++) {
    const gap = (times[i] ?? 0) - (times[i - 1] ?? times[i] ?? 0);
    if (i > 0 && gap > 0) await sleep(Math.min(MAX_GAP_MS, gap / SPEEDUP));
    const block = blocks[i];
    if (block !== undefined) server.broadcast(block);
  }
  await sleep(300);
  daemon.kill('SIGTERM');
  const code = await exited;
  await server.stop();
  rmSync(work, { recursive: true, force: true });

  const seconds = ((Date.now() - t0) / 1000).toFixed(1);
  console.log(`\nsummary: ${blocks.length} events replayed in ${seconds} s, ${bans.length} addresses banned`);
  if (counts !== undefined) {
    console.log(`  failures counted: ${String(counts.failures)}; ignored: ${JSON.stringify(counts.ignored)}`);
  }
  console.log(`  banned: ${bans.map((b) => String(b.ip)).join(', ')}`);
  console.log('  (informational events, registrar FailedACLs and the retries of one SIP dialog are not counted)');
  console.log(`  daemon exited with code ${String(code)} after SIGTERM`);
  return code === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
