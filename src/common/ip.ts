// Address helpers shared by config, ami and engine. A pure leaf: imports nothing of ours.
import { isIP } from 'node:net';

export type IpFamily = 'ipv4' | 'ipv6';

export interface IpAddress {
  readonly family: IpFamily;
  /** Canonical text: dotted quad, or compressed lower-case IPv6 without zone. */
  readonly ip: string;
  /** The `%zone` suffix an IPv6 text carried, without the `%`. */
  readonly zone?: string;
}

/** The eight 16-bit groups of a valid IPv6 text. */
export function ipv6Groups(text: string): number[] {
  const groups: number[] = [];
  const dotted = text.includes('.') ? text.slice(text.lastIndexOf(':') + 1) : '';
  const hex = dotted === '' ? text : text.slice(0, text.length - dotted.length);
  const [head = '', tail] = hex.split('::');
  const parse = (part: string): number[] => (part === '' ? [] : part.split(':').filter((g) => g !== '').map((g) => parseInt(g, 16)));
  const left = parse(head);
  const right = parse(tail ?? '');
  if (dotted !== '') {
    const o = dotted.split('.').map(Number);
    right.push(((o[0] ?? 0) << 8) | (o[1] ?? 0), ((o[2] ?? 0) << 8) | (o[3] ?? 0));
  }
  groups.push(...left);
  for (let i = left.length + right.length; i < 8; i++) groups.push(0);
  groups.push(...right);
  return groups;
}

/** RFC 5952 text: lower case, no leading zeros, the longest run (≥ 2) of zero groups as `::`. */
function ipv6Text(g: readonly number[]): string {
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number): string => g.slice(from, to).map((x) => x.toString(16)).join(':');
  return bestAt === -1 ? hex(0, 8) : `${hex(0, bestAt)}::${hex(bestAt + bestLen, 8)}`;
}

/**
 * Parses and canonicalizes an address; IPv4-mapped IPv6 becomes IPv4. Returns null if invalid,
 * including a zone on an IPv4 text; an IPv6 zone is kept apart in `zone`.
 */
export function parseIp(text: string): IpAddress | null {
  const zoneAt = text.indexOf('%');
  const bare = zoneAt === -1 ? text : text.slice(0, zoneAt);
  const zone = zoneAt === -1 ? undefined : text.slice(zoneAt + 1);
  const version = isIP(bare);
  if (version === 4) return zone === undefined ? { family: 'ipv4', ip: bare } : null;
  if (version !== 6 || zone === '') return null;
  const g = ipv6Groups(bare);
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    if (zone !== undefined) return null;
    const a = g[6] ?? 0;
    const b = g[7] ?? 0;
    return { family: 'ipv4', ip: `${a >> 8}.${a & 255}.${b >> 8}.${b & 255}` };
  }
  return zone === undefined ? { family: 'ipv6', ip: ipv6Text(g) } : { family: 'ipv6', ip: ipv6Text(g), zone };
}

export type UnbannableReason = 'unspecified' | 'broadcast' | 'multicast' | 'link-local' | 'zone';

const UNBANNABLE_TEXT: Readonly<Record<UnbannableReason, string>> = {
  unspecified: 'the unspecified address',
  broadcast: 'the broadcast address',
  multicast: 'a multicast address',
  'link-local': 'a link-local address (router advertisements and neighbours use these)',
  zone: 'an address with a %zone (link-scoped)',
};

/**
 * Why an address can never be a ban target (no attacker sends from it, or banning it cuts the
 * host off its own link), or null when it can be banned.
 */
export function unbannable(addr: IpAddress): UnbannableReason | null {
  if (addr.zone !== undefined) return 'zone';
  if (addr.family === 'ipv4') {
    const n = ipv4Number(addr.ip);
    if (n === 0) return 'unspecified';
    if (n === 0xffffffff) return 'broadcast';
    if (n >>> 28 === 0xe) return 'multicast';
    if (n >>> 16 === 0xa9fe) return 'link-local';
    return null;
  }
  const g0 = ipv6Groups(addr.ip)[0] ?? 0;
  if (addr.ip === '::') return 'unspecified';
  if (g0 >>> 8 === 0xff) return 'multicast';
  if ((g0 & 0xffc0) === 0xfe80) return 'link-local';
  return null;
}

/** `0.0.0.0 is the unspecified address` */
export function describeUnbannable(ip: string, reason: UnbannableReason): string {
  return `${ip} is ${UNBANNABLE_TEXT[reason]} and is never banned`;
}

export interface Cidr {
  readonly address: IpAddress;
  readonly prefix: number;
}

/** Parses `addr` or `addr/prefix` (v4 or v6). Returns an error text when invalid. */
export function parseCidr(text: string): Cidr | string {
  const slash = text.indexOf('/');
  const addrText = slash === -1 ? text : text.slice(0, slash);
  const address = parseIp(addrText);
  if (address === null) return `"${text}" is not an IP address or CIDR`;
  const max = address.family === 'ipv4' ? 32 : 128;
  if (slash === -1) return { address, prefix: max };
  const prefixText = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText)) return `"${text}" has an invalid prefix length`;
  let prefix = Number(prefixText);
  // ::ffff:10.0.0.0/104 means 10.0.0.0/8
  if (address.family === 'ipv4' && isIP(addrText) === 6) prefix -= 96;
  if (prefix < 0 || prefix > max) return `"${text}" has a prefix length outside 0..${max}`;
  return { address, prefix };
}

/** The 32-bit number of a canonical dotted quad (as parseIp gives), read without allocating. */
function ipv4Number(ip: string): number {
  let n = 0;
  let octet = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 0x2e) {
      n = n * 256 + octet;
      octet = 0;
    } else octet = octet * 10 + (c - 0x30);
  }
  return n * 256 + octet;
}

/** Whether the first `bits` bits of two group lists (of `width`-bit groups) agree. */
function samePrefix(a: readonly number[], b: readonly number[], bits: number, width: number): boolean {
  for (let i = 0; bits > 0; i++, bits -= width) {
    const shift = Math.max(0, width - bits);
    if ((a[i] ?? 0) >>> shift !== (b[i] ?? 0) >>> shift) return false;
  }
  return true;
}

function groupsOf(addr: IpAddress): number[] {
  return addr.family === 'ipv4' ? [ipv4Number(addr.ip)] : ipv6Groups(addr.ip);
}

/** The network of a canonical dotted quad at a prefix length, as a signed 32-bit number (a small integer to V8). */
export function ipv4NetworkNumber(ip: string, prefix: number): number {
  return prefix === 0 ? 0 : ipv4Number(ip) & (~0 << (32 - prefix));
}

/** The network of a CIDR: its address with the host bits cleared. */
export function networkOf(c: Cidr): Cidr {
  if (c.address.family === 'ipv4') {
    const n = c.prefix === 0 ? 0 : (ipv4Number(c.address.ip) & (~0 << (32 - c.prefix))) >>> 0;
    return { address: { family: 'ipv4', ip: `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}` }, prefix: c.prefix };
  }
  const g = ipv6Groups(c.address.ip).map((x, i) => {
    const keep = Math.min(16, Math.max(0, c.prefix - i * 16));
    return keep === 0 ? 0 : x & (0xffff << (16 - keep)) & 0xffff;
  });
  return { address: { family: 'ipv6', ip: ipv6Text(g) }, prefix: c.prefix };
}

/** What a ban names: one address (`cidr` null), or a network in canonical `address/prefix` text. */
export interface BanTarget {
  readonly family: IpFamily;
  /** The canonical text the ban is known by. */
  readonly ip: string;
  readonly cidr: Cidr | null;
}

/** An address, or a CIDR (a full-length prefix is the address itself); null when neither. */
export function parseBanTarget(text: string): BanTarget | null {
  if (!text.includes('/')) {
    const a = parseIp(text);
    return a === null ? null : { family: a.family, ip: a.ip, cidr: null };
  }
  const c = parseCidr(text);
  if (typeof c === 'string') return null;
  if (c.prefix === (c.address.family === 'ipv4' ? 32 : 128)) return { family: c.address.family, ip: c.address.ip, cidr: null };
  const net = networkOf(c);
  return { family: net.address.family, ip: `${net.address.ip}/${String(net.prefix)}`, cidr: net };
}

/** Whether a network holds an address. */
export function cidrContains(c: Cidr, addr: IpAddress): boolean {
  if (c.address.family !== addr.family) return false;
  return samePrefix(groupsOf(addr), groupsOf(c.address), c.prefix, addr.family === 'ipv4' ? 32 : 16);
}

/** Whether two networks share an address (one holds the other). */
export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  if (a.address.family !== b.address.family) return false;
  return samePrefix(groupsOf(a.address), groupsOf(b.address), Math.min(a.prefix, b.prefix), a.address.family === 'ipv4' ? 32 : 16);
}

/**
 * A set of addresses and networks, matched on canonical addresses. A linear scan: ignore lists
 * are short, and this costs far less per event than node's BlockList, which allocates per check.
 */
export class AddressSet {
  private readonly v4: { net: number[]; prefix: number }[] = [];
  private readonly v6: { net: number[]; prefix: number }[] = [];
  readonly entries: readonly string[];

  constructor(cidrs: readonly Cidr[]) {
    const entries: string[] = [];
    for (const c of cidrs) {
      if (c.address.family === 'ipv4') this.v4.push({ net: [ipv4Number(c.address.ip)], prefix: c.prefix });
      else this.v6.push({ net: ipv6Groups(c.address.ip), prefix: c.prefix });
      entries.push(`${c.address.ip}/${c.prefix}`);
    }
    this.entries = entries;
  }

  /** Whether any entry shares an address with the network (a network holding an ignored address). */
  overlaps(c: Cidr): boolean {
    const width = c.address.family === 'ipv4' ? 32 : 16;
    const list = c.address.family === 'ipv4' ? this.v4 : this.v6;
    const g = groupsOf(c.address);
    return list.some((e) => samePrefix(g, e.net, Math.min(e.prefix, c.prefix), width));
  }

  has(addr: IpAddress): boolean {
    if (addr.family === 'ipv4') {
      if (this.v4.length === 0) return false;
      const n = [ipv4Number(addr.ip)];
      return this.v4.some((e) => samePrefix(n, e.net, e.prefix, 32));
    }
    if (this.v6.length === 0) return false;
    const g = ipv6Groups(addr.ip);
    return this.v6.some((e) => samePrefix(g, e.net, e.prefix, 16));
  }
}

/**
 * A copy of a string that does not keep its parent alive: V8 represents a substring as a view
 * into the whole decoded chunk it came from, so a long-lived map key must be detached.
 */
export function detach(s: string): string {
  return (' ' + s).slice(1);
}

/** Splits a comma/space separated list, dropping empty items. */
export function splitList(text: string): string[] {
  return text.split(/[\s,]+/).filter((s) => s.length > 0);
}
