// Address helpers shared by config, ami and engine. A pure leaf: imports nothing of ours.
import { BlockList, SocketAddress, isIP } from 'node:net';

export type IpFamily = 'ipv4' | 'ipv6';

export interface IpAddress {
  readonly family: IpFamily;
  /** Canonical text: dotted quad, or compressed lower-case IPv6 without zone. */
  readonly ip: string;
}

const MAPPED_PREFIX = '::ffff:';

/** Parses and canonicalizes an address; IPv4-mapped IPv6 becomes IPv4. Returns null if invalid. */
export function parseIp(text: string): IpAddress | null {
  const zoneAt = text.indexOf('%');
  const bare = zoneAt === -1 ? text : text.slice(0, zoneAt);
  const version = isIP(bare);
  if (version === 4) return { family: 'ipv4', ip: bare };
  if (version !== 6) return null;
  const canonical = new SocketAddress({ address: bare, family: 'ipv6' }).address;
  if (canonical.startsWith(MAPPED_PREFIX)) {
    const tail = canonical.slice(MAPPED_PREFIX.length);
    if (isIP(tail) === 4) return { family: 'ipv4', ip: tail };
  }
  return { family: 'ipv6', ip: canonical };
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

/** A set of addresses and networks; lookups are on canonical addresses. */
export class AddressSet {
  private readonly list = new BlockList();
  readonly entries: readonly string[];

  constructor(cidrs: readonly Cidr[]) {
    const entries: string[] = [];
    for (const c of cidrs) {
      this.list.addSubnet(c.address.ip, c.prefix, c.address.family);
      entries.push(`${c.address.ip}/${c.prefix}`);
    }
    this.entries = entries;
  }

  has(addr: IpAddress): boolean {
    return this.list.check(addr.ip, addr.family);
  }
}

/** Splits a comma/space separated list, dropping empty items. */
export function splitList(text: string): string[] {
  return text.split(/[\s,]+/).filter((s) => s.length > 0);
}
