// The local control API: status, bans, manual ban/unban, health, readiness, /metrics.
import { createHash, timingSafeEqual } from 'node:crypto';
import { chmodSync, chownSync, lstatSync, readFileSync, unlinkSync } from 'node:fs';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { connect } from 'node:net';
import { ControlError, errorMessage } from '../errors.js';
import type { BanView, ControlTarget } from './api.js';
import type { Metrics } from './metrics.js';

export type ListenAddress = { readonly kind: 'tcp'; readonly host: string; readonly port: number } | { readonly kind: 'unix'; readonly path: string };

/** `127.0.0.1:9180`, `[::1]:9180` or the socket path. */
export function describeListen(l: ListenAddress): string {
  return l.kind === 'unix' ? l.path : `${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}`;
}

export interface ControlServerOptions {
  readonly listen: ListenAddress;
  /** When set, every request needs `Authorization: Bearer <token>`. */
  readonly token: string | undefined;
  readonly target: ControlTarget;
  readonly metrics: Metrics;
  /** A unix socket is mode 0600; with a group (name or id), 0660 and owned by that group. */
  readonly group?: string | undefined;
  /** Serve /metrics, /healthz and /readyz only (a listener without a token, for Prometheus). */
  readonly observabilityOnly?: boolean;
}

const OBSERVABILITY = new Set(['/metrics', '/healthz', '/readyz']);

/** A group name from /etc/group, or a numeric id. */
function groupId(group: string): number {
  if (/^\d+$/.test(group)) return Number(group);
  for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined) return Number(gid);
  }
  throw new ControlError(`CONTROL_GROUP: no group named "${group}" in /etc/group`);
}

const MAX_BODY = 16 * 1024;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Bans serialized per turn of the event loop when listing them all. */
const BAN_PAGE = 1000;

/** `{"bans":[…]}`, a page per turn of the event loop, so that 100 000 bans never stall the daemon. */
async function sendBans(res: ServerResponse, pages: Iterable<BanView[]>): Promise<void> {
  res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' });
  res.write('{"bans":[');
  let first = true;
  for (const page of pages) {
    if (page.length === 0) continue;
    const text = page.map((b) => JSON.stringify(b)).join(',');
    res.write(first ? text : `,${text}`);
    first = false;
    await new Promise((resolve) => setImmediate(resolve));
  }
  res.end(']}\n');
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const type = (req.headers['content-type'] ?? '').split(';', 1)[0]?.trim().toLowerCase();
  const hasBody = req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0';
  if ((hasBody || req.headers['transfer-encoding'] !== undefined) && type !== 'application/json') {
    throw new HttpError(415, 'the body must be JSON, sent as Content-Type: application/json');
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new HttpError(413, `request body over ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  let body: unknown;
  try {
    body = text.trim() === '' ? {} : JSON.parse(text);
  } catch {
    throw new HttpError(400, 'body is not valid JSON');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'body must be a JSON object');
  return body as Record<string, unknown>;
}

export class ControlServer {
  private server: Server | undefined;
  private readonly tokenDigest: Buffer | undefined;

  constructor(private readonly o: ControlServerOptions) {
    this.tokenDigest = o.token === undefined ? undefined : digest(o.token);
  }

  /** The TCP port actually bound (useful with port 0); 0 for a unix socket. */
  port(): number {
    const a = this.server?.address();
    return typeof a === 'object' && a !== null ? a.port : 0;
  }

  /** Where it listens, for logs and messages. */
  get address(): string {
    return describeListen(this.o.listen);
  }

  async listen(): Promise<void> {
    const l = this.o.listen;
    const gid = l.kind === 'unix' && this.o.group !== undefined ? groupId(this.o.group) : undefined;
    if (l.kind === 'unix') await removeStaleSocket(l.path);
    const server = createServer((req, res) => {
      void this.handle(req, res);
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => {
        reject(new ControlError(`cannot listen on ${this.address}: ${errorMessage(err)}`, err));
      });
      if (l.kind === 'unix') {
        // The socket is created by bind() inside listen(): a strict umask makes it 0600 from the
        // first instant, whatever the process umask is.
        const before = process.umask(0o177);
        try {
          server.listen(l.path, resolve);
        } finally {
          process.umask(before);
        }
      } else server.listen(l.port, l.host, resolve);
    });
    if (l.kind === 'unix') {
      if (gid !== undefined) chownSync(l.path, -1, gid);
      chmodSync(l.path, gid === undefined ? 0o600 : 0o660);
    }
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => { resolve(); }));
  }

  private authorized(req: IncomingMessage): boolean {
    if (this.tokenDigest === undefined) return true;
    const header = req.headers.authorization ?? '';
    const given = header.startsWith('Bearer ') ? header.slice(7) : '';
    // Compared as digests: constant time, whatever the lengths.
    return timingSafeEqual(digest(given), this.tokenDigest);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      // A browser adds Origin to cross-site requests: no web page may drive bans.
      if (req.headers.origin !== undefined) throw new HttpError(403, 'requests carrying an Origin header (from a web page) are refused');
      if (this.o.observabilityOnly === true) {
        const path = (req.url ?? '/').split('?', 1)[0] ?? '/';
        if (!OBSERVABILITY.has(path)) throw new HttpError(404, `only /metrics, /healthz and /readyz are served here (METRICS_LISTEN); the control API is on CONTROL_LISTEN`);
      } else if (!this.authorized(req)) {
        res.setHeader('www-authenticate', 'Bearer');
        throw new HttpError(401, 'missing or wrong bearer token (CONTROL_TOKEN)');
      }
      await this.route(req, res);
    } catch (err) {
      if (err instanceof HttpError) send(res, err.status, { error: err.message });
      else send(res, 500, { error: errorMessage(err) });
    }
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://ami2ban');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const t = this.o.target;
    const only = (allowed: string): void => {
      if (method !== allowed) throw new HttpError(405, `${method} not allowed on ${path}`);
    };

    if (path === '/healthz') {
      only('GET');
      send(res, 200, { status: 'ok' });
    } else if (path === '/readyz') {
      only('GET');
      const r = t.readiness();
      send(res, r.ready ? 200 : 503, { ready: r.ready, reasons: r.reasons });
    } else if (path === '/metrics') {
      only('GET');
      const m = await this.o.metrics.render();
      res.writeHead(200, { 'content-type': m.contentType });
      res.end(m.body);
    } else if (path === '/v1/status') {
      only('GET');
      send(res, 200, t.status());
    } else if (path === '/v1/bans' && method === 'GET') {
      await sendBans(res, t.banPages(BAN_PAGE));
    } else if (path === '/v1/bans' && method === 'POST') {
      const body = await readJson(req);
      const { ip, duration, force, replace, local } = body;
      if (typeof ip !== 'string') throw new HttpError(400, '"ip" must be a string holding an IPv4 or IPv6 address');
      if (duration !== undefined && typeof duration !== 'string' && typeof duration !== 'number') {
        throw new HttpError(400, '"duration" must be a duration such as "1h", 600 or "-1"');
      }
      if (force !== undefined && typeof force !== 'boolean') throw new HttpError(400, '"force" must be true or false');
      if (replace !== undefined && typeof replace !== 'boolean') throw new HttpError(400, '"replace" must be true or false');
      if (local !== undefined && typeof local !== 'boolean') throw new HttpError(400, '"local" must be true or false');
      const outcome = await t.ban(ip, duration === undefined ? undefined : String(duration), force === true, replace === true, local === true);
      if (outcome.kind === 'invalid') throw new HttpError(400, outcome.message);
      if (outcome.kind === 'refused') throw new HttpError(409, outcome.message);
      if (outcome.kind === 'failed') throw new HttpError(outcome.status, outcome.message);
      send(res, 201, { ban: outcome.ban });
    } else if (path === '/v1/bans' && method === 'DELETE') {
      send(res, 200, { unbanned: await t.unbanAll() });
    } else if (path.startsWith('/v1/bans/') && path.endsWith('/explain')) {
      only('GET');
      const ip = addressInPath(path.slice('/v1/bans/'.length, -'/explain'.length));
      const e = await t.explain(ip);
      if (e.kind === 'invalid') throw new HttpError(400, e.message);
      if (e.kind === 'failed') throw new HttpError(503, e.message);
      send(res, 200, { ip: e.ip, inForce: e.inForce, history: e.history });
    } else if (path.startsWith('/v1/bans/')) {
      only('DELETE');
      const ip = addressInPath(path.slice('/v1/bans/'.length));
      const done = await t.unban(ip);
      if (done.kind === 'invalid') throw new HttpError(400, `"${ip}" is not an IP address`);
      if (done.kind === 'not-banned') throw new HttpError(404, `${ip} is not banned`);
      if (done.kind === 'failed') throw new HttpError(done.status, done.message);
      send(res, 200, { unbanned: ip });
    } else if (path === '/v1/backup') {
      only('POST');
      await readJson(req);
      const b = await t.backup();
      if (b.kind === 'failed') throw new HttpError(503, b.message);
      send(res, 201, { path: b.path, bytes: b.bytes });
    } else if (path === '/v1/fleet') {
      only('GET');
      send(res, 200, t.fleet());
    } else if (path === '/v1/trust') {
      only('GET');
      send(res, 200, { trusted: t.trusted() });
    } else if (path.startsWith('/v1/trust/')) {
      only('DELETE');
      const ip = addressInPath(path.slice('/v1/trust/'.length));
      const r = t.revokeTrust(ip, url.searchParams.get('account') ?? undefined);
      if (r.kind === 'invalid') throw new HttpError(400, r.message);
      if (r.revoked.length === 0) throw new HttpError(404, `${ip} is not trusted${url.searchParams.has('account') ? ` for that account` : ''}`);
      send(res, 200, { revoked: r.revoked });
    } else if (path === '/v1/bans') {
      throw new HttpError(405, `${method} not allowed on ${path}`);
    } else {
      throw new HttpError(404, `no such endpoint: ${path}`);
    }
  }
}

function addressInPath(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new HttpError(400, 'the address in the path has a malformed percent-escape');
  }
}

/**
 * Removes what a killed daemon left at the socket path, and nothing else: a path that is not a
 * socket, or a socket something still answers on, is refused.
 */
async function removeStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return; // nothing there
  }
  if (!isSocket) throw new ControlError(`${path} exists and is not a socket; refusing to replace it (check CONTROL_LISTEN)`);
  if (await answers(path)) throw new ControlError(`another process already listens on ${path}`);
  unlinkSync(path);
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      resolve(false);
    });
  });
}
