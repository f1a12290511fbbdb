import { describe, expect, it } from 'vitest';
import { type AmiMessage, AmiParser, type ParserIssue } from '../src/ami/parser.js';
import { RAW_FIXTURES, fixture } from './helpers/fixtures.js';

interface Parsed {
  greetings: string[];
  messages: AmiMessage[];
  issues: ParserIssue[];
}

function parse(chunks: readonly Buffer[], limits?: { maxLineBytes: number; maxHeaders: number }): Parsed {
  const out: Parsed = { greetings: [], messages: [], issues: [] };
  const parser = new AmiParser(
    {
      greeting: (g) => out.greetings.push(g),
      message: (m) => out.messages.push(m),
      issue: (i) => out.issues.push(i),
    },
    limits,
  );
  for (const c of chunks) parser.push(c);
  parser.end();
  return out;
}

/** A compact, comparable picture of a parse. */
function digest(p: Parsed): string {
  return JSON.stringify([p.greetings, p.messages.map((m) => m.headers), p.issues]);
}

describe('AmiParser on captured bytes', () => {
  for (const name of RAW_FIXTURES) {
    const bytes = fixture(name);
    const whole = parse([bytes]);

    it(`${name}: greeting, responses and every event block`, () => {
      expect(whole.greetings).toEqual(['Asterisk Call Manager/11.0.0']);
      expect(whole.issues).toEqual([]);
      const blankLineEnds = bytes.toString('latin1').split('\r\n\r\n').length - 1;
      expect(whole.messages.length).toBe(blankLineEnds);
      expect(whole.messages.every((m) => m.headers.length > 0)).toBe(true);
      expect(whole.messages[0]?.get('response')).toBe('Success');
    });

    it(`${name}: the same messages when split at every byte offset`, () => {
      // The parser holds nothing across a blank line, and a split at any offset leaves every block
      // before it whole: so splitting each block (greeting line included) at each of its own
      // offsets, with a fresh parser, covers every split of the file, in linear time instead of
      // re-parsing the whole file once per offset.
      const pieces: Buffer[] = [];
      const greetingEnd = bytes.indexOf('\r\n') + 2;
      pieces.push(bytes.subarray(0, greetingEnd));
      let from = greetingEnd;
      for (let end = bytes.indexOf('\r\n\r\n', from); end !== -1; end = bytes.indexOf('\r\n\r\n', from)) {
        pieces.push(bytes.subarray(from, end + 4));
        from = end + 4;
      }
      if (from < bytes.length) pieces.push(bytes.subarray(from));
      expect(Buffer.concat(pieces).equals(bytes)).toBe(true);
      const mismatches: string[] = [];
      for (const [n, piece] of pieces.entries()) {
        const alone = digest(parse([piece]));
        for (let at = 0; at <= piece.length; at++) {
          if (digest(parse([piece.subarray(0, at), piece.subarray(at)])) !== alone) mismatches.push(`piece ${n} at ${at}`);
        }
      }
      expect(mismatches).toEqual([]);
      // And the pieces parsed one after another are the whole file's parse.
      expect(digest(parse(pieces))).toBe(digest(whole));
    });

    it(`${name}: the same messages fed one byte at a time`, () => {
      const chunks = Array.from({ length: bytes.length }, (_, i) => bytes.subarray(i, i + 1));
      expect(digest(parse(chunks))).toBe(digest(whole));
    });
  }

  it('reads headers case-insensitively, first occurrence wins, repeated headers kept in order', () => {
    const p = parse([Buffer.from('Event: X\r\nChanVariable: a=1\r\nchanvariable: b=2\r\n\r\n')]);
    const m = p.messages[0];
    expect(m?.get('CHANVARIABLE')).toBe('a=1');
    expect(m?.headers).toEqual([
      ['Event', 'X'],
      ['ChanVariable', 'a=1'],
      ['chanvariable', 'b=2'],
    ]);
  });

  it('accepts bare LF line ends and values with colons', () => {
    const p = parse([Buffer.from('Event: X\nRemoteAddress: IPV6/UDP/fd00::2/5060\nEmpty: \n\n')]);
    expect(p.messages[0]?.get('RemoteAddress')).toBe('IPV6/UDP/fd00::2/5060');
    expect(p.messages[0]?.get('Empty')).toBe('');
  });
});

describe('AmiParser on hostile input', () => {
  it('keeps its buffer bounded when a line never ends, and recovers afterwards', () => {
    const issues: ParserIssue[] = [];
    const messages: AmiMessage[] = [];
    const parser = new AmiParser({ message: (m) => messages.push(m), issue: (i) => issues.push(i) }, { maxLineBytes: 1024, maxHeaders: 64 });
    parser.push(Buffer.from('Event: Flood\r\nJunk: '));
    const junk = Buffer.alloc(64 * 1024, 0x41);
    for (let i = 0; i < 200; i++) parser.push(junk); // 12.5 MiB without a line end
    expect(parser.bufferedBytes).toBeLessThanOrEqual(1024);
    parser.push(Buffer.from('\r\n\r\nEvent: After\r\nA: 1\r\n\r\n'));
    expect(issues.map((i) => i.kind)).toEqual(['line-too-long']);
    expect(messages.map((m) => m.get('Event'))).toEqual(['After']);
  });

  it('drops a block with 10 000 headers and parses the next one', () => {
    const lines = Array.from({ length: 10_000 }, (_, i) => `H${i}: v`).join('\r\n');
    const p = parse([Buffer.from(`Event: Big\r\n${lines}\r\n\r\nEvent: Small\r\nA: 1\r\n\r\n`)]);
    expect(p.issues.map((i) => i.kind)).toEqual(['too-many-headers']);
    expect(p.messages.map((m) => m.get('Event'))).toEqual(['Small']);
  });

  it('drops a block with a line that is not a header', () => {
    const p = parse([Buffer.from('Event: Bad\r\nno colon here\r\n\r\nEvent: Good\r\n\r\n')]);
    expect(p.issues.map((i) => i.kind)).toEqual(['malformed-line']);
    expect(p.messages.map((m) => m.get('Event'))).toEqual(['Good']);
  });

  it('survives non-UTF-8 bytes, including a multi-byte character split across chunks', () => {
    const bad = Buffer.from([0x45, 0x76, 0x65, 0x6e, 0x74, 0x3a, 0x20, 0xff, 0xfe, 0x0d, 0x0a]); // "Event: \xff\xfe"
    const euro = Buffer.from('AccountID: €uro\r\n\r\n');
    const at = euro.indexOf(0xe2) + 1; // inside the 3-byte euro sign
    const p = parse([bad, euro.subarray(0, at), euro.subarray(at)]);
    expect(p.messages).toHaveLength(1);
    expect(p.messages[0]?.get('Event')).toBe('\ufffd\ufffd');
    expect(p.messages[0]?.get('AccountID')).toBe('€uro');
  });

  it('reports a block cut off by the end of input', () => {
    const p = parse([Buffer.from('Event: Cut\r\nA: 1\r\n')]);
    expect(p.messages).toEqual([]);
    expect(p.issues.map((i) => i.kind)).toEqual(['truncated']);
  });

  it('treats a greeting-looking line after the first as an ordinary line', () => {
    const p = parse([Buffer.from('Event: X\r\n\r\nAsterisk Call Manager/1.0\r\n\r\n')]);
    expect(p.greetings).toEqual([]);
    expect(p.issues.map((i) => i.kind)).toEqual(['malformed-line']);
  });
});
