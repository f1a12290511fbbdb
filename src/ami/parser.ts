// The AMI wire parser: bytes in, messages out. It never sees a socket, and every buffer is bounded.

export type Header = readonly [name: string, value: string];

export class AmiMessage {
  /**
   * @param bareLineFeed some lines of the block ended in CRLF and some in a bare LF: Asterisk
   * ends every line with CRLF, so a bare LF came from inside a value.
   */
  constructor(
    readonly headers: readonly Header[],
    readonly bareLineFeed = false,
  ) {}

  /** Header value by case-insensitive name; the first occurrence wins, as in Asterisk. */
  get(name: string): string | undefined {
    // Asterisk writes canonical case, so an exact match is the common, cheap path.
    for (const [k, v] of this.headers) if (k === name) return v;
    const lower = name.toLowerCase();
    for (const [k, v] of this.headers) if (k.length === name.length && k.toLowerCase() === lower) return v;
    return undefined;
  }
}

export type ParserIssueKind = 'line-too-long' | 'too-many-headers' | 'malformed-line' | 'truncated';

export interface ParserIssue {
  readonly kind: ParserIssueKind;
  readonly detail: string;
}

export interface ParserHandlers {
  message(message: AmiMessage): void;
  greeting?(text: string): void;
  issue?(issue: ParserIssue): void;
}

export interface ParserLimits {
  /** Longest line kept, in bytes; longer lines are dropped with their block. */
  readonly maxLineBytes: number;
  /** Most headers in one block; beyond that the block is dropped. */
  readonly maxHeaders: number;
}

export const DEFAULT_LIMITS: ParserLimits = { maxLineBytes: 8192, maxHeaders: 512 };

const LF = 0x0a;
const GREETING = 'Asterisk Call Manager/';

export class AmiParser {
  private pending: Buffer | undefined;
  private discardingLine = false;
  private headers: Header[] = [];
  private damaged: ParserIssue | undefined;
  private firstLine = true;
  private crlfLines = 0;
  private lfLines = 0;

  constructor(
    private readonly handlers: ParserHandlers,
    private readonly limits: ParserLimits = DEFAULT_LIMITS,
  ) {}

  /** Bytes held back waiting for a line end (bounded by maxLineBytes). */
  get bufferedBytes(): number {
    return this.pending?.length ?? 0;
  }

  push(chunk: Buffer): void {
    const data = this.pending === undefined ? chunk : Buffer.concat([this.pending, chunk]);
    this.pending = undefined;
    const lastLf = data.lastIndexOf(LF);
    if (lastLf === -1) {
      this.keepPartial(data);
      return;
    }
    // Splitting at LF bytes never cuts a UTF-8 sequence, so the complete lines decode as one string.
    const lines = data.toString('utf8', 0, lastLf).split('\n');
    for (const line of lines) this.line(line);
    if (lastLf + 1 < data.length) this.keepPartial(Buffer.from(data.subarray(lastLf + 1)));
  }

  /** Call at end of input: a block left open is reported as truncated. */
  end(): void {
    if (this.pending !== undefined || this.headers.length > 0 || this.damaged !== undefined) {
      this.report({ kind: 'truncated', detail: 'input ended inside a message' });
    }
    this.pending = undefined;
    this.reset();
  }

  private keepPartial(bytes: Buffer): void {
    if (this.discardingLine || bytes.length === 0) return;
    if (bytes.length > this.limits.maxLineBytes) {
      this.discardingLine = true;
      this.damage({ kind: 'line-too-long', detail: `a line exceeded ${this.limits.maxLineBytes} bytes` });
      return;
    }
    this.pending = bytes;
  }

  private line(raw: string): void {
    if (this.discardingLine) {
      // The tail of an over-long line: drop it.
      this.discardingLine = false;
      return;
    }
    const crlf = raw.endsWith('\r');
    const line = crlf ? raw.slice(0, -1) : raw;
    if (this.firstLine) {
      this.firstLine = false;
      if (line.startsWith(GREETING)) {
        this.handlers.greeting?.(line);
        return;
      }
    }
    if (line === '') {
      this.endBlock();
      return;
    }
    if (this.damaged !== undefined) return;
    if (line.length > this.limits.maxLineBytes) {
      this.damage({ kind: 'line-too-long', detail: `a line exceeded ${this.limits.maxLineBytes} bytes` });
      return;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) {
      this.damage({ kind: 'malformed-line', detail: `not a header: ${JSON.stringify(line.slice(0, 80))}` });
      return;
    }
    if (this.headers.length >= this.limits.maxHeaders) {
      this.damage({ kind: 'too-many-headers', detail: `a message exceeded ${this.limits.maxHeaders} headers` });
      return;
    }
    let start = colon + 1;
    while (line.charCodeAt(start) === 0x20 || line.charCodeAt(start) === 0x09) start++;
    this.headers.push([line.slice(0, colon), line.slice(start)]);
    if (crlf) this.crlfLines++;
    else this.lfLines++;
  }

  private damage(issue: ParserIssue): void {
    this.damaged ??= issue;
    this.headers = [];
  }

  private endBlock(): void {
    if (this.damaged !== undefined) this.report(this.damaged);
    else if (this.headers.length > 0) this.handlers.message(new AmiMessage(this.headers, this.crlfLines > 0 && this.lfLines > 0));
    this.reset();
  }

  private reset(): void {
    this.headers = [];
    this.damaged = undefined;
    this.crlfLines = 0;
    this.lfLines = 0;
  }

  private report(issue: ParserIssue): void {
    this.handlers.issue?.(issue);
  }
}
