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

function rule(o: RulesetOptions, family: IpFamily, port: PortRule | undefined): NftCommand {
  const expr: unknown[] = [
    { match: { op: '==', left: { payload: { protocol: PROTOCOL[family], field: 'saddr' } }, right: `@${SET_NAME[family]}` } },
  ];
  if (port !== undefined) {
    expr.push({ match: { op: '==', left: { meta: { key: 'l4proto' } }, right: port.protocol } });
    const values = port.ports.map((p) => (typeof p === 'number' ? p : { range: [p[0], p[1]] }));
    expr.push({ match: { op: '==', left: { payload: { protocol: 'th', field: 'dport' } }, right: { set: values } } });
  }
  expr.push({ counter: COUNTER_NAME[family] });
  expr.push(o.blockType === 'drop' ? { drop: null } : { reject: { type: 'icmpx', expr: 'admin-prohibited' } });
  return { add: { rule: { family: 'inet', table: o.table, chain: chainName(o.blockType), comment: ruleComment(o, family, port), expr } } };
}

/** Names a rule and the settings it was made from, so a start can tell whether it is current. */
function ruleComment(o: RulesetOptions, family: IpFamily, port: PortRule | undefined): string {
  const settings = createHash('sha256').update(JSON.stringify([o.blockType, o.ports])).digest('hex').slice(0, 12);
  return `${RULE_COMMENT_PREFIX}${family}${port === undefined ? '' : `:${port.protocol}`}:${settings}`;
}

/** The comments of the rules our chain holds when it matches these settings. */
export function expectedRuleComments(o: RulesetOptions): string[] {
  return FAMILIES.flatMap((f) => (o.ports.length === 0 ? [ruleComment(o, f, undefined)] : o.ports.map((p) => ruleComment(o, f, p))));
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
    cmds.push({ add: { counter: { ...t, name: COUNTER_NAME[f] } } });
  }
  cmds.push({ add: { set: { ...t, name: PROBE_SET, type: 'ipv4_addr', flags: ['timeout'] } } });
  const hook = o.blockType === 'drop' ? { hook: 'prerouting', prio: -300 } : { hook: 'input', prio: -1 };
  cmds.push({ add: { chain: { ...t, name: chain, type: 'filter', ...hook, policy: 'accept' } } });
  if (rewriteRules) {
    cmds.push({ flush: { chain: { ...t, name: chain } } });
    for (const f of FAMILIES) {
      if (o.ports.length === 0) cmds.push(rule(o, f, undefined));
      else for (const p of o.ports) cmds.push(rule(o, f, p));
    }
  }
  if (staleChain !== undefined && staleChain !== chain) cmds.push({ delete: { chain: { ...t, name: staleChain } } });
  return cmds;
}

/** An element: with a timeout in whole seconds, or none for a permanent ban. */
export function element(ip: string, seconds: number): unknown {
  return seconds === Number.POSITIVE_INFINITY ? ip : { elem: { val: ip, timeout: Math.max(1, Math.ceil(seconds)) } };
}

export function elementCommand(verb: 'add' | 'delete', table: string, family: IpFamily, elems: readonly unknown[], set = SET_NAME[family]): NftCommand {
  return { [verb]: { element: { family: 'inet', table, name: set, elem: elems } } };
}

export interface ListedElement {
  readonly ip: string;
  /** Seconds left; Infinity for an element without timeout. */
  readonly expiresIn: number;
}

/** Reads the elements out of `list set` output. */
export function listedElements(output: unknown): ListedElement[] {
  const out: ListedElement[] = [];
  const items = (output as { nftables?: unknown[] } | null)?.nftables ?? [];
  for (const item of items) {
    const set = (item as { set?: { elem?: unknown[] } }).set;
    for (const e of set?.elem ?? []) {
      if (typeof e === 'string') out.push({ ip: e, expiresIn: Number.POSITIVE_INFINITY });
      else {
        const el = (e as { elem?: { val?: unknown; expires?: unknown; timeout?: unknown } }).elem;
        if (typeof el?.val !== 'string') continue;
        const expires = typeof el.expires === 'number' ? el.expires : typeof el.timeout === 'number' ? el.timeout : Number.POSITIVE_INFINITY;
        out.push({ ip: el.val, expiresIn: expires });
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
