import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isSecurityEventName } from '../common/security-events.js';
import { type Cidr, parseCidr, parseIp, splitList } from '../common/ip.js';
import { ConfigError, type ConfigProblem, errorMessage } from '../errors.js';
import { DURATION_LIMIT_TEXT, PERMANENT, parseDuration } from './duration.js';
import { Secret } from './secret.js';
import { OWN_PREFIXES, VARIABLES } from './variables.js';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export type LogFormat = 'auto' | 'json' | 'text';
export type FirewallKind = 'nftables' | 'dry-run';

export interface PortRuleConfig {
  readonly protocol: 'tcp' | 'udp' | 'sctp';
  readonly ports: readonly (number | readonly [number, number])[];
}

export interface NftablesConfig {
  readonly table: string;
  readonly blockType: 'drop' | 'reject';
  readonly ports: readonly PortRuleConfig[];
  readonly cleanupOnExit: boolean;
  readonly backend: 'auto' | 'libnftables' | 'nft';
  /** Seconds; 0 = never. */
  readonly checkInterval: number;
}

export interface AmiConfig {
  readonly host: string;
  readonly port: number;
  readonly username: string;
  readonly secret: Secret;
  /** Durations in seconds. */
  readonly pingInterval: number;
  readonly pingTimeout: number;
  readonly reconnectMax: number;
  readonly connectTimeout: number;
  /** 0 = never. */
  readonly giveUp: number;
}

export interface BanPolicyConfig {
  readonly events: readonly string[];
  readonly maxRetry: number;
  /** Durations in seconds; banTime may be Infinity (permanent). */
  readonly findTime: number;
  readonly banTime: number;
  readonly increment: boolean;
  readonly factor: number;
  readonly multipliers: readonly number[];
  readonly maxTime: number;
  readonly rndTime: number;
  /** BAN_IGNOREIP and the entries of BAN_IGNOREIP_FILE. */
  readonly ignoreIp: readonly Cidr[];
  /** Host names in BAN_IGNOREIP / BAN_IGNOREIP_FILE: their A and AAAA addresses are ignored. */
  readonly ignoreHosts: readonly string[];
  /** Seconds between resolutions of ignoreHosts. */
  readonly dnsRefresh: number;
  /** DNS servers (`ip` or `ip:port`) for ignoreHosts; empty = the system's. */
  readonly dnsServers: readonly string[];
  readonly ignoreIpFile: string | undefined;
  readonly ignoreSelf: boolean;
  /** Seconds of ban history kept; at least maxTime. */
  readonly historyKeep: number;
  readonly collapseWindow: number;
  /** Seconds; 0 = unanswered challenges are not counted. */
  readonly challengeTimeout: number;
  /** 0 = off. */
  readonly unansweredMaxRetry: number;
  /** Networks: the prefix an address is counted in, failures per network that ban it, banned addresses that escalate (0 = off). */
  readonly v6Prefix: number;
  readonly v4Prefix: number;
  readonly subnetMaxRetry: number;
  readonly subnetEscalate: number;
  readonly v4SubnetMaxRetry: number;
  readonly v4SubnetEscalate: number;
  /** Trust (address, account) pairs of SIP SuccessfulAuth: their slow failures weigh a quarter. */
  readonly trustSuccess: boolean;
  /** Seconds a pair stays trusted after its last login. */
  readonly trustTtl: number;
  readonly maxTracked: number;
}

export interface FleetConfig {
  readonly url: string | undefined;
  readonly password: Secret | undefined;
  /** PEM text of the CA to trust for rediss://; undefined = the system's. */
  readonly ca: string | undefined;
  readonly sentinels: readonly { readonly host: string; readonly port: number }[];
  readonly master: string;
  readonly name: string;
  readonly hostId: string;
  readonly apply: boolean;
  readonly publish: boolean;
  /** 0 = off. */
  readonly maxRetry: number;
  /** Seconds. */
  readonly findTime: number;
  readonly remoteRate: number;
  readonly remoteBurst: number;
  readonly streamMaxLen: number;
  readonly outbox: number;
  /** Seconds. */
  readonly resync: number;
}

export interface Config {
  readonly ami: AmiConfig;
  readonly ban: BanPolicyConfig;
  readonly firewall: FirewallKind;
  readonly nftables: NftablesConfig;
  readonly stateDir: string;
  readonly control: { readonly listen: ControlListen; readonly token: Secret | undefined; readonly group: string | undefined };
  /** Observability only (/metrics, /healthz, /readyz), no token. */
  readonly metricsListen: (ControlListen & { readonly kind: 'tcp' }) | undefined;
  readonly log: { readonly level: LogLevel; readonly format: LogFormat };
  /** Sharing bans through Redis; undefined = off. */
  readonly fleet: FleetConfig | undefined;
}

export type ControlListen = { readonly kind: 'tcp'; readonly host: string; readonly port: number } | { readonly kind: 'unix'; readonly path: string };

export type Env = Readonly<Record<string, string | undefined>>;

export interface LoadOptions {
  readonly readFile?: (path: string) => string;
  /** `replay` and the control-API commands need no AMI credentials. */
  readonly purpose?: 'daemon' | 'replay' | 'client';
  /** FLEET_HOST_ID's default. */
  readonly hostname?: string;
}

const DEFAULTS: ReadonlyMap<string, string | undefined> = new Map(VARIABLES.map((v) => [v.name, v.default]));
const EMPTY_IS_VALUE: ReadonlySet<string> = new Set(VARIABLES.filter((v) => v.emptyIsValue === true).map((v) => v.name));
const KNOWN: ReadonlySet<string> = new Set(VARIABLES.map((v) => v.name));

class Reader {
  readonly problems: ConfigProblem[] = [];

  constructor(private readonly env: Env) {}

  /** The value, or the default; an empty value counts as unset unless the variable says otherwise. */
  raw(name: string): string | undefined {
    const v = this.env[name];
    if (v !== undefined && (EMPTY_IS_VALUE.has(name) || v.trim() !== '')) return v.trim();
    return DEFAULTS.get(name);
  }

  fail(variable: string, problem: string): void {
    this.problems.push({ variable, problem });
  }

  int(name: string, min: number, max: number): number {
    const raw = this.raw(name) ?? '';
    if (/^\d+$/.test(raw)) {
      const n = Number(raw);
      if (n >= min && n <= max) return n;
    }
    this.fail(name, `"${raw}" is not valid; expected a whole number from ${min} to ${max}`);
    return min;
  }

  number(name: string, minExclusive: number): number {
    const raw = this.raw(name) ?? '';
    const n = Number(raw);
    if (raw !== '' && Number.isFinite(n) && n > minExclusive) return n;
    this.fail(name, `"${raw}" is not valid; expected a number greater than ${minExclusive}`);
    return minExclusive + 1;
  }

  duration(name: string, opts: { permanent?: boolean; min?: number } = {}): number {
    const raw = this.raw(name) ?? '';
    const allowPermanent = opts.permanent === true;
    const min = opts.min ?? 0;
    const seconds = parseDuration(raw, allowPermanent);
    if (seconds !== null && (seconds === PERMANENT || seconds >= min)) return seconds;
    const forms = `600, 90s, 10m, 1h, 1d, 1w${allowPermanent ? ' or -1 (permanent)' : ''}`;
    const bound = min > 0 ? ` of at least ${min}s` : '';
    this.fail(name, `"${raw}" is not valid; expected a duration${bound}, ${DURATION_LIMIT_TEXT}, such as ${forms}`);
    return min;
  }

  bool(name: string): boolean {
    const raw = (this.raw(name) ?? '').toLowerCase();
    if (['true', 'yes', 'on', '1'].includes(raw)) return true;
    if (['false', 'no', 'off', '0'].includes(raw)) return false;
    this.fail(name, `"${raw}" is not valid; expected true or false`);
    return false;
  }

  oneOf<T extends string>(name: string, allowed: readonly T[], hint = ''): T {
    const raw = this.raw(name) ?? '';
    const found = allowed.find((a) => a === raw.toLowerCase());
    if (found !== undefined) return found;
    this.fail(name, `"${raw}" is not valid; expected one of ${allowed.join(', ')}${hint}`);
    return allowed[0] as T;
  }
}

function readSecret(r: Reader, readFile: (path: string) => string): Secret {
  const inline = r.raw('AMI_SECRET');
  const file = r.raw('AMI_SECRET_FILE');
  if (inline !== undefined && file !== undefined) {
    r.fail('AMI_SECRET', 'both AMI_SECRET and AMI_SECRET_FILE are set; expected only one');
    return new Secret('');
  }
  if (file !== undefined) {
    try {
      const value = readFile(file).replace(/\r?\n$/, '');
      if (value === '') r.fail('AMI_SECRET_FILE', `file "${file}" is empty; expected the AMI secret`);
      if (/[\r\n]/.test(value)) r.fail('AMI_SECRET_FILE', `file "${file}" holds more than one line; expected the AMI secret alone`);
      return new Secret(value);
    } catch (err) {
      r.fail('AMI_SECRET_FILE', `cannot read "${file}" (${errorMessage(err)}); expected a readable file holding the AMI secret`);
      return new Secret('');
    }
  }
  if (inline === undefined) {
    r.fail('AMI_SECRET', 'not set; expected the secret of the manager.conf user (or AMI_SECRET_FILE)');
    return new Secret('');
  }
  // A line break would end the Login action early and let the rest pass as headers.
  if (/[\r\n]/.test(inline)) r.fail('AMI_SECRET', 'holds a CR or LF; expected one line');
  return new Secret(inline);
}

function readEvents(r: Reader): string[] {
  const names = splitList(r.raw('BAN_EVENTS') ?? '');
  const unknown = names.filter((n) => !isSecurityEventName(n));
  if (unknown.length > 0) {
    r.fail('BAN_EVENTS', `unknown event name(s) ${unknown.join(', ')}; expected Asterisk security event names such as InvalidAccountID`);
  } else if (names.length === 0) {
    r.fail('BAN_EVENTS', 'empty; expected at least one security event name');
  }
  return names;
}

function readMultipliers(r: Reader): number[] {
  const items = splitList(r.raw('BAN_MULTIPLIERS') ?? '');
  const values = items.map(Number);
  if (values.some((v) => !Number.isFinite(v) || v <= 0)) {
    r.fail('BAN_MULTIPLIERS', `"${items.join(' ')}" is not valid; expected positive numbers separated by spaces or commas`);
    return [];
  }
  return values;
}

/** Parses ignore-list entries; returns the problems instead of failing. */
/** A DNS host name (letters, digits, hyphens; dotted labels; not all digits). */
const HOST_NAME = /^(?=.{1,253}\.?$)(?=.*[A-Za-z])[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

/** Ignore-list entries: addresses and CIDRs, and host names (trunks by name, resolved later). */
export function parseIgnoreEntries(items: readonly string[]): { cidrs: Cidr[]; hosts: string[]; bad: string[] } {
  const cidrs: Cidr[] = [];
  const hosts: string[] = [];
  const bad: string[] = [];
  for (const item of items) {
    const parsed = parseCidr(item);
    if (typeof parsed !== 'string') cidrs.push(parsed);
    else if (!item.includes(':') && !item.includes('/') && HOST_NAME.test(item)) hosts.push(item.toLowerCase().replace(/\.$/, ''));
    else bad.push(parsed);
  }
  return { cidrs, hosts, bad };
}

/** The entries of an ignore-list file: one per line (or several, space/comma separated), `#` comments. */
export function ignoreFileEntries(text: string): string[] {
  return text.split('\n').flatMap((line) => splitList(line.replace(/#.*$/, '')));
}

function readIgnoreIp(r: Reader, readFile: (path: string) => string): { cidrs: Cidr[]; hosts: string[]; file: string | undefined } {
  const { cidrs, hosts, bad } = parseIgnoreEntries(splitList(r.raw('BAN_IGNOREIP') ?? ''));
  if (bad.length > 0) r.fail('BAN_IGNOREIP', `${bad.join('; ')}; expected IPv4/IPv6 addresses, CIDRs or host names`);
  const file = r.raw('BAN_IGNOREIP_FILE');
  if (file !== undefined) {
    try {
      const fromFile = parseIgnoreEntries(ignoreFileEntries(readFile(file)));
      if (fromFile.bad.length > 0) r.fail('BAN_IGNOREIP_FILE', `in "${file}": ${fromFile.bad.join('; ')}; expected IPv4/IPv6 addresses, CIDRs or host names`);
      cidrs.push(...fromFile.cidrs);
      hosts.push(...fromFile.hosts);
    } catch (err) {
      r.fail('BAN_IGNOREIP_FILE', `cannot read "${file}" (${errorMessage(err)}); expected a readable file of addresses/CIDRs`);
    }
  }
  return { cidrs, hosts: [...new Set(hosts)], file };
}

/** BAN_IGNOREIP and BAN_IGNOREIP_FILE alone, for a reload (SIGHUP): the list, or its problems. */
export function loadIgnoreList(env: Env, readFile: (path: string) => string = (p) => readFileSync(p, 'utf8')): { cidrs: Cidr[]; hosts: string[]; problems: ConfigProblem[] } {
  const r = new Reader(env);
  const { cidrs, hosts } = readIgnoreIp(r, readFile);
  return { cidrs, hosts, problems: r.problems };
}

function readDnsServers(r: Reader): string[] {
  const items = splitList(r.raw('BAN_DNS_SERVERS') ?? '');
  const bad = items.filter((s) => parseIp(s) === null && parseHostPort(s) === null && !/^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(s));
  if (bad.length > 0) r.fail('BAN_DNS_SERVERS', `${bad.map((b) => `"${b}"`).join(', ')}: expected IP addresses, optionally with :port`);
  return items;
}

function parseHostPort(raw: string): { host: string; port: number } | null {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(raw);
  const port = Number(m?.[3]);
  if (m === null || port < 1 || port > 65535) return null;
  return { host: m[1] ?? m[2] ?? '127.0.0.1', port };
}

/** `auto` = 2 × BAN_MAXRETRY; a number; 0 = off. */
function readSubnetMaxRetry(r: Reader, maxRetry: number): number {
  if ((r.raw('BAN_SUBNET_MAXRETRY') ?? 'auto').trim() === 'auto') return 2 * maxRetry;
  return r.int('BAN_SUBNET_MAXRETRY', 0, 100_000);
}

function readControlListen(r: Reader, stateDir: string): ControlListen {
  const raw = r.raw('CONTROL_LISTEN');
  if (raw === undefined) return { kind: 'unix', path: join(stateDir, 'control.sock') };
  if (raw.startsWith('/')) return { kind: 'unix', path: raw };
  const hp = parseHostPort(raw);
  if (hp === null) {
    r.fail('CONTROL_LISTEN', `"${raw}" is not valid; expected an absolute unix socket path or host:port (e.g. 127.0.0.1:9180, [::1]:9180)`);
    return { kind: 'unix', path: join(stateDir, 'control.sock') };
  }
  // Anyone on the host can reach a TCP port: it must not drive bans without a token.
  if (r.raw('CONTROL_TOKEN') === undefined) r.fail('CONTROL_LISTEN', `"${raw}" is TCP, which needs CONTROL_TOKEN (or use a unix socket path)`);
  return { kind: 'tcp', ...hp };
}

function readMetricsListen(r: Reader): (ControlListen & { kind: 'tcp' }) | undefined {
  const raw = r.raw('METRICS_LISTEN');
  if (raw === undefined) return undefined;
  const hp = parseHostPort(raw);
  if (hp === null) r.fail('METRICS_LISTEN', `"${raw}" is not valid; expected host:port (e.g. 0.0.0.0:9180)`);
  return hp === null ? undefined : { kind: 'tcp', ...hp };
}

/** `udp/5060,tcp/5060-5061,5061`: a bare port means tcp and udp. */
function readPorts(r: Reader): PortRuleConfig[] {
  const byProtocol = new Map<'tcp' | 'udp' | 'sctp', (number | readonly [number, number])[]>();
  const bad: string[] = [];
  for (const item of splitList(r.raw('NFT_PORTS') ?? '')) {
    const m = /^(?:(tcp|udp|sctp)\/)?(\d{1,5})(?:-(\d{1,5}))?$/.exec(item.toLowerCase());
    const from = Number(m?.[2]);
    const to = m?.[3] === undefined ? from : Number(m[3]);
    if (m === null || from < 1 || to > 65535 || to < from) {
      bad.push(item);
      continue;
    }
    const value: number | readonly [number, number] = from === to ? from : [from, to];
    const protocols = m[1] === undefined ? (['tcp', 'udp'] as const) : ([m[1] as 'tcp' | 'udp' | 'sctp'] as const);
    for (const p of protocols) byProtocol.set(p, [...(byProtocol.get(p) ?? []), value]);
  }
  if (bad.length > 0) r.fail('NFT_PORTS', `${bad.map((b) => `"${b}"`).join(', ')} not valid; expected [tcp|udp|sctp/]port or port-port, comma separated`);
  return [...byProtocol].map(([protocol, ports]) => ({ protocol, ports }));
}

const FLEET_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

function readFleet(r: Reader, readFile: (path: string) => string, hostname: string): FleetConfig | undefined {
  const url = r.raw('FLEET_REDIS_URL');
  const sentinelText = splitList(r.raw('FLEET_REDIS_SENTINELS') ?? '');
  if (url === undefined && sentinelText.length === 0) return undefined;
  if (url !== undefined) {
    let u: URL | undefined;
    try {
      u = new URL(url);
    } catch {
      u = undefined;
    }
    if (u === undefined || (u.protocol !== 'redis:' && u.protocol !== 'rediss:') || u.hostname === '') {
      r.fail('FLEET_REDIS_URL', 'not valid; expected redis://[user:password@]host:port[/db] or rediss://… (TLS)');
    }
  }
  const sentinels = sentinelText.map((s) => parseHostPort(s));
  if (sentinels.some((s) => s === null)) r.fail('FLEET_REDIS_SENTINELS', `"${sentinelText.join(',')}" is not valid; expected host:port entries, comma separated`);
  let password: Secret | undefined;
  const file = r.raw('FLEET_REDIS_PASSWORD_FILE');
  if (file !== undefined) {
    try {
      const value = readFile(file).replace(/\r?\n$/, '');
      if (value === '' || /[\r\n]/.test(value)) r.fail('FLEET_REDIS_PASSWORD_FILE', `file "${file}" must hold the password alone on one line`);
      password = new Secret(value);
    } catch (err) {
      r.fail('FLEET_REDIS_PASSWORD_FILE', `cannot read "${file}" (${errorMessage(err)}); expected a readable file holding the Redis password`);
    }
  }
  let ca: string | undefined;
  const caFile = r.raw('FLEET_REDIS_CA_FILE');
  if (caFile !== undefined) {
    try {
      ca = readFile(caFile);
      if (!ca.includes('-----BEGIN CERTIFICATE-----')) r.fail('FLEET_REDIS_CA_FILE', `"${caFile}" holds no PEM certificate; expected the CA that signed the Redis server's certificate`);
    } catch (err) {
      r.fail('FLEET_REDIS_CA_FILE', `cannot read "${caFile}" (${errorMessage(err)}); expected a PEM file`);
    }
  }
  const name = r.raw('FLEET_NAME') ?? '';
  if (!FLEET_NAME.test(name)) r.fail('FLEET_NAME', `"${name}" is not valid; expected up to 64 letters, digits, _ . or -`);
  const hostId = r.raw('FLEET_HOST_ID') ?? hostname;
  if (!FLEET_NAME.test(hostId)) r.fail('FLEET_HOST_ID', `"${hostId}" is not valid; expected up to 64 letters, digits, _ . or - (set FLEET_HOST_ID when the host name is not)`);
  const master = r.raw('FLEET_REDIS_MASTER') ?? '';
  if (!FLEET_NAME.test(master)) r.fail('FLEET_REDIS_MASTER', `"${master}" is not valid; expected the primary's name in sentinel.conf`);
  return {
    url,
    password,
    ca,
    sentinels: sentinels.filter((s) => s !== null),
    master,
    name,
    hostId,
    apply: r.bool('FLEET_APPLY'),
    publish: r.bool('FLEET_PUBLISH'),
    maxRetry: r.int('FLEET_MAXRETRY', 0, 100_000),
    findTime: r.duration('FLEET_FINDTIME', { min: 1 }),
    remoteRate: r.int('FLEET_REMOTE_RATE', 1, 10_000_000),
    remoteBurst: r.int('FLEET_REMOTE_BURST', 1, 10_000_000),
    streamMaxLen: r.int('FLEET_STREAM_MAXLEN', 100, 100_000_000),
    outbox: r.int('FLEET_OUTBOX', 1, 10_000_000),
    resync: r.duration('FLEET_RESYNC', { min: 1 }),
  };
}

function checkUnknown(r: Reader, env: Env): void {
  for (const name of Object.keys(env)) {
    if (KNOWN.has(name) || !OWN_PREFIXES.some((p) => name.startsWith(p))) continue;
    const near = [...KNOWN].find((k) => k.startsWith(name.slice(0, 6)) && Math.abs(k.length - name.length) <= 3);
    r.fail(name, `unknown variable${near === undefined ? '' : ` (did you mean ${near}?)`}`);
  }
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !(value instanceof Secret) && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** Parses the environment once; throws one ConfigError naming every bad variable. */
export function loadConfig(env: Env, options: LoadOptions = {}): Config {
  const readFile = options.readFile ?? ((p: string) => readFileSync(p, 'utf8'));
  const r = new Reader(env);
  checkUnknown(r, env);

  const host = r.raw('AMI_HOST') ?? '';
  if (!/^[A-Za-z0-9.:_-]+$/.test(host)) r.fail('AMI_HOST', `"${host}" is not valid; expected a host name or IP address`);
  const needAmi = options.purpose === undefined || options.purpose === 'daemon';
  const username = r.raw('AMI_USERNAME');
  if (username === undefined && needAmi) r.fail('AMI_USERNAME', 'not set; expected the manager.conf user that has `read = security`');
  const pingInterval = r.duration('AMI_PING_INTERVAL', { min: 1 });
  const pingTimeout = r.duration('AMI_PING_TIMEOUT', { min: 1 });
  const ami: AmiConfig = {
    host,
    port: r.int('AMI_PORT', 1, 65535),
    username: username ?? '',
    secret: needAmi ? readSecret(r, readFile) : new Secret(''),
    pingInterval,
    pingTimeout,
    reconnectMax: r.duration('AMI_RECONNECT_MAX', { min: 1 }),
    connectTimeout: r.duration('AMI_CONNECT_TIMEOUT', { min: 1 }),
    giveUp: r.duration('AMI_GIVEUP'),
  };

  const banTime = r.duration('BAN_BANTIME', { permanent: true, min: 1 });
  const maxTime = r.duration('BAN_MAXTIME', { min: 1 });
  const ignore = readIgnoreIp(r, readFile);
  const maxRetry = r.int('BAN_MAXRETRY', 1, 1000);
  const ban: BanPolicyConfig = {
    events: readEvents(r),
    maxRetry,
    findTime: r.duration('BAN_FINDTIME', { min: 1 }),
    banTime,
    increment: r.bool('BAN_INCREMENT'),
    factor: r.number('BAN_FACTOR', 0),
    multipliers: readMultipliers(r),
    maxTime,
    rndTime: r.duration('BAN_RNDTIME'),
    ignoreIp: ignore.cidrs,
    ignoreHosts: ignore.hosts,
    dnsRefresh: r.duration('BAN_DNS_REFRESH', { min: 1 }),
    dnsServers: readDnsServers(r),
    ignoreIpFile: ignore.file,
    ignoreSelf: r.bool('BAN_IGNORESELF'),
    historyKeep: Math.max(r.duration('BAN_HISTORY_KEEP', { min: 1 }), maxTime),
    collapseWindow: r.duration('BAN_COLLAPSE_WINDOW'),
    challengeTimeout: r.duration('BAN_CHALLENGE_TIMEOUT'),
    unansweredMaxRetry: r.int('BAN_UNANSWERED_MAXRETRY', 0, 1000),
    v6Prefix: r.int('BAN_V6_PREFIX', 32, 128),
    v4Prefix: r.int('BAN_V4_PREFIX', 16, 32),
    subnetMaxRetry: readSubnetMaxRetry(r, maxRetry),
    subnetEscalate: r.int('BAN_SUBNET_ESCALATE', 0, 1000),
    v4SubnetMaxRetry: r.int('BAN_V4_SUBNET_MAXRETRY', 0, 100_000),
    v4SubnetEscalate: r.int('BAN_V4_SUBNET_ESCALATE', 0, 1000),
    trustSuccess: r.bool('BAN_TRUST_SUCCESS'),
    trustTtl: r.duration('BAN_TRUST_TTL', { min: 1 }),
    maxTracked: r.int('BAN_MAX_TRACKED', 1, 100_000_000),
  };

  const firewall = r.oneOf<FirewallKind>('FIREWALL', ['nftables', 'dry-run']);
  const table = r.raw('NFT_TABLE') ?? '';
  if (!/^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(table)) {
    r.fail('NFT_TABLE', `"${table}" is not valid; expected a letter then up to 31 letters, digits or _`);
  }
  const nftables: NftablesConfig = {
    table,
    blockType: r.oneOf('NFT_BLOCKTYPE', ['drop', 'reject']),
    ports: readPorts(r),
    cleanupOnExit: r.bool('NFT_CLEANUP_ON_EXIT'),
    backend: r.oneOf('NFT_BACKEND', ['auto', 'libnftables', 'nft']),
    checkInterval: r.duration('NFT_CHECK_INTERVAL'),
  };
  const stateDir = r.raw('STATE_DIR') ?? '';
  if (!stateDir.startsWith('/')) r.fail('STATE_DIR', `"${stateDir}" is not valid; expected an absolute directory path`);
  const token = r.raw('CONTROL_TOKEN');
  if (token !== undefined && /[\r\n]/.test(token)) r.fail('CONTROL_TOKEN', 'holds a CR or LF; expected one line');
  const group = r.raw('CONTROL_GROUP');
  if (group !== undefined && !/^[A-Za-z_][A-Za-z0-9_.-]*\$?$|^\d+$/.test(group)) r.fail('CONTROL_GROUP', `"${group}" is not valid; expected a group name or id`);
  const control = { listen: readControlListen(r, stateDir), token: token === undefined ? undefined : new Secret(token), group };
  const metricsListen = readMetricsListen(r);
  const log = {
    level: r.oneOf<LogLevel>('LOG_LEVEL', ['error', 'warn', 'info', 'debug']),
    format: r.oneOf<LogFormat>('LOG_FORMAT', ['auto', 'json', 'text']),
  };

  const fleet = options.purpose === 'daemon' || options.purpose === undefined ? readFleet(r, readFile, options.hostname ?? 'localhost') : undefined;

  if (r.problems.length > 0) throw new ConfigError(r.problems);
  return deepFreeze({ ami, ban, firewall, nftables, stateDir, control, metricsListen, log, fleet });
}
