// The local control API: status, bans, manual ban/unban, health, readiness, /metrics.
import { createHash, timingSafeEqual } from 'node:crypto';
import { existsSync, unlinkSync } from 'node:fs';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { connect } from 'node:net';
import { ControlError, errorMessage } from '../errors.js';
import type { ControlTarget } from './api.js';
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

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
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
    if (l.kind === 'unix' && existsSync(l.path)) {
      if (await answers(l.path)) throw new ControlError(`another process already listens on ${l.path}`);
      unlinkSync(l.path); // left behind by a killed daemon
    }
    const server = createServer((req, res) => {
      void this.handle(req, res);
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => {
        reject(new ControlError(`cannot listen on ${this.address}: ${errorMessage(err)}`, err));
      });
      if (l.kind === 'unix') server.listen(l.path, resolve);
      else server.listen(l.port, l.host, resolve);
    });
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
      if (!this.authorized(req)) {
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
      send(res, 200, { bans: t.bans() });
    } else if (path === '/v1/bans' && method === 'POST') {
      const body = await readJson(req);
      const { ip, duration, force } = body;
      if (typeof ip !== 'string') throw new HttpError(400, '"ip" must be a string holding an IPv4 or IPv6 address');
      if (duration !== undefined && typeof duration !== 'string' && typeof duration !== 'number') {
        throw new HttpError(400, '"duration" must be a duration such as "1h", 600 or "-1"');
      }
      if (force !== undefined && typeof force !== 'boolean') throw new HttpError(400, '"force" must be true or false');
      const outcome = await t.ban(ip, duration === undefined ? undefined : String(duration), force === true);
      if (outcome.kind === 'invalid') throw new HttpError(400, outcome.message);
      if (outcome.kind === 'refused') throw new HttpError(409, outcome.message);
      if (outcome.kind === 'failed') throw new HttpError(outcome.status, outcome.message);
      send(res, 201, { ban: outcome.ban });
    } else if (path === '/v1/bans' && method === 'DELETE') {
      send(res, 200, { unbanned: await t.unbanAll() });
    } else if (path.startsWith('/v1/bans/')) {
      only('DELETE');
      const ip = decodeURIComponent(path.slice('/v1/bans/'.length));
      const done = await t.unban(ip);
      if (done.kind === 'invalid') throw new HttpError(400, `"${ip}" is not an IP address`);
      if (done.kind === 'not-banned') throw new HttpError(404, `${ip} is not banned`);
      if (done.kind === 'failed') throw new HttpError(502, done.message);
      send(res, 200, { unbanned: ip });
    } else if (path === '/v1/bans') {
      throw new HttpError(405, `${method} not allowed on ${path}`);
    } else {
      throw new HttpError(404, `no such endpoint: ${path}`);
    }
  }
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
