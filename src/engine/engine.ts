// The threshold engine: fail2ban's semantics over security events. Pure: time is an argument.
import { AddressSet, type Cidr, type IpAddress, type IpFamily, type UnbannableReason, cidrContains, cidrsOverlap, detach, ipv4NetworkNumber, networkOf, parseBanTarget, parseIp, unbannable } from '../common/ip.js';
import { ShardedMap } from '../common/sharded-map.js';
import { type BanTimePolicy, nextBanSeconds } from './ban-time.js';
import { ExpiryQueue } from './expiry-queue.js';
import { FailureTable, MAX_EVENT_NAMES, type Packed, eventOf, pack, timeOf, transportOf } from './failures.js';
import { BanCounts, type BanStart } from './history.js';
import { FailureAccounts, type FailureDetail, MAX_DETAILS_PER_BAN } from './details.js';
import { TrustTable, type TrustedPair } from './trust.js';

export interface EnginePolicy extends BanTimePolicy {
  /** Event names that count as failures (with Severity Error). */
  readonly events: readonly string[];
  readonly maxRetry: number;
  /** Seconds. */
  readonly findTime: number;
  /** Seconds an unfinished SIP request (a counted event, no challenge outcome yet) is remembered. */
  readonly collapseWindow: number;
  readonly ignoreIp: readonly Cidr[];
  readonly maxTracked: number;
  /** Seconds after which a ChallengeSent with no response on its Call-ID is unanswered; 0 = off. */
  readonly challengeTimeout: number;
  /** Unanswered challenges within findTime that ban; 0 = off. */
  readonly unansweredMaxRetry: number;
  /** Seconds of ban history that count for incremental ban time. */
  readonly historyKeep: number;
  /** The network an address is counted in (prefix lengths). */
  readonly v6Prefix: number;
  readonly v4Prefix: number;
  /** Failures per network within findTime that ban it; 0 = off. */
  readonly subnetMaxRetry: number;
  readonly v4SubnetMaxRetry: number;
  /** Addresses of one network banned at once that escalate to the network; 0 = off. */
  readonly subnetEscalate: number;
  readonly v4SubnetEscalate: number;
  /** Trust (address, account) pairs seen in a SIP SuccessfulAuth: their slow failures weigh less. */
  readonly trustSuccess: boolean;
  /** Seconds a pair stays trusted after its last successful login. */
  readonly trustTtl: number;
}

/** What the engine needs to know of one security event. */
export interface EngineEvent {
  readonly name: string;
  readonly severity: string;
  readonly service: string;
  readonly sessionId: string;
  /** null when the event carried no address. */
  readonly ip: string | null;
  /** `parseIp(ip)`, when the reader has it already (the AMI normalizer does): not parsed twice. */
  readonly address?: IpAddress | undefined;
  readonly aclName: string | null;
  /** AccountID ('' when none). */
  readonly account: string;
  /** The remote address's transport (UDP, TCP, TLS, WS, WSS), '' when not given. */
  readonly transport: string;
}

/** threshold: maxretry counted failures; unanswered: unanswered challenges; manual: an operator. */
/** subnet: a network, for its failures or for the addresses of it banned. fleet: failures across the fleet's hosts (FLEET_MAXRETRY). */
export const BAN_REASONS = ['threshold', 'unanswered', 'subnet', 'manual', 'fleet'] as const;
export type BanReason = (typeof BAN_REASONS)[number];
/** subnet: lifted because a ban of a network holding it replaced it. fleet: lifted by another host of the fleet. */
export const UNBAN_REASONS = ['expired', 'manual', 'subnet', 'fleet'] as const;
export type UnbanReason = (typeof UNBAN_REASONS)[number];

export interface BanDecision {
  readonly type: 'ban';
  readonly ip: string;
  readonly family: IpFamily;
  /** Epoch ms. */
  readonly at: number;
  /** Seconds; Infinity = permanent. */
  readonly banSeconds: number;
  /** Epoch ms; Infinity = permanent. */
  readonly until: number;
  readonly reason: BanReason;
  /** Failures counted in the window (0 for a manual ban). */
  readonly failures: number;
  /** What the most recent of those failures were (at most 32; fewer when a scan pushed them out). */
  readonly details: readonly FailureDetail[];
  /** A network's ban: the bans inside it, lifted by it (reason `subnet`), for the service to take out of the kernel. */
  readonly replaces?: readonly UnbanDecision[];
  /** Counted failures by event name. */
  readonly events: Readonly<Record<string, number>>;
  readonly previousBans: number;
  /** It lengthens (or replaces) a ban in force: the same ban, not another one for escalation. */
  readonly extendsBan: boolean;
  /** The fleet host that decided it; undefined when this host did. */
  readonly origin?: string | undefined;
}

export interface UnbanDecision {
  readonly type: 'unban';
  readonly ip: string;
  readonly family: IpFamily;
  readonly at: number;
  readonly reason: UnbanReason;
}

export type Decision = BanDecision | UnbanDecision;

export const IGNORE_REASONS = [
  'informational',
  'not-counted-event',
  'registrar',
  'no-address',
  'invalid-address',
  'unbannable-address',
  'ignore-list',
  'self',
  'already-banned',
  'same-request',
] as const;
export type IgnoreReason = (typeof IGNORE_REASONS)[number];

export type Outcome =
  | { readonly kind: 'ignored'; readonly reason: IgnoreReason }
  | { readonly kind: 'counted'; readonly ip: string; readonly failures: number; readonly trusted?: boolean }
  | { readonly kind: 'banned'; readonly decision: BanDecision };

/** The widest networks a manual ban may name without force (never /0). */
export const MIN_PREFIX: Readonly<Record<IpFamily, number>> = { ipv4: 16, ipv6: 32 };

/** A ban by an operator or another host: its length (or absolute end), why, and who decided it. */
export interface BanOptions {
  readonly seconds?: number;
  /** Epoch ms (Infinity = permanent); wins over seconds. */
  readonly until?: number;
  readonly force?: boolean;
  readonly replace?: boolean;
  readonly reason?: BanReason;
  readonly origin?: string;
}

export type ManualBanResult =
  /** `replaced`: bans inside the banned network, lifted (it covers them). */
  | { readonly kind: 'banned'; readonly decision: BanDecision; readonly replaced: readonly UnbanDecision[] }
  /** A longer (or permanent) ban is in force and replace was not asked: nothing changed. */
  | { readonly kind: 'unchanged'; readonly until: number }
  | { readonly kind: 'refused'; readonly reason: 'invalid-address' | 'ignore-list' | 'self' }
  | { readonly kind: 'refused'; readonly reason: 'unbannable'; readonly why: UnbannableReason }
  /** A network wider than MIN_PREFIX without force, or /0; `min` is the family's minimum. */
  | { readonly kind: 'refused'; readonly reason: 'too-wide'; readonly min: number }
  /** A network holding an ignored or own address: never banned, even with force. */
  | { readonly kind: 'refused'; readonly reason: 'holds-excluded'; readonly what: string };

interface ActiveBan {
  readonly family: IpFamily;
  readonly until: number;
}

export interface EngineStats {
  readonly tracked: number;
  readonly activeBans: number;
  readonly evicted: number;
}

export interface EngineOptions {
  /** Bans started within BAN_HISTORY_KEEP before this run (data: the engine does no I/O). */
  readonly previousBans?: Iterable<BanStart>;
  /** Pairs trusted before this run (BAN_TRUST_SUCCESS), from the ban database. */
  readonly trusted?: Iterable<TrustedPair>;
  /** 0..1; used for rndTime. */
  readonly random?: () => number;
}

const AMI_SERVICE = 'AMI';
const REGISTRAR_ACL = 'registrar_';
/** Exactly one of these ends each SIP request (ami-security-reference.md, fixtures README). */
/** Unanswered requests remembered per generation (real requests get their outcome within ms). */
const MAX_OPEN_REQUESTS = 50_000;
const REQUEST_OUTCOMES: ReadonlySet<string> = new Set(['ChallengeSent', 'ChallengeResponseFailed', 'SuccessfulAuth']);
const CHALLENGE_SENT = 'ChallengeSent';
const SUCCESSFUL_AUTH = 'SuccessfulAuth';
/** Challenges awaiting an answer, at most (a flood of them keeps memory bounded; the oldest go). */
const MAX_CHALLENGES = 100_000;
/** How an unanswered challenge is named in a ban's events. */
export const UNANSWERED_EVENT = 'UnansweredChallenge';

/** Shared by every ban without failures (manual, remote): a fleet's catch-up makes 100 000 of them. */
export const NO_EVENTS: Readonly<Record<string, number>> = Object.freeze({});
export const NO_DETAILS: readonly FailureDetail[] = Object.freeze([]);

export class Engine {
  /** Counted event names → their index in policy.events (how a failure records its event). */
  private readonly counted: ReadonlyMap<string, number>;
  private ignore: AddressSet;
  private self: ReadonlySet<string> = new Set();
  private readonly trackers: FailureTable;
  /**
   * `ip LF SessionID` of SIP requests counted and not yet answered by an outcome → when, in ms
   * after its generation began (a small integer, not a number boxed per request that every young
   * collection copies under a scan). Two generations, swapped every collapse window: forgetting
   * old ones costs O(1), never a scan.
   */
  private openRequests = new Map<string, number>();
  private olderRequests = new Map<string, number>();
  private requestsSwappedAt = Number.NEGATIVE_INFINITY;
  private olderSwappedAt = Number.NEGATIVE_INFINITY;
  /** `ip LF SessionID` of challenges sent and not answered yet → when sent. */
  private readonly challenges = new Map<string, number>();
  /** The same in the order sent, which is the order they time out in (one timeout for all). */
  private challengeKeys: string[] = [];
  private challengeTimes: number[] = [];
  private challengeHead = 0;
  /** Challenges found unanswered outside the sweep (a new one on the same Call-ID), to count. */
  private unansweredNow: { readonly ip: string; readonly at: number }[] = [];
  private readonly unanswered: FailureTable;
  private readonly challengeMs: number;
  private readonly bans = new ShardedMap<string, ActiveBan>();
  /** The networks among `bans` (keys `address/prefix`): an address inside one is banned already. */
  private readonly networks = new Map<string, Cidr>();
  /** How many banned networks have each prefix length, per family. */
  private readonly netLengths: Record<IpFamily, Map<number, number>> = { ipv4: new Map(), ipv6: new Map() };
  /** Failures per network (BAN_SUBNET_MAXRETRY); addresses banned per network (BAN_SUBNET_ESCALATE). */
  private readonly netFailures: FailureTable;
  /** Keyed by netCountKey; sharded: a scattered scan bans as many networks as addresses. */
  private readonly bannedPerNet = new ShardedMap<string | number, number>();
  /** Kept as bans come and go, so that observers never count the map. */
  private readonly bansByFamily: Record<IpFamily, number> = { ipv4: 0, ipv6: 0 };
  private readonly expiry = new ExpiryQueue();
  private readonly history: BanCounts;
  /** undefined when BAN_TRUST_SUCCESS is off. */
  private readonly trust: TrustTable | undefined;
  private readonly accounts = new FailureAccounts();
  private readonly random: () => number;
  private readonly findTimeMs: number;
  private readonly collapseMs: number;

  constructor(
    private readonly policy: EnginePolicy,
    options: EngineOptions = {},
  ) {
    if (policy.events.length > MAX_EVENT_NAMES) throw new RangeError(`at most ${MAX_EVENT_NAMES} counted event names`);
    this.counted = new Map(policy.events.map((e, i) => [e, i]));
    this.trackers = new FailureTable(policy.maxTracked);
    this.unanswered = new FailureTable(policy.maxTracked);
    this.netFailures = new FailureTable(policy.maxTracked);
    this.challengeMs = policy.unansweredMaxRetry > 0 ? policy.challengeTimeout * 1000 : 0;
    this.ignore = new AddressSet(policy.ignoreIp);
    this.history = new BanCounts(policy.historyKeep * 1000, options.previousBans);
    this.trust = policy.trustSuccess ? new TrustTable(policy.trustTtl * 1000, options.trusted) : undefined;
    this.random = options.random ?? Math.random;
    this.findTimeMs = policy.findTime * 1000;
    this.collapseMs = policy.collapseWindow * 1000;
  }

  /**
   * History and trust from before this run, read after its start (the database answered late):
   * added to what this run has learned since.
   */
  loadHistory(previousBans: Iterable<BanStart>, trusted: Iterable<TrustedPair>): void {
    for (const b of previousBans) this.history.add(b.ip, b.startedAt);
    this.trust?.load(trusted);
  }

  /** Bans of an address within the history (BAN_HISTORY_KEEP): what its next ban counts as before it. */
  previousBans(ip: string, now: number): number {
    return this.history.count(ip, now);
  }

  /** Replaces the ignore list (e.g. on reload); pending failures of now-ignored addresses are dropped. */
  setIgnoreList(cidrs: readonly Cidr[]): void {
    this.ignore = new AddressSet(cidrs);
    for (const ip of [...this.trackers.keys()]) {
      const addr = parseIp(ip);
      if (addr !== null && this.ignore.has(addr)) this.trackers.delete(ip);
    }
  }

  /**
   * The host's own addresses (ignore-self): never banned from events, and a manual ban of one is
   * refused unless forced. Kept apart from the ignore list, which operators replace.
   */
  setSelf(addresses: readonly IpAddress[]): void {
    this.self = new Set(addresses.map((a) => detach(a.ip)));
    for (const ip of this.self) this.trackers.delete(ip);
  }

  /** An address ignored or of this host; a network holding one. */
  isIgnored(ip: string): boolean {
    const t = parseBanTarget(ip);
    if (t === null) return false;
    if (t.cidr !== null) return this.ignore.overlaps(t.cidr) || this.holdsSelf(t.cidr);
    const addr = parseIp(t.ip);
    return addr !== null && (this.ignore.has(addr) || this.self.has(addr.ip));
  }

  /** An address of this host; a network holding one. */
  isSelf(ip: string): boolean {
    const t = parseBanTarget(ip);
    if (t === null) return false;
    return t.cidr !== null ? this.holdsSelf(t.cidr) : this.self.has(t.ip);
  }

  private holdsSelf(cidr: Cidr): boolean {
    for (const ip of this.self) {
      const a = parseIp(ip);
      if (a !== null && cidrContains(cidr, a)) return true;
    }
    return false;
  }

  observe(event: EngineEvent, now: number): Outcome {
    const sip = event.service !== AMI_SERVICE && event.sessionId !== '';
    if (sip && this.challengeMs > 0) this.noteChallenge(event, now);
    const endsRequest = sip && REQUEST_OUTCOMES.has(event.name);
    if (event.name === SUCCESSFUL_AUTH && sip && this.trust !== undefined) this.confirmTrust(event, now);
    if (event.severity !== 'Error') {
      if (endsRequest) this.endRequest(event);
      return ignored('informational');
    }
    const eventIndex = this.counted.get(event.name);
    if (eventIndex === undefined) {
      if (endsRequest) this.endRequest(event);
      return ignored('not-counted-event');
    }
    if (event.name === 'FailedACL' && event.aclName?.startsWith(REGISTRAR_ACL) === true) return ignored('registrar');
    if (event.ip === null) return ignored('no-address');
    const addr = event.address ?? parseIp(event.ip);
    if (addr === null) return ignored('invalid-address');
    if (unbannable(addr) !== null) return ignored('unbannable-address');
    if (this.ignore.has(addr)) return ignored('ignore-list');
    const ip = addr.ip;
    if (this.self.has(ip)) return ignored('self');
    const ban = this.bans.get(ip);
    if (ban !== undefined && ban.until > now) return ignored('already-banned');
    if (this.networks.size > 0 && this.networkHolding(addr, now) !== undefined) return ignored('already-banned');

    if (sip) {
      // One failed request raises several counted events on its Call-ID, then exactly one outcome:
      // count the first, skip the rest until the outcome. A new request on the same Call-ID (every
      // password guess) counts again. collapseWindow only bounds how long an unanswered one is kept.
      const key = `${ip}\n${event.sessionId}`;
      const openedAt = this.requestOpenedAt(key);
      const open = openedAt !== undefined && now - openedAt < this.collapseMs;
      if (endsRequest) this.forgetRequest(key);
      if (open) return ignored('same-request');
      if (!endsRequest) this.openRequest(key, now);
    }

    const failure = pack(now, eventIndex, transportCode(event.transport));
    const netMax = addr.family === 'ipv4' ? this.policy.v4SubnetMaxRetry : this.policy.subnetMaxRetry;
    if (netMax > 0) {
      const net = this.networkKey(addr);
      if (this.netFailures.add(net, failure, now - this.findTimeMs) >= netMax) {
        const failures = this.netFailures.take(net);
        const d = this.banNetworkAuto(net, addr.family, now, failures);
        if (d !== undefined) {
          this.trackers.delete(ip);
          return { kind: 'banned', decision: d };
        }
      }
    }
    if (this.trust?.hasAddress(ip) === true && event.account !== '') {
      // A trusted pair's slow failures weigh less; fast ones, and other accounts', count in full.
      const weighed = this.trust.weighed(ip, event.account, now, now - this.findTimeMs, failure, this.policy.maxRetry);
      if (weighed !== undefined) this.accounts.note(ip, now, eventIndex, detach(event.account));
      if (typeof weighed === 'number') {
        const untrusted = this.trackers.count(ip, now - this.findTimeMs);
        if ((untrusted + weighed) * this.repeatWeight(ip, now) < this.policy.maxRetry) return { kind: 'counted', ip, failures: untrusted, trusted: true };
        const all = [...this.trackers.take(ip), ...this.trust.drain(ip, event.account)].sort((a, b) => a - b);
        return { kind: 'banned', decision: this.thresholdBan(ip, addr.family, now, all) };
      }
      if (weighed === 'fast') {
        // As fast as guessing: every failure of the pair in the window counts in full.
        let failures = 0;
        for (const p of this.trust.drain(ip, event.account)) failures = this.trackers.add(ip, p, now - this.findTimeMs);
        if (failures * this.repeatWeight(ip, now) < this.policy.maxRetry) return { kind: 'counted', ip, failures };
        return { kind: 'banned', decision: this.thresholdBan(ip, addr.family, now, this.trackers.take(ip)) };
      }
    }
    const failures = this.trackers.add(ip, failure, now - this.findTimeMs);
    // Accounts from an address's second failure on: a scan's lone failures keep no string.
    if (failures > 1 && event.account !== '') this.accounts.note(ip, now, eventIndex, detach(event.account));
    if (failures * this.repeatWeight(ip, now) < this.policy.maxRetry) return { kind: 'counted', ip, failures };

    return { kind: 'banned', decision: this.thresholdBan(ip, addr.family, now, this.trackers.take(ip)) };
  }

  private thresholdBan(ip: string, family: IpFamily, now: number, failures: readonly Packed[]): BanDecision {
    const noted = this.accounts.take(ip);
    const escalated = this.escalate(ip, family, now, failures);
    if (escalated !== undefined) return escalated;
    const previous = this.history.count(ip, now);
    const seconds = nextBanSeconds(this.policy, previous, this.random);
    return this.recordBan(ip, family, now, seconds, previous, 'threshold', failures.length, this.eventCounts(failures), false, this.detailsOf(failures, noted));
  }

  /** `{ InvalidAccountID: 2, … }` of packed failures. */
  private eventCounts(failures: readonly Packed[]): Record<string, number> {
    const events: Record<string, number> = {};
    for (const p of failures) {
      const name = this.policy.events[eventOf(p)] ?? '';
      events[name] = (events[name] ?? 0) + 1;
    }
    return events;
  }

  /** The most recent failures as explain shows them, with the accounts noted for them. */
  private detailsOf(failures: readonly Packed[], noted: Parameters<FailureAccounts['accountOf']>[0]): FailureDetail[] {
    return failures.slice(-MAX_DETAILS_PER_BAN).map((p): FailureDetail => {
      const at = timeOf(p);
      const event = eventOf(p);
      return { at, event: this.policy.events[event] ?? '', account: this.accounts.accountOf(noted, at, event), transport: TRANSPORT_NAMES[transportOf(p)] ?? '' };
    });
  }

  /** The network an address is counted in: `net/prefix` at BAN_V4_PREFIX / BAN_V6_PREFIX. */
  private networkKey(addr: IpAddress): string {
    const prefix = addr.family === 'ipv4' ? this.policy.v4Prefix : this.policy.v6Prefix;
    const net = networkOf({ address: addr, prefix });
    return `${net.address.ip}/${String(prefix)}`;
  }

  /** With this address banned, enough of its network would be: the network is banned instead. */
  private escalate(ip: string, family: IpFamily, now: number, failures: readonly Packed[], named?: string): BanDecision | undefined {
    const n = family === 'ipv4' ? this.policy.v4SubnetEscalate : this.policy.subnetEscalate;
    if (n <= 0) return undefined;
    const addr = parseIp(ip);
    if (addr === null) return undefined;
    if ((this.bannedPerNet.get(this.netCountKey(addr.ip, family)) ?? 0) + 1 < n) return undefined;
    return this.banNetworkAuto(this.networkKey(addr), family, now, failures, named);
  }

  /**
   * An automatic ban of a network: not when it holds an ignored or own address (the addresses
   * around them are banned one by one instead); the bans inside it are lifted (`replaces`).
   */
  private banNetworkAuto(net: string, family: IpFamily, now: number, failures: readonly Packed[], named?: string): BanDecision | undefined {
    const cidr = parseBanTarget(net)?.cidr;
    if (cidr == null || this.ignore.overlaps(cidr) || this.holdsSelf(cidr)) return undefined;
    const replaces = this.liftInside(net, cidr, now);
    const previous = this.history.count(net, now);
    const seconds = nextBanSeconds(this.policy, previous, this.random);
    // `named`: failures that are not counted events (unanswered challenges) carry that name.
    const events = named === undefined ? this.eventCounts(failures) : { [named]: failures.length };
    const details = this.detailsOf(failures, []).map((d) => (named === undefined ? d : { ...d, event: named }));
    return { ...this.recordBan(net, family, now, seconds, previous, 'subnet', failures.length, events, false, details), replaces };
  }

  private confirmTrust(event: EngineEvent, now: number): void {
    if (event.ip === null || event.account === '') return;
    const addr = parseIp(event.ip);
    if (addr === null || unbannable(addr) !== null) return;
    this.trust?.confirm(detach(addr.ip), detach(event.account), now);
  }

  /** Pairs trusted now (BAN_TRUST_SUCCESS); empty when off. */
  trustedPairs(now: number): TrustedPair[] {
    return this.trust?.list(now) ?? [];
  }

  /** Revokes the trust of an address (every account, or one); returns what was revoked. */
  revokeTrust(ipText: string, account?: string): TrustedPair[] {
    const addr = parseIp(ipText);
    if (addr === null || this.trust === undefined) return [];
    return this.trust.revoke(addr.ip, account);
  }

  /** Trust confirmations to persist since the last call (new pairs, and expiries moved by an hour or more). */
  takeTrustChanges(): readonly TrustedPair[] {
    return this.trust?.takeChanges() ?? [];
  }

  /**
   * A ban by an operator; the duration defaults to the policy's (with increment). It never
   * shortens a ban in force unless `replace`.
   */
  ban(ipText: string, now: number, options: BanOptions = {}): ManualBanResult {
    const target = parseBanTarget(ipText);
    if (target === null) return { kind: 'refused', reason: 'invalid-address' };
    if (target.cidr !== null) return this.banNetwork(target.ip, target.cidr, now, options);
    // The text itself: its zone, if any, makes it unbannable (the target has dropped it); a plain
    // address is the target, parsed once.
    const slash = ipText.indexOf('/');
    const addr: IpAddress | null = slash !== -1 ? parseIp(ipText.slice(0, slash)) : ipText.includes('%') ? parseIp(ipText) : target;
    if (addr === null) return { kind: 'refused', reason: 'invalid-address' };
    const why = unbannable(addr);
    if (why !== null) return { kind: 'refused', reason: 'unbannable', why };
    if (options.force !== true && this.self.has(addr.ip)) return { kind: 'refused', reason: 'self' };
    if (options.force !== true && this.ignore.has(addr)) return { kind: 'refused', reason: 'ignore-list' };
    // Inside a banned network: banned already, nothing to add.
    const covering = this.networkHolding(addr, now);
    if (covering !== undefined) return { kind: 'unchanged', until: covering.until };
    const current = this.bans.get(addr.ip);
    const inForce = current !== undefined && current.until > now;
    // A ban in force is counted in the history already: this one continues it.
    const previous = Math.max(0, this.history.count(addr.ip, now) - (inForce ? 1 : 0));
    const seconds = banSeconds(options, now) ?? nextBanSeconds(this.policy, previous, this.random);
    const until = seconds === Number.POSITIVE_INFINITY ? seconds : now + seconds * 1000;
    if (inForce && options.replace !== true && until <= current.until) return { kind: 'unchanged', until: current.until };
    this.trackers.delete(addr.ip);
    return { kind: 'banned', decision: this.recordBan(addr.ip, addr.family, now, seconds, previous, options.reason ?? 'manual', 0, NO_EVENTS, inForce, NO_DETAILS, options.origin), replaced: [] };
  }

  /** A manual ban of a network: it replaces the bans inside it; ignore lists and own addresses always win. */
  private banNetwork(text: string, cidr: Cidr, now: number, options: BanOptions): ManualBanResult {
    const family = cidr.address.family;
    if (cidr.prefix === 0 || (options.force !== true && cidr.prefix < MIN_PREFIX[family])) return { kind: 'refused', reason: 'too-wide', min: MIN_PREFIX[family] };
    const why = unbannable(cidr.address);
    if (why !== null) return { kind: 'refused', reason: 'unbannable', why };
    if (this.holdsSelf(cidr)) return { kind: 'refused', reason: 'holds-excluded', what: 'an address of this host, the AMI host or the control listener (BAN_IGNORESELF)' };
    if (this.ignore.overlaps(cidr)) return { kind: 'refused', reason: 'holds-excluded', what: 'an address of the ignore list (BAN_IGNOREIP)' };
    const current = this.bans.get(text);
    const inForce = current !== undefined && current.until > now;
    const previous = Math.max(0, this.history.count(text, now) - (inForce ? 1 : 0));
    const seconds = banSeconds(options, now) ?? nextBanSeconds(this.policy, previous, this.random);
    const until = seconds === Number.POSITIVE_INFINITY ? seconds : now + seconds * 1000;
    if (inForce && options.replace !== true && until <= current.until) return { kind: 'unchanged', until: current.until };
    const outer = [...this.networks].find(([k, c]) => k !== text && cidrsOverlap(c, cidr) && c.prefix < cidr.prefix && (this.bans.get(k)?.until ?? 0) > now);
    if (outer !== undefined) return { kind: 'unchanged', until: this.bans.get(outer[0])?.until ?? until };
    // Everything the network holds (addresses, narrower networks) is covered by it now: lifted.
    const replaced = this.liftInside(text, cidr, now);
    return { kind: 'banned', decision: { ...this.recordBan(text, family, now, seconds, previous, options.reason ?? 'manual', 0, NO_EVENTS, inForce, NO_DETAILS, options.origin), replaces: replaced }, replaced };
  }

  /** Lifts the bans in force inside a network about to be banned (addresses, narrower networks): it covers them. */
  private liftInside(text: string, cidr: Cidr, now: number): UnbanDecision[] {
    const family = cidr.address.family;
    const lifted: UnbanDecision[] = [];
    for (const [ip, b] of this.bans) {
      if (ip === text || b.family !== family || b.until <= now) continue;
      const inner = parseBanTarget(ip);
      const inside = inner?.cidr === null ? cidrContains(cidr, { family, ip: inner.ip }) : inner !== null && inner.cidr.prefix > cidr.prefix && cidrsOverlap(cidr, inner.cidr);
      if (inside) lifted.push({ type: 'unban', ip, family, at: now, reason: 'subnet' });
    }
    for (const d of lifted) this.deleteBan(d.ip);
    return lifted;
  }

  /** The banned network holding an address (its text), if any. */
  bannedNetworkOf(ip: string, now: number): string | undefined {
    const addr = this.networks.size === 0 ? null : parseIp(ip);
    return addr === null ? undefined : this.networkKeyHolding(addr, now);
  }

  /** The banned network holding an address, if any: one lookup per prefix length banned in its family. */
  private networkKeyHolding(addr: IpAddress, now: number): string | undefined {
    for (const len of this.netLengths[addr.family].keys()) {
      const key = `${networkOf({ address: addr, prefix: len }).address.ip}/${String(len)}`;
      if ((this.bans.get(key)?.until ?? 0) > now) return key;
    }
    return undefined;
  }

  private networkHolding(addr: IpAddress, now: number): ActiveBan | undefined {
    const key = this.netLengths[addr.family].size === 0 ? undefined : this.networkKeyHolding(addr, now);
    return key === undefined ? undefined : this.bans.get(key);
  }

  /**
   * Takes over a ban found in force at start (in the kernel), so that its failures are not
   * counted and its expiry is tracked. Returns false for an invalid or already-expired one.
   */
  adopt(ipText: string, until: number, now: number): boolean {
    const addr = parseBanTarget(ipText);
    if (addr === null || until <= now) return false;
    const ip = detach(addr.ip);
    this.trackers.delete(ip);
    this.setBan(ip, addr.family, until);
    if (until !== Number.POSITIVE_INFINITY) this.expiry.push(until, ip);
    return true;
  }

  /** Lifts a ban by an operator; null when the address was not banned. */
  unban(ipText: string, now: number): UnbanDecision | null {
    const addr = parseBanTarget(ipText);
    if (addr === null) return null;
    this.trackers.delete(addr.ip);
    const ban = this.bans.get(addr.ip);
    if (ban === undefined || ban.until <= now) return null;
    this.deleteBan(addr.ip);
    return { type: 'unban', ip: addr.ip, family: ban.family, at: now, reason: 'manual' };
  }

  /**
   * Challenges left unanswered past BAN_CHALLENGE_TIMEOUT by `now` are counted; the addresses
   * that reach BAN_UNANSWERED_MAXRETRY within findtime are banned. `all`: every pending challenge
   * counts as unanswered (the end of a replayed file is the passing of every timeout).
   */
  challengesDue(now: number, all = false): BanDecision[] {
    const out: BanDecision[] = [];
    if (this.challengeMs === 0) return out;
    const found = this.unansweredNow;
    this.unansweredNow = [];
    for (const u of found) this.countUnanswered(u.ip, u.at, now, out);
    while (this.challengeHead < this.challengeKeys.length) {
      const at = this.challengeTimes[this.challengeHead] ?? 0;
      if (!all && at + this.challengeMs > now) break;
      const key = this.challengeKeys[this.challengeHead] ?? '';
      this.challengeHead++;
      // Answered (gone) or sent again on the same Call-ID (a newer time): not this one.
      if (this.challenges.get(key) !== at) continue;
      this.challenges.delete(key);
      this.countUnanswered(key.slice(0, key.indexOf('\n')), at, now, out);
    }
    if (this.challengeHead > 4096 && this.challengeHead * 2 > this.challengeKeys.length) {
      this.challengeKeys = this.challengeKeys.slice(this.challengeHead);
      this.challengeTimes = this.challengeTimes.slice(this.challengeHead);
      this.challengeHead = 0;
    }
    return out;
  }

  /** Bans whose time has come; the kernel expires them by itself, this keeps our view in step. */
  expire(now: number): UnbanDecision[] {
    const out: UnbanDecision[] = [];
    for (let e = this.expiry.popDue(now); e !== undefined; e = this.expiry.popDue(now)) {
      const ban = this.bans.get(e.ip);
      // A stale heap entry (the ban was lifted or replaced) is skipped.
      if (ban === undefined || ban.until !== e.until) continue;
      this.deleteBan(e.ip);
      out.push({ type: 'unban', ip: e.ip, family: ban.family, at: now, reason: 'expired' });
    }
    return out;
  }

  /** Drops addresses whose failures have all left the window, and requests unanswered too long. */
  prune(now: number): void {
    this.trackers.prune(now - this.findTimeMs);
    this.unanswered.prune(now - this.findTimeMs);
    this.trust?.prune(now);
    this.swapRequests(now);
  }

  isBanned(ip: string, now: number): boolean {
    const ban = this.bans.get(ip);
    if (ban !== undefined && ban.until > now) return true;
    if (this.networks.size === 0) return false;
    const addr = parseIp(ip);
    return addr !== null && this.networkHolding(addr, now) !== undefined;
  }

  activeBansByFamily(): Readonly<Record<IpFamily, number>> {
    return this.bansByFamily;
  }

  private setBan(ip: string, family: IpFamily, until: number): void {
    const before = this.bans.get(ip);
    if (before !== undefined) this.bansByFamily[before.family]--;
    this.bans.set(ip, { family, until });
    this.bansByFamily[family]++;
    if (ip.includes('/')) {
      const t = parseBanTarget(ip);
      if (t?.cidr != null && !this.networks.has(ip)) {
        this.networks.set(ip, t.cidr);
        const lengths = this.netLengths[family];
        lengths.set(t.cidr.prefix, (lengths.get(t.cidr.prefix) ?? 0) + 1);
      }
    } else if (before === undefined && this.escalates(family)) {
      const net = this.netCountKey(ip, family);
      this.bannedPerNet.set(net, (this.bannedPerNet.get(net) ?? 0) + 1);
    }
  }

  private escalates(family: IpFamily): boolean {
    return (family === 'ipv4' ? this.policy.v4SubnetEscalate : this.policy.subnetEscalate) > 0;
  }

  /**
   * Where a banned address is counted for BAN_*SUBNET_ESCALATE: an IPv4 network by its number (no
   * parse, no string per ban), an IPv6 one by its text. `ip` is canonical, as bans are kept.
   */
  private netCountKey(ip: string, family: IpFamily): string | number {
    if (family === 'ipv4') return ipv4NetworkNumber(ip, this.policy.v4Prefix);
    const addr = parseIp(ip);
    return addr === null ? ip : this.networkKey(addr);
  }

  private deleteBan(ip: string): void {
    const before = this.bans.get(ip);
    if (before === undefined) return;
    this.bans.delete(ip);
    this.bansByFamily[before.family]--;
    const net = this.networks.get(ip);
    if (net !== undefined) {
      this.networks.delete(ip);
      const lengths = this.netLengths[before.family];
      const n = (lengths.get(net.prefix) ?? 1) - 1;
      if (n <= 0) lengths.delete(net.prefix);
      else lengths.set(net.prefix, n);
    }
    if (!ip.includes('/') && this.escalates(before.family)) {
      const net = this.netCountKey(ip, before.family);
      const n = (this.bannedPerNet.get(net) ?? 0) - 1;
      if (n <= 0) this.bannedPerNet.delete(net);
      else this.bannedPerNet.set(net, n);
    }
  }

  activeBans(): ReadonlyMap<string, ActiveBan> {
    return this.bans;
  }

  stats(): EngineStats {
    return { tracked: this.trackers.size, activeBans: this.bans.size, evicted: this.trackers.evicted };
  }

  /**
   * A ChallengeSent starts waiting for its answer; any other event on its Call-ID from the same
   * address answers it (SuccessfulAuth, ChallengeResponseFailed, …). A new ChallengeSent on a
   * Call-ID whose challenge is still pending means that one went unanswered.
   */
  private noteChallenge(event: EngineEvent, now: number): void {
    const challenge = event.name === CHALLENGE_SENT;
    if (event.ip === null || (!challenge && this.challenges.size === 0)) return;
    const addr = parseIp(event.ip);
    if (addr === null) return;
    const key = `${addr.ip}\n${event.sessionId}`;
    const pending = this.challenges.get(key);
    if (!challenge) {
      if (pending !== undefined) this.challenges.delete(key);
      return;
    }
    if (pending !== undefined && this.unansweredNow.length < MAX_CHALLENGES) this.unansweredNow.push({ ip: addr.ip, at: pending });
    if (unbannable(addr) !== null) return;
    const kept = detach(key);
    this.challenges.set(kept, now);
    this.challengeKeys.push(kept);
    this.challengeTimes.push(now);
    // Past the cap the oldest pending challenge is forgotten, not counted.
    while (this.challenges.size > MAX_CHALLENGES && this.challengeHead < this.challengeKeys.length) {
      const k = this.challengeKeys[this.challengeHead] ?? '';
      const t = this.challengeTimes[this.challengeHead] ?? 0;
      this.challengeHead++;
      if (this.challenges.get(k) === t) this.challenges.delete(k);
    }
  }

  /**
   * fail2ban's observer with bantime.increment: each failure of an address banned n times before
   * (within BAN_HISTORY_KEEP) weighs min(2^n / 2 + 1, maxretry), so repeat offenders trip faster.
   * Failures from before its last ban never count: they were cleared when it was banned.
   */
  private repeatWeight(ip: string, now: number): number {
    if (!this.policy.increment) return 1;
    const n = this.history.count(ip, now);
    return n === 0 ? 1 : Math.min(2 ** Math.min(n, 20) / 2 + 1, this.policy.maxRetry);
  }

  private countUnanswered(ip: string, at: number, now: number, out: BanDecision[]): void {
    const addr = parseIp(ip);
    if (addr === null || this.ignore.has(addr) || this.self.has(ip) || this.isBanned(ip, now)) return;
    const n = this.unanswered.add(ip, pack(at, 0), now - this.findTimeMs);
    if (n < this.policy.unansweredMaxRetry) return;
    const challenges = this.unanswered.take(ip);
    this.trackers.delete(ip);
    const escalated = this.escalate(ip, addr.family, now, challenges, UNANSWERED_EVENT);
    if (escalated !== undefined) {
      out.push(escalated);
      return;
    }
    const details = challenges.slice(-MAX_DETAILS_PER_BAN).map((p): FailureDetail => ({ at: timeOf(p), event: UNANSWERED_EVENT, account: '', transport: '' }));
    const previous = this.history.count(ip, now);
    const seconds = nextBanSeconds(this.policy, previous, this.random);
    out.push(this.recordBan(ip, addr.family, now, seconds, previous, 'unanswered', n, { [UNANSWERED_EVENT]: n }, false, details));
  }

  /** An outcome ends the request on its Call-ID: the next counted event there is a new request. */
  private endRequest(event: EngineEvent): void {
    if (event.ip === null || this.openRequests.size + this.olderRequests.size === 0) return;
    if (this.forgetRequest(`${event.ip}\n${event.sessionId}`)) return;
    const addr = parseIp(event.ip);
    if (addr !== null && addr.ip !== event.ip) this.forgetRequest(`${addr.ip}\n${event.sessionId}`);
  }

  private forgetRequest(key: string): boolean {
    const a = this.openRequests.delete(key);
    return this.olderRequests.delete(key) || a;
  }

  private openRequest(key: string, now: number): void {
    this.swapRequests(now);
    this.openRequests.set(detach(key), now - this.requestsSwappedAt);
  }

  private requestOpenedAt(key: string): number | undefined {
    const open = this.openRequests.get(key);
    if (open !== undefined) return this.requestsSwappedAt + open;
    const older = this.olderRequests.get(key);
    return older === undefined ? undefined : this.olderSwappedAt + older;
  }

  /**
   * Past a collapse window the older generation goes; under a flood of requests that never get an
   * outcome, also past MAX_OPEN_REQUESTS of them (the window then shrinks: memory stays bounded).
   */
  private swapRequests(now: number): void {
    if (now - this.requestsSwappedAt < this.collapseMs && this.openRequests.size < Math.min(MAX_OPEN_REQUESTS, this.policy.maxTracked)) return;
    this.olderRequests = this.openRequests;
    this.olderSwappedAt = this.requestsSwappedAt;
    this.openRequests = new Map();
    this.requestsSwappedAt = now;
  }

  /** previousBans: the address's bans within the history before this one (its caller counted them). */
  private recordBan(
    text: string,
    family: IpFamily,
    now: number,
    seconds: number,
    previousBans: number,
    reason: BanReason,
    failures: number,
    events: Readonly<Record<string, number>>,
    extendsBan = false,
    details: readonly FailureDetail[] = NO_DETAILS,
    origin?: string,
  ): BanDecision {
    const ip = detach(text);
    const until = seconds === Number.POSITIVE_INFINITY ? seconds : now + seconds * 1000;
    this.setBan(ip, family, until);
    if (until !== Number.POSITIVE_INFINITY) this.expiry.push(until, ip);
    const decision: BanDecision = { type: 'ban', ip, family, at: now, banSeconds: seconds, until, reason, failures, events, details, previousBans, extendsBan, origin };
    // An extension continues the ban in force: it is not another one.
    if (!extendsBan) this.history.add(ip, now);
    return decision;
  }
}

/** Transports by their code in a packed failure (0: not given). */
const TRANSPORT_NAMES: readonly string[] = ['', 'UDP', 'TCP', 'TLS', 'WS', 'WSS'];

function transportCode(t: string): number {
  const i = TRANSPORT_NAMES.indexOf(t);
  return i >= 0 ? i : Math.max(0, TRANSPORT_NAMES.indexOf(t.toUpperCase()));
}

/** Seconds asked by a ban's options (an absolute end counts from now), or undefined for the policy's. */
function banSeconds(options: BanOptions, now: number): number | undefined {
  if (options.until === undefined) return options.seconds;
  return options.until === Number.POSITIVE_INFINITY ? options.until : Math.max(1, (options.until - now) / 1000);
}

function ignored(reason: IgnoreReason): Outcome {
  return { kind: 'ignored', reason };
}
