// libnftables JSON for our table: built from typed values only, never from concatenated strings.
import { createHash } from 'node:crypto';
import type { IpFamily } from '../common/ip.js';

export type BlockType = 'drop' | 'reject';

export interface PortRule {
  readonly protocol: 'tcp' | 'udp' | 'sctp';
  /** Single ports and [from, to] ranges. */
  readonly ports: readonly (number | readonly [number, number])[];
}

export interface RulesetOptions {
  readonly table: string;
  readonly blockType: BlockType;
  /** Empty = all traffic from a banned address. */
  readonly ports: readonly PortRule[];
}

export const SET_NAME: Readonly<Record<IpFamily, string>> = { ipv4: 'ipv4_addr', ipv6: 'ipv6_addr' };
/** Banned networks: interval sets with timeouts, apart so that the address sets stay hash sets. */
export const NET_SET_NAME: Readonly<Record<IpFamily, string>> = { ipv4: 'ipv4_net', ipv6: 'ipv6_net' };
export const COUNTER_NAME: Readonly<Record<IpFamily, string>> = { ipv4: 'banned_ipv4', ipv6: 'banned_ipv6' };
const PROTOCOL: Readonly<Record<IpFamily, string>> = { ipv4: 'ip', ipv6: 'ip6' };
const FAMILIES: readonly IpFamily[] = ['ipv4', 'ipv6'];
export const RULE_COMMENT_PREFIX = 'ami2ban:';
/** A set no rule uses: the periodic check adds a short-lived element to it to see the table is there. */
export const PROBE_SET = 'alive';

/** drop: prerouting at raw priority (before conntrack, covers DNAT'd traffic); reject: input at filter - 1. */
export function chainName(blockType: BlockType): string {
  return blockType === 'drop' ? 'prerouting' : 'input';
}

export type NftCommand = Record<string, unknown>;

function rule(o: RulesetOptions, family: IpFamily, port: PortRule | undefined, networks: boolean): NftCommand {
  const expr: unknown[] = [
    { match: { op: '==', left: { payload: { protocol: PROTOCOL[family], field: 'saddr' } }, right: `@${(networks ? NET_SET_NAME : SET_NAME)[family]}` } },
  ];
  if (port !== undefined) {
    expr.push({ match: { op: '==', left: { meta: { key: 'l4proto' } }, right: port.protocol } });
    const values = port.ports.map((p) => (typeof p === 'number' ? p : { range: [p[0], p[1]] }));
    expr.push({ match: { op: '==', left: { payload: { protocol: 'th', field: 'dport' } }, right: { set: values } } });
  }
  expr.push({ counter: COUNTER_NAME[family] });
  expr.push(o.blockType === 'drop' ? { drop: null } : { reject: { type: 'icmpx', expr: 'admin-prohibited' } });
  return { add: { rule: { family: 'inet', table: o.table, chain: chainName(o.blockType), comment: ruleComment(o, family, port, networks), expr } } };
}

/** Names a rule and the settings it was made from, so a start can tell whether it is current. */
function ruleComment(o: RulesetOptions, family: IpFamily, port: PortRule | undefined, networks: boolean): string {
  const settings = createHash('sha256').update(JSON.stringify([o.blockType, o.ports])).digest('hex').slice(0, 12);
  return `${RULE_COMMENT_PREFIX}${family}${networks ? '-net' : ''}${port === undefined ? '' : `:${port.protocol}`}:${settings}`;
}

/** Every rule of these settings: per family, for addresses then networks, per port rule. */
function rules<T>(o: RulesetOptions, make: (family: IpFamily, port: PortRule | undefined, networks: boolean) => T): T[] {
  return FAMILIES.flatMap((f) => [false, true].flatMap((n) => (o.ports.length === 0 ? [make(f, undefined, n)] : o.ports.map((p) => make(f, p, n)))));
}

/** The comments of the rules our chain holds when it matches these settings. */
export function expectedRuleComments(o: RulesetOptions): string[] {
  return rules(o, (f, p, n) => ruleComment(o, f, p, n));
}

/** What names a ban in a set: the address, or `{ prefix }` for a network (`addr/len`). */
export function banValue(ip: string): unknown {
  const slash = ip.indexOf('/');
  return slash === -1 ? ip : { prefix: { addr: ip.slice(0, slash), len: Number(ip.slice(slash + 1)) } };
}

/** The set a ban goes in. */
export function setOf(ip: string, family: IpFamily): string {
  return (ip.includes('/') ? NET_SET_NAME : SET_NAME)[family];
}

/**
 * One transaction that creates what is missing, without touching the sets' elements. When
 * `rewriteRules`, our chain's rules are replaced (they were missing or made from other settings);
 * `staleChain` is the other block type's chain, deleted when it exists.
 */
export function setupCommands(o: RulesetOptions, staleChain: string | undefined, rewriteRules: boolean): NftCommand[] {
  const t = { family: 'inet', table: o.table };
  const chain = chainName(o.blockType);
  const cmds: NftCommand[] = [{ add: { table: { family: 'inet', name: o.table } } }];
  for (const f of FAMILIES) {
    cmds.push({ add: { set: { ...t, name: SET_NAME[f], type: `${f}_addr`, flags: ['timeout'] } } });
    cmds.push({ add: { set: { ...t, name: NET_SET_NAME[f], type: `${f}_addr`, flags: ['interval', 'timeout'] } } });
    cmds.push({ add: { counter: { ...t, name: COUNTER_NAME[f] } } });
  }
  cmds.push({ add: { set: { ...t, name: PROBE_SET, type: 'ipv4_addr', flags: ['timeout'] } } });
  const hook = o.blockType === 'drop' ? { hook: 'prerouting', prio: -300 } : { hook: 'input', prio: -1 };
  cmds.push({ add: { chain: { ...t, name: chain, type: 'filter', ...hook, policy: 'accept' } } });
  if (rewriteRules) {
    cmds.push({ flush: { chain: { ...t, name: chain } } });
    cmds.push(...rules(o, (f, p, n) => rule(o, f, p, n)));
  }
  if (staleChain !== undefined && staleChain !== chain) cmds.push({ delete: { chain: { ...t, name: staleChain } } });
  return cmds;
}

/** An element: with a timeout in whole seconds, or none for a permanent ban. */
export function element(ip: string, seconds: number): unknown {
  const val = banValue(ip);
  return seconds === Number.POSITIVE_INFINITY ? val : { elem: { val, timeout: Math.max(1, Math.ceil(seconds)) } };
}

export function elementCommand(verb: 'add' | 'delete', table: string, family: IpFamily, elems: readonly unknown[], set = SET_NAME[family]): NftCommand {
  return { [verb]: { element: { family: 'inet', table, name: set, elem: elems } } };
}

export interface ListedElement {
  readonly ip: string;
  /** Seconds left; Infinity for an element without timeout. */
  readonly expiresIn: number;
}

/** An element's value as text: an address, or `addr/len` for a network; undefined for anything else. */
function valueText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  const p = (v as { prefix?: { addr?: unknown; len?: unknown } } | null)?.prefix;
  return typeof p?.addr === 'string' && typeof p.len === 'number' ? `${p.addr}/${String(p.len)}` : undefined;
}

/** Reads the elements out of `list set` output. */
export function listedElements(output: unknown): ListedElement[] {
  const out: ListedElement[] = [];
  const items = (output as { nftables?: unknown[] } | null)?.nftables ?? [];
  for (const item of items) {
    const set = (item as { set?: { elem?: unknown[] } }).set;
    for (const e of set?.elem ?? []) {
      const bare = valueText(e);
      if (bare !== undefined) out.push({ ip: bare, expiresIn: Number.POSITIVE_INFINITY });
      else {
        const el = (e as { elem?: { val?: unknown; expires?: unknown; timeout?: unknown } }).elem;
        const ip = valueText(el?.val);
        if (el === undefined || ip === undefined) continue;
        const expires = typeof el.expires === 'number' ? el.expires : typeof el.timeout === 'number' ? el.timeout : Number.POSITIVE_INFINITY;
        out.push({ ip, expiresIn: expires });
      }
    }
  }
  return out;
}

/** Names of the chains and comments of the rules in `list table`/`list chain` output. */
export function listedChains(output: unknown): Map<string, string[]> {
  const chains = new Map<string, string[]>();
  const items = (output as { nftables?: unknown[] } | null)?.nftables ?? [];
  for (const item of items) {
    const c = (item as { chain?: { name?: unknown } }).chain;
    if (typeof c?.name === 'string' && !chains.has(c.name)) chains.set(c.name, []);
    const r = (item as { rule?: { chain?: unknown; comment?: unknown } }).rule;
    if (typeof r?.chain === 'string') {
      const list = chains.get(r.chain) ?? [];
      if (typeof r.comment === 'string') list.push(r.comment);
      chains.set(r.chain, list);
    }
  }
  return chains;
}

export interface CounterValues {
  readonly packets: number;
  readonly bytes: number;
}

export function listedCounter(output: unknown): CounterValues | undefined {
  const items = (output as { nftables?: unknown[] } | null)?.nftables ?? [];
  for (const item of items) {
    const c = (item as { counter?: { packets?: unknown; bytes?: unknown } }).counter;
    if (typeof c?.packets === 'number' && typeof c.bytes === 'number') return { packets: c.packets, bytes: c.bytes };
  }
  return undefined;
}
