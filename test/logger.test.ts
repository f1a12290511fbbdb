import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/log/logger.js';

function capture(format: 'json' | 'text' | 'auto', isTTY: boolean, level: 'info' | 'debug' = 'info') {
  const stream = new PassThrough();
  const chunks: string[] = [];
  stream.on('data', (d: Buffer) => chunks.push(d.toString()));
  const log = createLogger({ level, format, isTTY, stream, secrets: ['hunter2'] });
  return { log, text: () => chunks.join('') };
}

describe('logger', () => {
  it('a line below the level is never formatted (LOG_LEVEL=warn costs nothing per ban line)', () => {
    const stream = new PassThrough();
    const log = createLogger({ level: 'warn', format: 'json', isTTY: false, stream });
    let read = 0;
    const meta = Object.defineProperty({}, 'ip', { enumerable: true, get: () => (read++, '192.0.2.1') });
    log.info('ban', meta);
    log.debug('detail', meta);
    expect(read).toBe(0);
    log.warn('kept', meta);
    expect(read).toBeGreaterThan(0);
  });

  it('auto = JSON when stdout is not a terminal, one object per line', () => {
    const { log, text } = capture('auto', false);
    log.info('ban', { ip: '192.0.2.1', failures: 3 });
    const line = JSON.parse(text().trim()) as Record<string, unknown>;
    expect(line).toMatchObject({ level: 'info', message: 'ban', ip: '192.0.2.1', failures: 3 });
    expect(typeof line.timestamp).toBe('string');
  });

  it('auto = readable key=value text on a terminal', () => {
    const { log, text } = capture('auto', true);
    log.warn('AMI connection lost', { host: '127.0.0.1', error: 'connection closed by peer' });
    expect(text()).toMatch(/^\S+Z warn {2}AMI connection lost host=127\.0\.0\.1 error="connection closed by peer"\n$/);
  });

  it('escapes control characters of attacker-supplied values in text lines', () => {
    const { log, text } = capture('text', true);
    log.info('security event', { account: '\u001b[31mroot\u0007' });
    expect(text()).toContain('account="\\u001b[31mroot\\u0007"');
    expect(text()).not.toContain('\u001b');
  });

  it('masks secrets by key and by value', () => {
    const { log, text } = capture('json', false);
    log.info('x', { secret: 'abc', ExpectedResponse: 'def', note: 'password is hunter2' });
    log.error('login as "u" with hunter2 failed');
    const out = text();
    expect(out).not.toContain('hunter2');
    expect(out).not.toContain('"abc"');
    expect(out).not.toContain('"def"');
    expect(out.match(/\*{8}/g)?.length).toBe(4);
  });

  it('masks every occurrence of every secret, and leaves other values as they are', () => {
    const stream = new PassThrough();
    let out = '';
    stream.on('data', (d: Buffer) => (out += d.toString()));
    const log = createLogger({ level: 'info', format: 'json', isTTY: false, stream, secrets: ['hunter2', 'fleet-pass'] });
    log.info('x', { a: 'hunter2/fleet-pass/hunter2', b: 'nothing here', c: 3 });
    const line = JSON.parse(out) as Record<string, unknown>;
    expect(line.a).toBe('********/********/********');
    expect(line.b).toBe('nothing here');
    expect(line.c).toBe(3);
  });

  it('does not garble the logs over a secret too short to mean anything', () => {
    const stream = new PassThrough();
    let out = '';
    stream.on('data', (d: Buffer) => (out += d.toString()));
    createLogger({ level: 'info', format: 'json', isTTY: false, stream, secrets: ['s'] }).info('start failed: needs CAP_NET_ADMIN');
    expect(out).toContain('start failed: needs CAP_NET_ADMIN');
  });

  it('debug lines only at debug level', () => {
    const quiet = capture('json', false, 'info');
    quiet.log.debug('detail');
    expect(quiet.text()).toBe('');
    expect(quiet.log.isDebugEnabled()).toBe(false);
    const loud = capture('json', false, 'debug');
    loud.log.child({ component: 'ami' }).debug('detail');
    expect(JSON.parse(loud.text()) as unknown).toMatchObject({ message: 'detail', component: 'ami' });
  });
});
