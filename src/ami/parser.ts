// The AMI wire parser: bytes in, messages out. It never sees a socket, and every buffer is bounded.

export type Header = readonly [name: string, value: string];

export class AmiMessage {
  /**
   * @param fields names and values in turn, as they came: `[name0, value0, name1, value1, …]` (no
   * array per header: a flood parses ten headers per event, 300 000 events in bench:flood A).
   * @param bareLineFeed some lines of the block ended in CRLF and some in a bare LF: Asterisk
   * ends every line with CRLF, so a bare LF came from inside a value.
   */
  constructor(
    readonly fields: readonly string[],
    readonly bareLineFeed = false,
  ) {}

  static of(headers: readonly Header[], bareLineFeed = false): AmiMessage {
    return new AmiMessage(headers.flat(), bareLineFeed);
  }

  /** The headers as (name, value) pairs, made on demand. */
  get headers(): readonly Header[] {
    const out: Header[] = [];
    for (let i = 0; i + 1 < this.fields.length; i += 2) out.push([this.fields[i] ?? '', this.fields[i + 1] ?? '']);
    return out;
  }

  /** Header value by case-insensitive name; the first occurrence wins, as in Asterisk. */
  get(name: string): string | undefined {
    const f = this.fields;
    // Asterisk writes canonical case, so an exact match is the common, cheap path.
    for (let i = 0; i < f.length; i += 2) if (f[i] === name) return f[i + 1];
    const lower = name.toLowerCase();
    for (let i = 0; i < f.length; i += 2) {
      const k = f[i] ?? '';
      if (k.length === name.length && k.toLowerCase() === lower) return f[i + 1];
    }
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
  /**
   * The open block's names and values in turn, in a scratch array reused from block to block
   * (grown once); each message gets a copy of its exact size.
   */
  private readonly scratch: string[] = [];
  private count = 0;
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
    // Splitting at LF bytes never cuts a UTF-8 sequence, so the complete lines decode as one string
    // (walked line by line: no array of them).
    const text = data.toString('utf8', 0, lastLf);
    for (let from = 0; ; ) {
      const lf = text.indexOf('\n', from);
      this.line(text, from, lf === -1 ? text.length : lf);
      if (lf === -1) break;
      from = lf + 1;
    }
    if (lastLf + 1 < data.length) this.keepPartial(Buffer.from(data.subarray(lastLf + 1)));
  }

  /** Call at end of input: a block left open is reported as truncated. */
  end(): void {
    if (this.pending !== undefined || this.count > 0 || this.damaged !== undefined) {
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

  /** The line text[from, to) (its LF excluded); only its name and value are cut out of the text. */
  private line(text: string, from: number, to: number): void {
    if (this.discardingLine) {
      // The tail of an over-long line: drop it.
      this.discardingLine = false;
      return;
    }
    const crlf = to > from && text.charCodeAt(to - 1) === 0x0d;
    const end = crlf ? to - 1 : to;
    if (this.firstLine) {
      this.firstLine = false;
      if (text.startsWith(GREETING, from)) {
        this.handlers.greeting?.(text.slice(from, end));
        return;
      }
    }
    if (end === from) {
      this.endBlock();
      return;
    }
    if (this.damaged !== undefined) return;
    if (end - from > this.limits.maxLineBytes) {
      this.damage({ kind: 'line-too-long', detail: `a line exceeded ${this.limits.maxLineBytes} bytes` });
      return;
    }
    const colon = text.indexOf(':', from);
    if (colon <= from || colon >= end) {
      this.damage({ kind: 'malformed-line', detail: `not a header: ${JSON.stringify(text.slice(from, Math.min(end, from + 80)))}` });
      return;
    }
    if (this.count >= 2 * this.limits.maxHeaders) {
      this.damage({ kind: 'too-many-headers', detail: `a message exceeded ${this.limits.maxHeaders} headers` });
      return;
    }
    let start = colon + 1;
    while (start < end && (text.charCodeAt(start) === 0x20 || text.charCodeAt(start) === 0x09)) start++;
    this.scratch[this.count++] = text.slice(from, colon);
    this.scratch[this.count++] = text.slice(start, end);
    if (crlf) this.crlfLines++;
    else this.lfLines++;
  }

  private damage(issue: ParserIssue): void {
    this.damaged ??= issue;
    this.clearFields();
  }

  private endBlock(): void {
    if (this.damaged !== undefined) this.report(this.damaged);
    else if (this.count > 0) this.handlers.message(new AmiMessage(this.scratch.slice(0, this.count), this.crlfLines > 0 && this.lfLines > 0));
    this.reset();
  }

  private reset(): void {
    this.clearFields();
    this.damaged = undefined;
    this.crlfLines = 0;
    this.lfLines = 0;
  }

  private clearFields(): void {
    // A rare large block's strings are let go (they would stay held past their message).
    if (this.count > 64) this.scratch.length = 0;
    this.count = 0;
  }

  private report(issue: ParserIssue): void {
    this.handlers.issue?.(issue);
  }
}
