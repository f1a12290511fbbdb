// Turns AMI messages into typed security events (ami-security-reference.md §2–§4).
import { type IpFamily, parseIp } from '../common/ip.js';
import { type SecurityEventName, isSecurityEventName } from '../common/security-events.js';
import type { AmiMessage } from './parser.js';

export type Transport = 'UDP' | 'TCP' | 'TLS' | 'WS' | 'WSS';

export interface AmiAddress {
  readonly family: IpFamily;
  /** Absent when Asterisk omitted the transport segment (3-part form). */
  readonly transport: Transport | null;
  readonly ip: string;
  /** The IPv6 `%zone` the address carried, if any: such an address is link-scoped. */
  readonly zone: string | null;
  readonly port: number | null;
}

export interface EventTime {
  /** As Asterisk wrote it, in Asterisk's local time zone. */
  readonly text: string;
  readonly epochMs: number;
}

export interface SecurityEvent {
  readonly name: SecurityEventName;
  readonly severity: string;
  readonly service: string;
  readonly eventVersion: string;
  readonly accountId: string;
  readonly sessionId: string;
  /**
   * LocalAddress as Asterisk wrote it (null when absent): informational, so not parsed on the ban
   * path (parseAmiAddress reads it; a bad one does not void the event).
   */
  readonly localAddressText: string | null;
  /** null when Asterisk wrote `(null)`. */
  readonly remoteAddress: AmiAddress | null;
  /** EventTV as Asterisk wrote it (null when absent); parseEventTime reads it (replay does). */
  readonly eventTv: string | null;
  readonly aclName: string | null;
  readonly requestType: string | null;
}

export type Classified =
  | { readonly kind: 'security'; readonly event: SecurityEvent }
  | { readonly kind: 'non-security'; readonly name: string }
  | { readonly kind: 'unknown'; readonly name: string }
  | { readonly kind: 'malformed'; readonly name: string; readonly reason: string };

const TRANSPORTS: ReadonlySet<string> = new Set(['UDP', 'TCP', 'TLS', 'WS', 'WSS']);
const NULL_TEXT = '(null)';

/** Parses `IPV4|IPV6/[transport/]addr/port`; `(null)` address = null. Returns a string on error. */
export function parseAmiAddress(text: string): AmiAddress | null | string {
  // Cut at the slashes by position (two of these per event in a flood: no array of parts).
  const s1 = text.indexOf('/');
  const s2 = s1 === -1 ? -1 : text.indexOf('/', s1 + 1);
  const s3 = s2 === -1 ? -1 : text.indexOf('/', s2 + 1);
  if (s2 === -1 || (s3 !== -1 && text.includes('/', s3 + 1))) return `expected 3 or 4 "/"-separated parts in ${JSON.stringify(text)}`;
  const v4 = s1 === 4 && text.startsWith('IPV4');
  const v6 = s1 === 4 && text.startsWith('IPV6');
  if (!v4 && !v6) return `unknown address family in ${JSON.stringify(text)}`;
  let transport: Transport | null = null;
  // Four parts: family/transport/address/port; three: family/address/port.
  const addrFrom = s3 === -1 ? s1 + 1 : s2 + 1;
  const portFrom = s3 === -1 ? s2 + 1 : s3 + 1;
  if (s3 !== -1) {
    const t = text.slice(s1 + 1, s2);
    if (!TRANSPORTS.has(t)) return `unknown transport in ${JSON.stringify(text)}`;
    transport = t as Transport;
  }
  const addrText = text.slice(addrFrom, portFrom - 1);
  const portText = text.slice(portFrom);
  if (addrText === NULL_TEXT) return null;
  const parsed = parseIp(addrText);
  if (parsed === null) return `invalid IP address in ${JSON.stringify(text)}`;
  // IPv4-mapped IPv6 normalizes to IPv4; a plain IPv6 text under IPV4 is inconsistent.
  if (v4 && parsed.family !== 'ipv4') return `IPV4 prefix with an IPv6 address in ${JSON.stringify(text)}`;
  let port: number | null = null;
  if (portText !== NULL_TEXT) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) return `invalid port in ${JSON.stringify(text)}`;
    port = Number(portText);
  }
  return { family: parsed.family, transport, ip: parsed.ip, zone: parsed.zone ?? null, port };
}

const EVENT_TV = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?([+-])(\d{2}):?(\d{2})$/;

/** Parses Asterisk's `%FT%T.%q%z` (e.g. 2026-01-15T10:23:45.123+0100). */
export function parseEventTime(text: string): EventTime | null {
  const m = EVENT_TV.exec(text);
  if (m === null) return null;
  const n = (i: number): number => Number(m[i] ?? '0');
  const ms = Number((m[7] ?? '0').padEnd(3, '0').slice(0, 3));
  const offsetMinutes = (m[8] === '-' ? -1 : 1) * (n(9) * 60 + n(10));
  const utc = Date.UTC(n(1), n(2) - 1, n(3), n(4), n(5), n(6), ms) - offsetMinutes * 60_000;
  return Number.isFinite(utc) ? { text, epochMs: utc } : null;
}

function address(msg: AmiMessage, header: string): AmiAddress | null | string {
  const value = msg.get(header);
  if (value === undefined) return `missing ${header}`;
  const parsed = parseAmiAddress(value);
  return typeof parsed === 'string' ? `${header}: ${parsed}` : parsed;
}

/** Header names equal but for ASCII case (Asterisk's names are ASCII), compared without allocating. */
function sameName(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0x80 || y >= 0x80) return a.toLowerCase() === b.toLowerCase();
    const lx = x >= 0x41 && x <= 0x5a ? x | 0x20 : x;
    const ly = y >= 0x41 && y <= 0x5a ? y | 0x20 : y;
    if (lx !== ly) return false;
  }
  return true;
}

/** The first header whose name came before (a dozen headers: comparing pairs allocates nothing). */
function repeatedHeader(msg: AmiMessage): string | null {
  const f = msg.fields;
  for (let i = 2; i < f.length; i += 2) {
    const k = f[i] ?? '';
    for (let j = 0; j < i; j += 2) if (sameName(f[j] ?? '', k)) return k;
  }
  return null;
}

/** Classifies an event message; never throws. */
export function classifyEvent(msg: AmiMessage): Classified {
  const name = msg.get('Event') ?? '';
  if (!isSecurityEventName(name)) {
    const privilege = msg.get('Privilege') ?? '';
    return privilege.split(',').includes('security') ? { kind: 'unknown', name } : { kind: 'non-security', name };
  }
  // One value per header: a repeat (a second RemoteAddress, or a line smuggled in through a line
  // feed inside a value) would let the sender choose which one we read.
  const repeated = repeatedHeader(msg);
  if (repeated !== null) return { kind: 'malformed', name, reason: `header ${repeated} appears twice` };
  if (msg.bareLineFeed) return { kind: 'malformed', name, reason: 'a value holds a bare line feed' };
  const severity = msg.get('Severity');
  const service = msg.get('Service');
  if (severity === undefined || service === undefined) {
    return { kind: 'malformed', name, reason: 'missing Severity or Service' };
  }
  const remote = address(msg, 'RemoteAddress');
  if (typeof remote === 'string') return { kind: 'malformed', name, reason: remote };
  return {
    kind: 'security',
    event: {
      name,
      severity,
      service,
      eventVersion: msg.get('EventVersion') ?? '',
      accountId: msg.get('AccountID') ?? '',
      sessionId: msg.get('SessionID') ?? '',
      localAddressText: msg.get('LocalAddress') ?? null,
      remoteAddress: remote,
      eventTv: msg.get('EventTV') ?? null,
      aclName: msg.get('ACLName') ?? null,
      requestType: msg.get('RequestType') ?? null,
    },
  };
}
