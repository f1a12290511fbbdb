// Reads Asterisk's security log (res_security_log): one `Key="value",…` line per event.
import { AmiMessage, type Header } from './parser.js';

const PAIR = /([A-Za-z]+)="([^"]*)"(?:,|$)/y;
const MARK = 'SecurityEvent="';

export type LogLineResult =
  | { readonly kind: 'event'; readonly message: AmiMessage }
  | { readonly kind: 'skip' }
  | { readonly kind: 'malformed'; readonly reason: string };

/**
 * Turns one log line into the AMI message Asterisk would have sent for the same event.
 * Values are not escaped in this format, so a line where a key repeats (a value forged
 * to look like another field) is refused rather than guessed at.
 */
export function parseSecurityLogLine(line: string): LogLineResult {
  const at = line.indexOf(MARK);
  if (at === -1) return { kind: 'skip' };
  const headers: Header[] = [];
  const seen = new Set<string>();
  PAIR.lastIndex = at;
  const body = line.trimEnd();
  while (PAIR.lastIndex < body.length) {
    const start = PAIR.lastIndex;
    const m = PAIR.exec(body);
    if (m === null) return { kind: 'malformed', reason: `unparsable text at column ${start + 1}` };
    const key = m[1] ?? '';
    if (seen.has(key)) return { kind: 'malformed', reason: `field ${key} appears twice` };
    seen.add(key);
    headers.push([key === 'SecurityEvent' ? 'Event' : key, m[2] ?? '']);
  }
  return { kind: 'event', message: AmiMessage.of(headers) };
}
