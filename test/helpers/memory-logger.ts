import type { LogMeta, Logger } from '../../src/log/logger.js';

export interface LogLine {
  readonly level: 'error' | 'warn' | 'info' | 'debug';
  readonly message: string;
  readonly meta: LogMeta;
}

/** A Logger that keeps its lines, for assertions. */
export class MemoryLogger implements Logger {
  constructor(
    readonly lines: LogLine[] = [],
    private readonly debugOn = true,
    private readonly base: LogMeta = {},
  ) {}
  error(message: string, meta: LogMeta = {}): void {
    this.lines.push({ level: 'error', message, meta: { ...this.base, ...meta } });
  }
  warn(message: string, meta: LogMeta = {}): void {
    this.lines.push({ level: 'warn', message, meta: { ...this.base, ...meta } });
  }
  info(message: string, meta: LogMeta = {}): void {
    this.lines.push({ level: 'info', message, meta: { ...this.base, ...meta } });
  }
  debug(message: string, meta: LogMeta = {}): void {
    if (this.debugOn) this.lines.push({ level: 'debug', message, meta: { ...this.base, ...meta } });
  }
  isDebugEnabled(): boolean {
    return this.debugOn;
  }
  isInfoEnabled(): boolean {
    return true;
  }
  child(meta: LogMeta): Logger {
    return new MemoryLogger(this.lines, this.debugOn, { ...this.base, ...meta });
  }
  messages(level?: LogLine['level']): string[] {
    return this.lines.filter((l) => level === undefined || l.level === level).map((l) => l.message);
  }
}
