import type { Writable } from 'node:stream';
import winston from 'winston';
import type { LogFormat, LogLevel } from '../config/config.js';

export type LogMeta = Readonly<Record<string, unknown>>;

/** The logging surface the rest of ami2ban sees; only this module knows winston. */
export interface Logger {
  error(message: string, meta?: LogMeta): void;
  warn(message: string, meta?: LogMeta): void;
  info(message: string, meta?: LogMeta): void;
  debug(message: string, meta?: LogMeta): void;
  isDebugEnabled(): boolean;
  isInfoEnabled(): boolean;
  child(meta: LogMeta): Logger;
}

export interface LoggerOptions {
  readonly level: LogLevel;
  readonly format: LogFormat;
  /** Whether stdout is a terminal (decides `auto`). */
  readonly isTTY: boolean;
  /** Values that must never appear in a log line. */
  readonly secrets?: readonly string[];
  /** Where lines go; stdout by default. */
  readonly stream?: Writable;
}

const SENSITIVE_KEY = /secret|password|token|expectedresponse/i;
const MASK = '********';

/** The text with every secret masked; the same string when it holds none (no copy per field). */
function masked(s: string, secrets: readonly string[]): string {
  let out = s;
  for (const secret of secrets) if (out.includes(secret)) out = out.split(secret).join(MASK);
  return out;
}

const redact = winston.format((info, options: unknown) => {
  const { secrets } = options as { secrets: readonly string[] };
  for (const key of Object.keys(info)) {
    const value: unknown = info[key];
    if (SENSITIVE_KEY.test(key)) info[key] = MASK;
    else if (typeof value === 'string' && secrets.length > 0) info[key] = masked(value, secrets);
  }
  if (typeof info.message === 'string' && secrets.length > 0) info.message = masked(info.message, secrets);
  return info;
});

function text(value: unknown): string {
  // Quoted (and so escaped) when it has spaces, quotes or control characters: attacker-supplied
  // AccountIDs and Call-IDs must not drive the operator's terminal.
  // eslint-disable-next-line no-control-regex
  if (typeof value === 'string') return /[\s"=\u0000-\u001f\u007f]/.test(value) || value === '' ? JSON.stringify(value) : value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}

const human = winston.format.printf((info) => {
  const { level, message, timestamp, ...meta } = info;
  const fields = Object.entries(meta)
    .map(([k, v]) => `${k}=${text(v)}`)
    .join(' ');
  return `${String(timestamp)} ${level.padEnd(5)} ${String(message)}${fields === '' ? '' : ` ${fields}`}`;
});

class WinstonLogger implements Logger {
  constructor(private readonly w: winston.Logger) {}
  error(message: string, meta?: LogMeta): void {
    this.w.error(message, meta);
  }
  warn(message: string, meta?: LogMeta): void {
    this.w.warn(message, meta);
  }
  // winston formats a line before its transport drops it for its level: a line below the level is
  // not handed over at all (with LOG_LEVEL=warn, every `ban` line was still stringified).
  info(message: string, meta?: LogMeta): void {
    if (this.w.isInfoEnabled()) this.w.info(message, meta);
  }
  debug(message: string, meta?: LogMeta): void {
    if (this.w.isDebugEnabled()) this.w.debug(message, meta);
  }
  isDebugEnabled(): boolean {
    return this.w.isDebugEnabled();
  }
  isInfoEnabled(): boolean {
    return this.w.isInfoEnabled();
  }
  child(meta: LogMeta): Logger {
    return new WinstonLogger(this.w.child(meta));
  }
}

export function createLogger(options: LoggerOptions): Logger {
  const json = options.format === 'json' || (options.format === 'auto' && !options.isTTY);
  // Masking a one- or two-letter "secret" inside every word would garble the logs and hide nothing.
  const secrets = (options.secrets ?? []).filter((s) => s.length >= 4);
  // winston types its transport instances as interfaces, which this rule cannot follow.
  /* eslint-disable @typescript-eslint/no-unsafe-class-instance-assignment */
  const transport: winston.transport =
    options.stream === undefined ? new winston.transports.Console() : new winston.transports.Stream({ stream: options.stream });
  /* eslint-enable @typescript-eslint/no-unsafe-class-instance-assignment */
  const w = winston.createLogger({
    level: options.level,
    levels: { error: 0, warn: 1, info: 2, debug: 3 },
    format: winston.format.combine(
      redact({ secrets }),
      winston.format.timestamp(),
      json ? winston.format.json() : human,
    ),
    transports: [transport],
  });
  return new WinstonLogger(w);
}

/** A logger that drops everything (replay output and tests). */
export const silentLogger: Logger = {
  error: () => undefined,
  warn: () => undefined,
  info: () => undefined,
  debug: () => undefined,
  isDebugEnabled: () => false,
  isInfoEnabled: () => false,
  child: () => silentLogger,
};
