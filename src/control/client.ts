// The CLI's side of the control API.
import { request } from 'node:http';
import { ControlError } from '../errors.js';
import { type ListenAddress, describeListen } from './server.js';

export interface ControlResponse {
  readonly status: number;
  readonly body: unknown;
}

export class ControlClient {
  constructor(
    private readonly listen: ListenAddress,
    private readonly token: string | undefined,
  ) {}

  get address(): string {
    return describeListen(this.listen);
  }

  call(method: string, path: string, body?: unknown): Promise<ControlResponse> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const l = this.listen;
    return new Promise((resolve, reject) => {
      const req = request(
        {
          method,
          path,
          ...(l.kind === 'unix' ? { socketPath: l.path } : { host: l.host, port: l.port }),
          headers: {
            ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
            ...(this.token === undefined ? {} : { authorization: `Bearer ${this.token}` }),
          },
          timeout: 10_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = text;
            try {
              parsed = JSON.parse(text);
            } catch {
              // not JSON (e.g. /metrics)
            }
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
      req.on('error', (err: NodeJS.ErrnoException) => {
        const down = err.code === 'ECONNREFUSED' || err.code === 'ENOENT';
        reject(
          new ControlError(
            down
              ? `the ami2ban daemon is not running (nothing listens on ${this.address}; start it with \`ami2ban run\`, or set CONTROL_LISTEN)`
              : `cannot reach the ami2ban daemon at ${this.address}: ${err.message}`,
            err,
          ),
        );
      });
      req.end(payload);
    });
  }
}
