// A loopback AMI server for the demo, the benchmark and tests: greets, answers Login, Events,
// Ping and Logoff like Asterisk does, records every byte clients send, and sends what it is told.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { AmiParser, type AmiMessage } from '../ami/parser.js';

export interface FakeAmiServerOptions {
  readonly username: string;
  readonly secret: string;
  readonly greeting?: string;
  /**
   * TCP_NODELAY on the sessions. Asterisk does not set it on AMI sessions (Nagle's algorithm on),
   * which is the default here too.
   */
  readonly noDelay?: boolean;
}

export interface FakeSession {
  readonly socket: net.Socket;
  /** Every byte this client sent. */
  readonly received: Buffer[];
  loggedIn: boolean;
  eventMask: string | undefined;
}

interface FakeServerEvents {
  subscribed: [session: FakeSession];
  action: [session: FakeSession, message: AmiMessage];
  loginRefused: [session: FakeSession];
}

export class FakeAmiServer extends EventEmitter<FakeServerEvents> {
  private server: net.Server | undefined;
  readonly sessions: FakeSession[] = [];
  /** When false, Ping gets no answer (a hung Asterisk). */
  answerPings = true;
  /** When true, every login is refused. */
  refuseLogins = false;
  port = 0;

  constructor(private readonly options: FakeAmiServerOptions) {
    super();
  }

  async start(port = 0, host = '127.0.0.1'): Promise<number> {
    const server = net.createServer((socket) => {
      if (this.options.noDelay === true) socket.setNoDelay(true);
      this.accept(socket);
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        resolve();
      });
    });
    const address = server.address();
    this.port = typeof address === 'object' && address !== null ? address.port : port;
    return this.port;
  }

  /** Sends bytes to every subscribed session. */
  broadcast(bytes: Buffer | string): void {
    for (const s of this.sessions) if (s.loggedIn && !s.socket.destroyed) s.socket.write(bytes);
  }

  /** Drops every connection abruptly (as a crashed or restarted Asterisk would). */
  dropAll(): void {
    for (const s of this.sessions) s.socket.destroy();
  }

  /** Resolves on the next session that finishes Login + Events. */
  nextSubscription(): Promise<FakeSession> {
    return new Promise((resolve) => this.once('subscribed', resolve));
  }

  async stop(): Promise<void> {
    this.dropAll();
    const server = this.server;
    this.server = undefined;
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => { resolve(); }));
  }

  private accept(socket: net.Socket): void {
    const session: FakeSession = { socket, received: [], loggedIn: false, eventMask: undefined };
    this.sessions.push(session);
    socket.on('error', () => undefined);
    const parser = new AmiParser({
      message: (m) => {
        this.onAction(session, m);
      },
    });
    socket.on('data', (chunk: Buffer) => {
      session.received.push(chunk);
      parser.push(chunk);
    });
    socket.write(`${this.options.greeting ?? 'Asterisk Call Manager/11.0.0'}\r\n`);
  }

  private reply(session: FakeSession, m: AmiMessage, lines: readonly string[]): void {
    const id = m.get('ActionID');
    const all = [...lines.slice(0, 1), ...(id === undefined ? [] : [`ActionID: ${id}`]), ...lines.slice(1)];
    session.socket.write(`${all.join('\r\n')}\r\n\r\n`);
  }

  private onAction(session: FakeSession, m: AmiMessage): void {
    this.emit('action', session, m);
    const action = (m.get('Action') ?? '').toLowerCase();
    if (action === 'login') {
      if (!this.refuseLogins && m.get('Username') === this.options.username && m.get('Secret') === this.options.secret) {
        session.loggedIn = true;
        this.reply(session, m, ['Response: Success', 'Message: Authentication accepted']);
      } else {
        // Asterisk answers a bad login with an error and closes the connection.
        this.reply(session, m, ['Response: Error', 'Message: Authentication failed']);
        session.socket.end();
        this.emit('loginRefused', session);
      }
    } else if (!session.loggedIn) {
      this.reply(session, m, ['Response: Error', 'Message: Permission denied']);
    } else if (action === 'events') {
      session.eventMask = m.get('EventMask');
      this.reply(session, m, ['Response: Success', `Events: ${session.eventMask === 'off' ? 'Off' : 'On'}`]);
      this.emit('subscribed', session);
    } else if (action === 'ping') {
      if (this.answerPings) {
        this.reply(session, m, ['Response: Success', 'Ping: Pong', `Timestamp: ${(Date.now() / 1000).toFixed(6)}`]);
      }
    } else if (action === 'logoff') {
      this.reply(session, m, ['Response: Goodbye', 'Message: Thanks for all the fish.']);
      session.socket.end();
    } else {
      this.reply(session, m, ['Response: Error', 'Message: Invalid/unknown command']);
    }
  }
}

/** The event blocks of a captured AMI stream (greeting and responses dropped), each with its CRLF end. */
export function eventBlocks(capture: Buffer): Buffer[] {
  const blocks: Buffer[] = [];
  const parser = new AmiParser({
    message: (m) => {
      if (m.get('Event') === undefined) return;
      blocks.push(Buffer.from(`${m.headers.map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`));
    },
  });
  parser.push(capture);
  parser.end();
  return blocks;
}
