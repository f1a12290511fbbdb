// `ami2ban status | list | ban | unban`: clients of the running daemon's control API.
import type { Config } from './config/config.js';
import type { BanView, StatusReport } from './control/api.js';
import { ControlClient, type ControlResponse } from './control/client.js';
import { errorMessage } from './errors.js';

interface Io {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
}

const USAGE: Readonly<Record<string, string>> = {
  status: 'usage: ami2ban status [--json]',
  list: 'usage: ami2ban list [--json]',
  ban: 'usage: ami2ban ban IP [--for DURATION] [--force] [--replace] [--json]',
  unban: 'usage: ami2ban unban IP | --all [--json]',
  ready: 'usage: ami2ban ready',
};

/** `3552` → `59m 12s`: the two largest units. */
export function formatRemaining(seconds: number | null): string {
  if (seconds === null) return 'permanent';
  let rest = Math.max(0, Math.round(seconds));
  const parts: string[] = [];
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]] as const) {
    if (rest >= size || (unit === 's' && parts.length === 0)) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  return parts.slice(0, 2).join(' ');
}

export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]): string => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

function write(stream: NodeJS.WritableStream, text: string): void {
  stream.write(text.endsWith('\n') ? text : `${text}\n`);
}

function errorOf(r: ControlResponse): string {
  const body = r.body as { error?: unknown } | null;
  return typeof body?.error === 'string' ? body.error : `HTTP ${r.status}`;
}

function statusText(s: StatusReport): string {
  const age = s.ami.lastEventAgeSeconds === null ? 'none yet' : `${formatRemaining(s.ami.lastEventAgeSeconds)} ago`;
  return [
    `ami2ban ${s.version}, up ${formatRemaining(s.uptimeSeconds)}`,
    `AMI:        ${s.ami.state}${s.ami.connected ? '' : ' (not receiving events)'}, last event ${age}, ${s.ami.reconnects} reconnects`,
    `firewall:   ${s.firewall.backend}, ${s.firewall.state}`,
    `bans:       ${s.activeBans} active; ${s.trackedAddresses} addresses with pending failures`,
    `since start: ${s.counts.events} events, ${s.counts.failures} failures, ${s.counts.bans} bans, ${s.counts.unbans} unbans`,
  ].join('\n');
}

function bansText(bans: readonly BanView[]): string {
  if (bans.length === 0) return 'no active bans';
  const rows = bans.map((b) => [b.ip, formatRemaining(b.remainingSeconds), b.since.replace(/\.\d+Z$/, 'Z'), String(b.timesBanned), b.reason, String(b.failures)]);
  return table(['ADDRESS', 'REMAINING', 'SINCE', 'TIMES', 'REASON', 'FAILURES'], rows);
}

export async function controlCommand(command: string, args: readonly string[], config: Config, io: Io): Promise<number> {
  const json = args.includes('--json');
  const rest = args.filter((a) => a !== '--json');
  const client = new ControlClient(config.control.listen, config.control.token?.reveal());
  const usage = (): number => {
    write(io.stderr, USAGE[command] ?? '');
    return 2;
  };
  try {
    switch (command) {
      case 'status': {
        if (rest.length > 0) return usage();
        const r = await client.call('GET', '/v1/status');
        if (r.status !== 200) throw new Error(errorOf(r));
        write(io.stdout, json ? JSON.stringify(r.body) : statusText(r.body as StatusReport));
        return 0;
      }
      case 'ready': {
        // For container health checks: exit 0 only when AMI is logged in and the firewall ready.
        if (rest.length > 0) return usage();
        const r = await client.call('GET', '/readyz');
        const reasons = (r.body as { reasons?: string[] } | null)?.reasons ?? [];
        write(r.status === 200 ? io.stdout : io.stderr, r.status === 200 ? 'ready' : `not ready: ${reasons.join('; ') || errorOf(r)}`);
        return r.status === 200 ? 0 : 1;
      }
      case 'list': {
        if (rest.length > 0) return usage();
        const r = await client.call('GET', '/v1/bans');
        if (r.status !== 200) throw new Error(errorOf(r));
        const bans = (r.body as { bans: BanView[] }).bans;
        write(io.stdout, json ? JSON.stringify(bans) : bansText(bans));
        return 0;
      }
      case 'ban': {
        const force = rest.includes('--force');
        const replace = rest.includes('--replace');
        const words = rest.filter((a) => a !== '--force' && a !== '--replace');
        const forAt = words.indexOf('--for');
        const duration = forAt === -1 ? undefined : words[forAt + 1];
        const positional = words.filter((_, i) => forAt === -1 || (i !== forAt && i !== forAt + 1));
        if (positional.length !== 1 || (forAt !== -1 && duration === undefined) || positional.some((p) => p.startsWith('-'))) return usage();
        const r = await client.call('POST', '/v1/bans', { ip: positional[0], ...(duration === undefined ? {} : { duration }), force, replace });
        if (r.status !== 201) {
          write(io.stderr, `ami2ban: ${errorOf(r)}`);
          return r.status === 400 || r.status === 409 ? 2 : 1;
        }
        const ban = (r.body as { ban: BanView }).ban;
        write(io.stdout, json ? JSON.stringify(ban) : `banned ${ban.ip} for ${formatRemaining(ban.remainingSeconds)}`);
        return 0;
      }
      case 'unban': {
        if (rest.length !== 1) return usage();
        const target = rest[0] ?? '';
        const r = target === '--all' ? await client.call('DELETE', '/v1/bans') : await client.call('DELETE', `/v1/bans/${encodeURIComponent(target)}`);
        if (r.status !== 200) {
          write(io.stderr, `ami2ban: ${errorOf(r)}`);
          return r.status === 400 ? 2 : 1;
        }
        const body = r.body as { unbanned: string | number };
        if (json) write(io.stdout, JSON.stringify(body));
        else write(io.stdout, typeof body.unbanned === 'number' ? `unbanned ${body.unbanned} addresses` : `unbanned ${body.unbanned}`);
        return 0;
      }
      default:
        return usage();
    }
  } catch (err) {
    write(io.stderr, `ami2ban: ${errorMessage(err)}`);
    return 1;
  }
}
