// `ami2ban status | list | ban | unban`: clients of the running daemon's control API.
import { existsSync } from 'node:fs';
import type { Config, ControlListen } from './config/config.js';
import type { BanView, ExplainedBan, FleetView, StatusReport, TrustView } from './control/api.js';
import { ControlClient, type ControlResponse } from './control/client.js';
import { errorMessage } from './errors.js';
import { COMMANDS, type CommandArgs } from './cli-args.js';
import { ipv6Groups, parseIp } from './common/ip.js';
import { eventSummary, failureLines } from './service/pipeline.js';

interface Io {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
}


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
    `firewall:   ${s.firewall.backend}, ${s.firewall.state}${s.firewall.unenforced > 0 ? `; ${s.firewall.unenforced} bans not in the kernel, retrying: ${s.firewall.lastError ?? 'nftables failed'}` : ''}`,
    `database:   ${s.store.healthy ? 'healthy' : 'not healthy'}, ${s.store.pending} writes waiting${s.store.dropped > 0 ? `, ${s.store.dropped} dropped` : ''} (${s.store.path})${s.store.lastError === null ? '' : `: ${s.store.lastError}`}`,
    `bans:       ${s.activeBans} active; ${s.trackedAddresses} addresses with pending failures`,
    `since start: ${s.counts.events} events, ${s.counts.failures} failures, ${s.counts.bans} bans, ${s.counts.unbans} unbans`,
    ...(s.fleet === null ? [] : [`fleet:      ${s.fleet.state} as ${s.fleet.hostId}${s.fleet.outbox > 0 ? `, ${s.fleet.outbox} decisions waiting to be published` : ''}${s.fleet.lastError === null ? '' : ` (${s.fleet.lastError})`}`]),
  ].join('\n');
}

/** IPv4 before IPv6, each in numeric order (not as text: 10.0.0.9 before 10.0.0.10); a network by its first address. */
export function sortedByAddress<T extends { readonly ip: string }>(bans: readonly T[]): T[] {
  const key = (ip: string): string => {
    const [text = '', len = ''] = ip.split('/');
    const a = parseIp(text);
    if (a === null) return `9${ip}`;
    const bits = `/${len.padStart(3, '0')}`;
    if (a.family === 'ipv4') return `4${a.ip.split('.').map((o) => o.padStart(3, '0')).join('.')}${bits}`;
    return `6${ipv6Groups(a.ip).map((g) => g.toString(16).padStart(4, '0')).join(':')}${bits}`;
  };
  return bans.map((b) => ({ b, k: key(b.ip) })).sort((x, y) => (x.k < y.k ? -1 : x.k > y.k ? 1 : 0)).map((x) => x.b);
}

type Explained = { ip: string; inForce: (BanView & { outcome: string }) | null; history: ExplainedBan[] };

function explainText(e: Explained): string {
  const events = (ev: Readonly<Record<string, number>>): string => eventSummary(ev) || '-';
  const now = e.inForce === null ? `${e.ip} is not banned now` : `${e.ip} is banned ${e.inForce.expiresAt === null ? 'permanently' : `until ${e.inForce.expiresAt}`} (${e.inForce.outcome}): ${e.inForce.reason}, ${e.inForce.failures} failures: ${events(e.inForce.events)}`;
  if (e.history.length === 0) return `${now}\nno ban in the history (BAN_HISTORY_KEEP)`;
  const rows = e.history.map((h) => [h.since.replace(/\.\d+Z$/, 'Z'), h.until === null ? 'permanent' : h.until.replace(/\.\d+Z$/, 'Z'), h.rule, String(h.failures), events(h.events), h.ended === null ? 'in force' : `${h.ended.why} ${h.ended.at.replace(/\.\d+Z$/, 'Z')}`]);
  const behind = e.history
    .filter((h) => h.failuresShown.length > 0)
    .map((h) => [`failures behind the ${h.rule} ban of ${h.since.replace(/\.\d+Z$/, 'Z')}:`, ...failureLines(h.failuresShown, h.failures)].join('\n'));
  return [`${now}\n\n${table(['SINCE', 'UNTIL', 'RULE', 'FAILURES', 'EVENTS', 'ENDED'], rows)}`, ...behind].join('\n\n');
}

function trustText(trusted: readonly TrustView[]): string {
  if (trusted.length === 0) return 'no trusted logins';
  return table(['ADDRESS', 'ACCOUNT', 'UNTIL'], sortedByAddress(trusted).map((p) => [p.ip, p.account, p.until.replace(/\.\d+Z$/, 'Z')]));
}

function bansText(bans: readonly BanView[]): string {
  if (bans.length === 0) return 'no active bans';
  // ORIGIN: the fleet host that decided a ban; `-` this host; `local` this host's, kept from the fleet.
  const origin = (b: BanView): string => b.origin ?? (b.local ? 'local' : '-');
  const rows = bans.map((b) => [b.ip, formatRemaining(b.remainingSeconds), b.since.replace(/\.\d+Z$/, 'Z'), String(b.timesBanned), b.reason, String(b.failures), origin(b)]);
  return table(['ADDRESS', 'REMAINING', 'SINCE', 'TIMES', 'REASON', 'FAILURES', 'ORIGIN'], rows);
}

function fleetText(f: FleetView): string {
  if (!f.enabled) return 'fleet: off (FLEET_REDIS_URL is not set)';
  const lines = [
    `fleet: ${f.state} as ${f.hostId ?? '?'} on ${f.server ?? '?'}${f.connectedSince === null ? '' : ` since ${f.connectedSince.replace(/\.\d+Z$/, 'Z')}`}`,
    ...(f.state !== 'connected' && f.lastError !== null ? [`last error: ${f.lastError}`] : []),
    `apply others' bans: ${f.apply ? 'yes' : 'no'}; publish ours: ${f.publish ? 'yes' : 'no'}`,
    `published: ${f.published.ban} bans, ${f.published.unban} unbans; outbox: ${f.outbox}${f.outboxDropped > 0 ? ` (${f.outboxDropped} dropped while unreachable)` : ''}`,
    `applied here: ${f.applied.ban} bans, ${f.applied.unban} unbans; remote bans in force: ${f.remoteBans}`,
    `refused: ${Object.entries(f.rejected).map(([k, v]) => `${k} ${String(v)}`).join(', ') || 'none'}`,
    `stream lag: ${f.streamLagSeconds} s; snapshots: ${f.snapshots}; reconnects: ${f.reconnects}`,
    '',
    f.hosts.length === 0 ? 'no hosts seen yet' : table(['HOST', 'LAST CONTACT', 'AGO'], f.hosts.map((h) => [h.id + (h.id === f.hostId ? ' (this host)' : ''), h.lastSeen.replace(/\.\d+Z$/, 'Z'), `${String(h.ageSeconds)}s`])),
  ];
  return lines.join('\n');
}

/** The socket of the systemd unit (RuntimeDirectory=ami2ban), found when CONTROL_LISTEN is not set. */
export const SYSTEMD_SOCKET = '/run/ami2ban/control.sock';

/**
 * Where the daemon listens: CONTROL_LISTEN when set; otherwise STATE_DIR's socket, or the systemd
 * unit's when only that one exists, so `ami2ban status` works on a bare-metal install as it is.
 */
export function controlAddress(config: Config, env: NodeJS.ProcessEnv, exists: (path: string) => boolean = existsSync): ControlListen {
  const listen = config.control.listen;
  if (env.CONTROL_LISTEN !== undefined || listen.kind !== 'unix' || exists(listen.path)) return listen;
  return exists(SYSTEMD_SOCKET) ? { kind: 'unix', path: SYSTEMD_SOCKET } : listen;
}

export async function controlCommand(command: string, args: CommandArgs, config: Config, io: Io): Promise<number> {
  const json = args.values.json === true;
  const client = new ControlClient(controlAddress(config, process.env), config.control.token?.reveal());
  const usage = (why: string): number => {
    write(io.stderr, `ami2ban ${command}: ${why}\n${COMMANDS[command]?.usage ?? ''}`);
    return 2;
  };
  try {
    switch (command) {
      case 'status': {
        const r = await client.call('GET', '/v1/status');
        if (r.status !== 200) throw new Error(errorOf(r));
        write(io.stdout, json ? JSON.stringify(r.body) : statusText(r.body as StatusReport));
        return 0;
      }
      case 'ready': {
        // For container health checks: exit 0 only when AMI is logged in and the firewall ready.
        const r = await client.call('GET', '/readyz');
        const reasons = (r.body as { reasons?: string[] } | null)?.reasons ?? [];
        write(r.status === 200 ? io.stdout : io.stderr, r.status === 200 ? 'ready' : `not ready: ${reasons.join('; ') || errorOf(r)}`);
        return r.status === 200 ? 0 : 1;
      }
      case 'list': {
        const r = await client.call('GET', '/v1/bans');
        if (r.status !== 200) throw new Error(errorOf(r));
        const bans = sortedByAddress((r.body as { bans: BanView[] }).bans);
        write(io.stdout, json ? JSON.stringify(bans) : bansText(bans));
        return 0;
      }
      case 'ban': {
        const force = args.values.force === true;
        const replace = args.values.replace === true;
        const local = args.values.local === true;
        const duration = args.values.for;
        const r = await client.call('POST', '/v1/bans', { ip: args.positionals[0], ...(typeof duration === 'string' ? { duration } : {}), force, replace, ...(local ? { local } : {}) });
        if (r.status !== 201) {
          write(io.stderr, `ami2ban: ${errorOf(r)}`);
          return r.status === 400 || r.status === 409 ? 2 : 1;
        }
        const ban = (r.body as { ban: BanView }).ban;
        write(io.stdout, json ? JSON.stringify(ban) : ban.remainingSeconds === null ? `banned ${ban.ip} permanently` : `banned ${ban.ip} for ${formatRemaining(ban.remainingSeconds)}`);
        return 0;
      }
      case 'unban': {
        const all = args.values.all === true;
        const target = args.positionals[0];
        if (all === (target !== undefined)) return usage(all ? 'give an address or --all, not both' : 'give an address or --all');
        const r = target === undefined ? await client.call('DELETE', '/v1/bans') : await client.call('DELETE', `/v1/bans/${encodeURIComponent(target)}`);
        if (r.status !== 200) {
          write(io.stderr, `ami2ban: ${errorOf(r)}`);
          return r.status === 400 ? 2 : 1;
        }
        const body = r.body as { unbanned: string | number };
        if (json) write(io.stdout, JSON.stringify(body));
        else write(io.stdout, typeof body.unbanned === 'number' ? `unbanned ${body.unbanned} addresses` : `unbanned ${body.unbanned}`);
        return 0;
      }
      case 'explain': {
        const target = args.positionals[0] ?? '';
        const r = await client.call('GET', `/v1/bans/${encodeURIComponent(target)}/explain`);
        if (r.status !== 200) {
          write(io.stderr, `ami2ban: ${errorOf(r)}`);
          return r.status === 400 ? 2 : 1;
        }
        write(io.stdout, json ? JSON.stringify(r.body) : explainText(r.body as Explained));
        return 0;
      }
      case 'backup': {
        const r = await client.call('POST', '/v1/backup');
        if (r.status !== 201) {
          write(io.stderr, `ami2ban: ${errorOf(r)}`);
          return 1;
        }
        const b = r.body as { path: string; bytes: number };
        write(io.stdout, json ? JSON.stringify(b) : `backup written: ${b.path} (${String(b.bytes)} bytes)`);
        return 0;
      }
      case 'fleet': {
        const r = await client.call('GET', '/v1/fleet');
        if (r.status !== 200) throw new Error(errorOf(r));
        write(io.stdout, json ? JSON.stringify(r.body) : fleetText(r.body as FleetView));
        return 0;
      }
      case 'trust': {
        const [verb, target] = args.positionals;
        if (verb === undefined) {
          const r = await client.call('GET', '/v1/trust');
          if (r.status !== 200) throw new Error(errorOf(r));
          const trusted = (r.body as { trusted: TrustView[] }).trusted;
          write(io.stdout, json ? JSON.stringify(r.body) : trustText(trusted));
          return 0;
        }
        if (verb !== 'revoke' || target === undefined) return usage(verb === 'revoke' ? 'give the address whose trust to revoke' : `unknown action "${verb}"`);
        const account = args.values.account;
        const query = typeof account === 'string' ? `?account=${encodeURIComponent(account)}` : '';
        const r = await client.call('DELETE', `/v1/trust/${encodeURIComponent(target)}${query}`);
        if (r.status !== 200) {
          write(io.stderr, `ami2ban: ${errorOf(r)}`);
          return r.status === 400 ? 2 : 1;
        }
        const revoked = (r.body as { revoked: TrustView[] }).revoked;
        write(io.stdout, json ? JSON.stringify(r.body) : revoked.map((p) => `revoked the trust of ${p.ip} for account ${p.account}`).join('\n'));
        return 0;
      }
      default:
        return usage('unknown command');
    }
  } catch (err) {
    write(io.stderr, `ami2ban: ${errorMessage(err)}`);
    return 1;
  }
}
