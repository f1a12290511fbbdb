import diagnostics from 'node:diagnostics_channel';
import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { AsteriskManagerConnector } from '../src/ami/asterisk-manager-connector.js';
import { AmiClient, type AmiState, backoffDelay } from '../src/ami/client.js';
import type { AmiConnector, AmiSession, AmiSessionHandlers } from '../src/ami/connector.js';
import { AmiMessage, AmiParser } from '../src/ami/parser.js';
import type { SecurityEvent } from '../src/ami/security-event.js';
import { FakeAmiServer, eventBlocks } from '../src/demo/fake-ami-server.js';
import { fixture } from './helpers/fixtures.js';
import { MemoryLogger } from './helpers/memory-logger.js';

const USER = 'ami2ban';
const SECRET = 'ami2ban-secret';
const PING_INTERVAL = 15_000;
const PING_TIMEOUT = 5_000;

function waitFor(client: AmiClient, state: AmiState): Promise<void> {
  if (client.state === state) return Promise.resolve();
  return new Promise((resolve) => {
    const on = (s: AmiState): void => {
      if (s !== state) return;
      client.off('state', on);
      resolve();
    };
    client.on('state', on);
  });
}

function actionsOf(bytes: readonly Buffer[]): AmiMessage[] {
  const out: AmiMessage[] = [];
  const p = new AmiParser({ message: (m) => out.push(m) });
  for (const b of bytes) p.push(b);
  return out;
}

describe('AmiClient against a fake AMI server', () => {
  let server: FakeAmiServer;
  let client: AmiClient;
  let log: MemoryLogger;
  let events: SecurityEvent[];

  beforeEach(async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'] });
    server = new FakeAmiServer({ username: USER, secret: SECRET });
    await server.start();
    log = new MemoryLogger();
    events = [];
    client = new AmiClient({
      target: { host: '127.0.0.1', port: server.port, username: USER, secret: SECRET },
      connector: new AsteriskManagerConnector(),
      logger: log,
      pingIntervalMs: PING_INTERVAL,
      pingTimeoutMs: PING_TIMEOUT,
      reconnectMaxMs: 30_000,
      random: () => 0.5,
    });
    client.on('event', (e) => events.push(e));
  });

  afterEach(async () => {
    client.stop();
    await server.stop();
    vi.useRealTimers();
  });

  it('logs in, then narrows the session to security events: the bytes it sends', async () => {
    const subscribed = server.nextSubscription();
    client.start();
    const session = await subscribed;
    await waitFor(client, 'ready');
    const actions = actionsOf(session.received);
    expect(actions.map((a) => a.get('Action')?.toLowerCase())).toEqual(['login', 'events']);
    const [login, eventsAction] = actions;
    expect(login?.get('Username')).toBe(USER);
    expect(login?.get('Secret')).toBe(SECRET);
    expect(eventsAction?.get('EventMask')).toBe('security');
    expect(session.eventMask).toBe('security');
    const sent = Buffer.concat(session.received).toString();
    expect(sent).toMatch(/^Action: login\r\n/m);
    expect(sent).toContain('\r\nEventmask: security\r\n');
    expect(sent.endsWith('\r\n\r\n')).toBe(true);
  });

  it('connects through the library without replacing any global: net.createConnection is Node\'s own while the library calls it', async () => {
    const own = net.createConnection;
    const seen: boolean[] = [];
    const check = (): void => {
      seen.push(net.createConnection === own);
    };
    diagnostics.subscribe('net.client.socket', check);
    try {
      client.start();
      await server.nextSubscription();
      await waitFor(client, 'ready');
    } finally {
      diagnostics.unsubscribe('net.client.socket', check);
    }
    expect(seen).toEqual([true]);
  });

  it('acknowledges every read at once (TCP_QUICKACK on the session\'s own descriptor), and stops trying when it cannot', async () => {
    const calls: number[] = [];
    const withAck = (answer: boolean): AmiClient =>
      new AmiClient({
        target: { host: '127.0.0.1', port: server.port, username: USER, secret: SECRET },
        connector: new AsteriskManagerConnector({ quickAck: (fd) => (calls.push(fd), answer) }),
        logger: log,
        pingIntervalMs: PING_INTERVAL,
        pingTimeoutMs: PING_TIMEOUT,
        reconnectMaxMs: 30_000,
        random: () => 0.5,
      });
    const blocks = eventBlocks(fixture('ami-ami2ban-events-security.raw')).slice(0, 5);
    const acking = withAck(true);
    let got = 0;
    acking.on('event', () => got++);
    acking.start();
    await server.nextSubscription();
    await waitFor(acking, 'ready');
    const afterLogin = calls.length;
    expect(afterLogin).toBeGreaterThan(0);
    for (const b of blocks) {
      server.broadcast(b);
      await vi.waitUntil(() => got === blocks.indexOf(b) + 1);
    }
    // One call per read, each with the same real descriptor.
    expect(calls.length).toBeGreaterThanOrEqual(afterLogin + blocks.length);
    expect(new Set(calls).size).toBe(1);
    expect(calls[0]).toBeGreaterThan(2);
    acking.stop();
    // Refused once: never asked again on that connection.
    calls.length = 0;
    const refused = withAck(false);
    refused.start();
    await server.nextSubscription();
    await waitFor(refused, 'ready');
    server.broadcast(Buffer.concat(blocks));
    await new Promise((r) => setImmediate(r));
    expect(calls.length).toBe(1);
    refused.stop();
  });

  it('delivers security events and counts, without delivering, everything else', async () => {
    client.start();
    await server.nextSubscription();
    await waitFor(client, 'ready');
    const blocks = eventBlocks(fixture('ami-amiall-events-on.raw'));
    server.broadcast(Buffer.concat(blocks));
    await vi.waitUntil(() => client.counters.securityEvents + client.counters.nonSecurity === blocks.length);
    expect(events.length).toBe(135);
    expect(client.counters.nonSecurity).toBe(40);
    expect(events[0]?.name).toBe('SuccessfulAuth');
  });

  it('a connection dropped mid-frame: the partial event is never delivered, and it reconnects', async () => {
    client.start();
    await server.nextSubscription();
    await waitFor(client, 'ready');
    const block = eventBlocks(fixture('ami-ami2ban-events-security.raw'))[40] ?? Buffer.alloc(0);
    server.broadcast(block.subarray(0, block.length - 10));
    await new Promise((r) => setImmediate(r));
    server.dropAll();
    await waitFor(client, 'backing-off');
    expect(log.messages('warn')).toContain('AMI connection lost');
    const again = server.nextSubscription();
    await vi.advanceTimersByTimeAsync(500);
    await again;
    await waitFor(client, 'ready');
    server.broadcast(block);
    await vi.waitUntil(() => events.length === 1);
    expect(events.length).toBe(1);
    expect(client.counters.parserIssues).toBe(0);
  });

  it('a hung Asterisk (no Pong): the Ping watchdog reconnects', async () => {
    client.start();
    await server.nextSubscription();
    await waitFor(client, 'ready');
    server.answerPings = false;
    await vi.advanceTimersByTimeAsync(PING_INTERVAL);
    await vi.waitUntil(() => actionsOf(server.sessions[0]?.received ?? []).some((a) => a.get('Action') === 'Ping'));
    expect(client.state).toBe('ready');
    await vi.advanceTimersByTimeAsync(PING_TIMEOUT);
    expect(client.state).toBe('backing-off');
    expect(log.lines.find((l) => l.message === 'AMI keep-alive failed, reconnecting')?.meta.error).toContain('Ping: no answer');
    server.answerPings = true;
    const again = server.nextSubscription();
    await vi.advanceTimersByTimeAsync(500);
    await again;
    await waitFor(client, 'ready');
    expect(server.sessions[0]?.socket.destroyed).toBe(true);
  });

  it('an unanswered Ping while events still arrive (a flood read behind) keeps the session; silence then drops it', async () => {
    const block = eventBlocks(fixture('ami-ami2ban-events-security.raw'))[40] ?? Buffer.alloc(0);
    client.start();
    await server.nextSubscription();
    await waitFor(client, 'ready');
    server.answerPings = false;
    const pings = (): number => actionsOf(server.sessions[0]?.received ?? []).filter((a) => a.get('Action') === 'Ping').length;
    await vi.advanceTimersByTimeAsync(PING_INTERVAL);
    await vi.waitUntil(() => pings() === 1);
    const sent = performance.now();
    await vi.waitUntil(() => performance.now() - sent > 5);
    server.broadcast(block);
    await vi.waitUntil(() => events.length === 1);
    await vi.advanceTimersByTimeAsync(PING_TIMEOUT);
    expect(client.state).toBe('ready');
    expect(client.counters.reconnects).toBe(0);
    await vi.advanceTimersByTimeAsync(PING_INTERVAL);
    await vi.waitUntil(() => pings() === 2);
    await vi.advanceTimersByTimeAsync(PING_TIMEOUT);
    expect(client.state).toBe('backing-off');
  });

  it('answered Pings keep the session up', async () => {
    client.start();
    await server.nextSubscription();
    await waitFor(client, 'ready');
    for (let i = 0; i < 3; i++) {
      await vi.advanceTimersByTimeAsync(PING_INTERVAL);
      await vi.waitUntil(() => actionsOf(server.sessions[0]?.received ?? []).filter((a) => a.get('Action') === 'Ping').length === i + 1);
      // The Pong is read on a later turn of the (real) event loop: let it arrive before time moves on.
      const sent = performance.now();
      await vi.waitUntil(() => performance.now() - sent > 50);
    }
    expect(client.state).toBe('ready');
    expect(client.counters.reconnects).toBe(0);
  });

  it('a refused login is logged once per attempt and retried with growing backoff, never in a tight loop', async () => {
    server.refuseLogins = true;
    let refused = 0;
    server.on('loginRefused', () => refused++);
    client.start();
    await vi.waitUntil(() => refused === 1 && client.state === 'backing-off');
    // With random = 0.5 the jitter factor is 1: delays 500, 1000, 2000 ms.
    await vi.advanceTimersByTimeAsync(499);
    expect(refused).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    await vi.waitUntil(() => refused === 2 && client.state === 'backing-off');
    await vi.advanceTimersByTimeAsync(999);
    expect(refused).toBe(2);
    await vi.advanceTimersByTimeAsync(1);
    await vi.waitUntil(() => refused === 3 && client.state === 'backing-off');
    const errors = log.lines.filter((l) => l.level === 'error');
    expect(errors.length).toBe(3);
    expect(errors[0]?.message).toContain('AMI login failed');
    expect(errors[0]?.meta.error).toContain('Authentication failed');
    expect(JSON.stringify(log.lines)).not.toContain(SECRET);
    // Credentials fixed: the next attempt succeeds and the backoff starts over.
    server.refuseLogins = false;
    await vi.advanceTimersByTimeAsync(2000);
    await waitFor(client, 'ready');
    server.dropAll();
    await waitFor(client, 'backing-off');
    expect(log.lines.filter((l) => l.message === 'AMI reconnecting').at(-1)?.meta.inMs).toBe(500);
  });

  it('Asterisk restarts (new greeting on the same port): logs in again', async () => {
    client.start();
    await server.nextSubscription();
    await waitFor(client, 'ready');
    const port = server.port;
    await server.stop();
    await waitFor(client, 'backing-off');
    server = new FakeAmiServer({ username: USER, secret: SECRET, greeting: 'Asterisk Call Manager/12.0.0' });
    await server.start(port);
    const again = server.nextSubscription();
    // Only the backoff's fake time passes: the real socket I/O must not race the login timeout.
    await vi.advanceTimersByTimeAsync(500);
    await again;
    await waitFor(client, 'ready');
    expect(log.lines.filter((l) => l.message === 'AMI greeting').map((l) => l.meta.greeting)).toEqual([
      'Asterisk Call Manager/11.0.0',
      'Asterisk Call Manager/12.0.0',
    ]);
  });

  it('connection refused: backs off and keeps trying', async () => {
    const port = server.port;
    await server.stop();
    client.start();
    await waitFor(client, 'backing-off');
    expect(log.lines.find((l) => l.message === 'AMI connect failed')?.meta.error).toContain('ECONNREFUSED');
    await server.start(port);
    const again = server.nextSubscription();
    await vi.advanceTimersByTimeAsync(500);
    await again;
    await waitFor(client, 'ready');
  });
});

describe('AmiClient: black holes, last error, giving up', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('a connect that never completes (black hole) is abandoned after AMI_CONNECT_TIMEOUT, and a late session is closed', async () => {
    let finish: ((s: AmiSession) => void) | undefined;
    let destroyed = 0;
    const connector: AmiConnector = {
      connect: () =>
        new Promise<AmiSession>((resolve) => {
          finish ??= resolve;
        }),
    };
    const client = new AmiClient({ target: { host: '127.0.0.1', port: 1, username: USER, secret: SECRET }, connector, logger: new MemoryLogger(), pingIntervalMs: PING_INTERVAL, pingTimeoutMs: PING_TIMEOUT, reconnectMaxMs: 30_000, connectTimeoutMs: 10_000, random: () => 0.5 });
    client.start();
    await vi.advanceTimersByTimeAsync(9_999);
    expect(client.state).toBe('connecting');
    await vi.advanceTimersByTimeAsync(1);
    expect(client.state).toBe('backing-off');
    expect(client.lastError).toMatchObject({ kind: 'connect-timeout', message: 'connect: no answer within 10000 ms' });
    finish?.({ login: () => Promise.resolve(), action: () => Promise.resolve({}), destroy: () => { destroyed++; } });
    await vi.advanceTimersByTimeAsync(0);
    expect(destroyed).toBe(1);
    client.stop();
  });

  it('says why it is not ready: a refused login reads differently from a refused connection', async () => {
    const server = new FakeAmiServer({ username: USER, secret: SECRET });
    await server.start();
    server.refuseLogins = true;
    const client = new AmiClient({ target: { host: '127.0.0.1', port: server.port, username: USER, secret: SECRET }, connector: new AsteriskManagerConnector(), logger: new MemoryLogger(), pingIntervalMs: PING_INTERVAL, pingTimeoutMs: PING_TIMEOUT, reconnectMaxMs: 30_000, random: () => 0.5 });
    client.start();
    await vi.waitUntil(() => client.lastError !== undefined);
    expect(client.lastError?.kind).toBe('login-refused');
    expect(client.lastError?.message).toContain('check AMI_USERNAME/AMI_SECRET');
    await server.stop();
    await vi.advanceTimersByTimeAsync(500);
    await vi.waitUntil(() => client.lastError?.kind === 'connect-failed');
    expect(client.lastError?.message).toContain('ECONNREFUSED');
    client.stop();
  });

  it('gives up after AMI_GIVEUP without a login: stops and says why', async () => {
    const connector: AmiConnector = { connect: () => Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:5038')) };
    const client = new AmiClient({ target: { host: '127.0.0.1', port: 5038, username: USER, secret: SECRET }, connector, logger: new MemoryLogger(), pingIntervalMs: PING_INTERVAL, pingTimeoutMs: PING_TIMEOUT, reconnectMaxMs: 2_000, giveUpMs: 10_000, random: () => 0.5 });
    const reasons: string[] = [];
    client.on('giveup', (r) => reasons.push(r));
    client.start();
    await vi.advanceTimersByTimeAsync(9_000);
    expect(reasons).toEqual([]);
    await vi.advanceTimersByTimeAsync(3_000);
    expect(reasons.length).toBe(1);
    expect(reasons[0]).toMatch(/^no AMI login for 1\d s \(AMI_GIVEUP\); last error: connect ECONNREFUSED/);
    expect(client.state).toBe('stopped');
  });
});

/** A connector whose sessions the test drives by hand. */
class ScriptedConnector implements AmiConnector {
  readonly handlers: AmiSessionHandlers[] = [];
  connect(_target: unknown, handlers: AmiSessionHandlers): Promise<AmiSession> {
    this.handlers.push(handlers);
    return Promise.resolve({
      login: () => Promise.resolve(),
      action: () => Promise.resolve({ response: 'Success', events: 'On' }),
      destroy: () => undefined,
    });
  }
}

const EVENT = AmiMessage.of([
  ['Event', 'InvalidAccountID'],
  ['Privilege', 'security,all'],
  ['Severity', 'Error'],
  ['Service', 'PJSIP'],
  ['RemoteAddress', 'IPV4/UDP/192.0.2.1/5060'],
]);

describe('AmiClient connection epochs', () => {
  it('drops events that arrive from a socket older than the current one', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const connector = new ScriptedConnector();
    const client = new AmiClient({
      target: { host: 'h', port: 1, username: 'u', secret: 's' },
      connector,
      logger: new MemoryLogger(),
      pingIntervalMs: PING_INTERVAL,
      pingTimeoutMs: PING_TIMEOUT,
      reconnectMaxMs: 30_000,
    });
    const got: string[] = [];
    client.on('event', (e) => got.push(e.remoteAddress?.ip ?? ''));
    client.start();
    await waitFor(client, 'ready');
    const [first] = connector.handlers;
    first?.onEvent(EVENT);
    first?.onClose(new Error('gone'));
    await vi.advanceTimersByTimeAsync(1000);
    await waitFor(client, 'ready');
    expect(connector.handlers.length).toBe(2);
    first?.onEvent(EVENT);
    first?.onClose(undefined);
    expect(client.state).toBe('ready');
    connector.handlers[1]?.onEvent(EVENT);
    expect(got).toEqual(['192.0.2.1', '192.0.2.1']);
    expect(client.counters.staleDropped).toBe(1);
    client.stop();
    vi.useRealTimers();
  });
});

describe('backoffDelay', () => {
  it('starts near 0.5 s, doubles, is jittered ±20 % and capped', () => {
    expect(backoffDelay(0, 500, 30_000, () => 0.5)).toBe(500);
    expect(backoffDelay(0, 500, 30_000, () => 0)).toBe(400);
    expect(backoffDelay(0, 500, 30_000, () => 1)).toBeCloseTo(600, 6);
    expect(backoffDelay(3, 500, 30_000, () => 0.5)).toBe(4000);
    expect(backoffDelay(20, 500, 30_000, () => 1)).toBe(30_000);
  });
});
