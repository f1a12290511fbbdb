// The AmiConnector over the `asterisk-manager` package. The library opens the socket, logs in,
// sends actions and matches responses to them by ActionID: that we use as it is. Its line reader
// buffers without bound and splits decoded text per chunk, so events are read by our bounded byte
// parser from the library's own socket, and responses are handed back to it as parsed items.
import diagnostics from 'node:diagnostics_channel';
import type net from 'node:net';
import createManager from 'asterisk-manager';
import { AmiActionError, AmiDisconnectedError, AmiLoginError } from '../errors.js';
import type { AmiConnector, AmiSession, AmiSessionHandlers, AmiTarget } from './connector.js';
import { type AmiMessage, AmiParser } from './parser.js';

type Pending = (err: Error) => void;

/** Longest the parser and what it feeds (the engine, the ban path) hold the event loop at once. */
const SLICE_MS = 1;
/** Bytes read but not yet parsed past which the socket is paused (TCP pushes back on Asterisk). */
const INBOX_HIGH = 1 << 20;
/** Bytes parsed between two looks at the clock: ~40 events, well under a millisecond. */
const PIECE = 4096;

function lowerCaseItem(message: AmiMessage): Record<string, string> {
  const item: Record<string, string> = {};
  const f = message.fields;
  for (let i = 0; i + 1 < f.length; i += 2) item[(f[i] ?? '').toLowerCase()] ??= f[i + 1] ?? '';
  return item;
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

/**
 * The socket the library opens inside `open`, seen on Node's `net.client.socket` diagnostics
 * channel (published synchronously by net.createConnection): an observation, no global replaced.
 */
function captureSocket(open: () => void): net.Socket | undefined {
  let captured: net.Socket | undefined;
  const seen = (message: unknown): void => {
    captured ??= (message as { socket: net.Socket }).socket;
  };
  diagnostics.subscribe('net.client.socket', seen);
  try {
    open();
  } finally {
    diagnostics.unsubscribe('net.client.socket', seen);
  }
  return captured;
}

export interface ConnectorOptions {
  /**
   * Asks the kernel to acknowledge what was read at once (TCP_QUICKACK) on the socket of this file
   * descriptor; called after each read. Asterisk leaves Nagle's algorithm on for AMI sessions, so
   * under a flood each small event waits in Asterisk's kernel for our acknowledgement, which Linux
   * delays by up to ~40 ms: acknowledging at once lets it go. Native (the libnftables addon); absent
   * without it.
   */
  readonly quickAck?: ((fd: number) => boolean) | undefined;
}

/** The file descriptor under a connected net.Socket (Node keeps it on its handle; absent on other platforms). */
function socketFd(socket: net.Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

export class AsteriskManagerConnector implements AmiConnector {
  constructor(private readonly options: ConnectorOptions = {}) {}

  connect(target: AmiTarget, handlers: AmiSessionHandlers): Promise<AmiSession> {
    return new Promise((resolve, reject) => {
      const manager = createManager(undefined, target.host, target.username, target.secret, false);
      const pending = new Set<Pending>();
      let connected = false;
      let lastError: Error | undefined;

      const parser = new AmiParser({
        greeting: (t) => {
          handlers.onGreeting(t);
        },
        issue: (i) => {
          handlers.onIssue(i);
        },
        message: (m) => {
          if (m.get('Event') !== undefined) handlers.onEvent(m);
          else if (m.get('Response') !== undefined) manager.emit('rawevent', lowerCaseItem(m));
        },
      });

      const socket = captureSocket(() => {
        manager.connect(target.port, target.host, () => {
          connected = true;
          resolve(session);
        });
      });
      if (socket === undefined) {
        reject(new AmiDisconnectedError('asterisk-manager did not open a socket'));
        return;
      }
      socket.removeAllListeners('data');
      // A flood arrives faster than one loop turn should take to digest it: chunks wait in an inbox
      // and are parsed in slices of SLICE_MS, one slice per turn, so timers, the control API and
      // the kernel's answers keep their turn; past INBOX_HIGH the socket is paused.
      const inbox: Buffer[] = [];
      let inboxBytes = 0;
      let scheduled = false;
      const digest = (budgetMs: number): void => {
        const t0 = performance.now();
        while (inbox.length > 0 && performance.now() - t0 < budgetMs) {
          const chunk = inbox[0] as Buffer;
          // At most PIECE bytes between two looks at the clock (a socket read can be 64 KiB).
          const piece = chunk.length <= PIECE ? chunk : chunk.subarray(0, PIECE);
          if (piece === chunk) inbox.shift();
          else inbox[0] = chunk.subarray(PIECE);
          inboxBytes -= piece.length;
          parser.push(piece);
        }
        if (inboxBytes < INBOX_HIGH / 2 && socket.isPaused()) socket.resume();
      };
      const slice = (): void => {
        scheduled = false;
        digest(SLICE_MS);
        if (inbox.length > 0) {
          scheduled = true;
          setImmediate(slice);
        }
      };
      // The library set the socket to utf-8, so chunks come as strings (decoded safely across chunk
      // boundaries by Node); re-encoding them for the byte parser costs ~2 % of bench:ingest CPU.
      const quickAck = this.options.quickAck;
      // false: not possible on this socket (no descriptor, or the option refused): not tried again.
      let ackFd: number | false | undefined = quickAck === undefined ? false : undefined;
      socket.on('data', (chunk: Buffer | string) => {
        if (quickAck !== undefined && ackFd !== false) {
          ackFd ??= socketFd(socket) ?? false;
          if (ackFd !== false && !quickAck(ackFd)) ackFd = false;
        }
        const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
        inbox.push(bytes);
        inboxBytes += bytes.length;
        if (inboxBytes > INBOX_HIGH) socket.pause();
        if (!scheduled) {
          scheduled = true;
          setImmediate(slice);
        }
      });
      socket.on('error', (err) => {
        lastError = err;
      });
      socket.on('close', () => {
        // What arrived before the close is still read, in order, before the close is told.
        digest(Number.POSITIVE_INFINITY);
        const err = new AmiDisconnectedError(
          lastError === undefined ? 'connection closed by peer' : `connection failed: ${lastError.message}`,
          lastError,
        );
        for (const fail of pending) fail(err);
        pending.clear();
        if (connected) handlers.onClose(lastError);
        else reject(err);
      });

      const track = <T>(run: (ok: (v: T) => void, fail: Pending) => void): Promise<T> =>
        new Promise<T>((ok, fail) => {
          const f: Pending = (e) => {
            pending.delete(f);
            fail(e);
          };
          pending.add(f);
          run((v) => {
            pending.delete(f);
            ok(v);
          }, f);
        });

      const session: AmiSession = {
        login: () =>
          track<undefined>((ok, fail) => {
            manager.login((err) => {
              if (err === undefined || err === null) ok(undefined);
              else fail(new AmiLoginError(`login as "${target.username}" refused: ${text(err.message) || 'no reason given'}`));
            });
          }),
        action: (fields) =>
          track<Record<string, string>>((ok, fail) => {
            manager.action({ ...fields }, (err, res) => {
              if (err !== undefined && err !== null) {
                fail(new AmiActionError(`${fields.Action ?? 'action'} failed: ${text(err.message) || 'Response: Error'}`));
              } else {
                const out: Record<string, string> = {};
                for (const [k, v] of Object.entries(res ?? {})) out[k] = text(v);
                ok(out);
              }
            });
          }),
        destroy: () => {
          socket.destroy();
        },
      };
    });
  }
}
