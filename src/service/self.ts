// The host's own addresses, for ignore-self: what is on our interfaces (in the sidecar, Asterisk's
// network namespace), the AMI host and the control listener. Banning any of them blinds us.
import { lookup as dnsLookup } from 'node:dns/promises';
import { networkInterfaces } from 'node:os';
import { type IpAddress, parseIp } from '../common/ip.js';

export interface SelfSources {
  /** AMI_HOST: an address or a name. */
  readonly amiHost: string;
  /** The control listener's host, when it listens on TCP. */
  readonly controlHost?: string;
}

export interface SelfProbe {
  readonly interfaces?: () => Readonly<Record<string, readonly { address: string }[] | undefined>>;
  readonly resolve?: (host: string) => Promise<readonly string[]>;
  /** A name that does not resolve within this is skipped until the next refresh. */
  readonly resolveTimeoutMs?: number;
}

export interface SelfResult {
  readonly addresses: IpAddress[];
  /** Hosts that could not be resolved, with why. */
  readonly unresolved: { host: string; error: string }[];
}

async function defaultResolve(host: string): Promise<readonly string[]> {
  return (await dnsLookup(host, { all: true })).map((a) => a.address);
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`no answer within ${ms} ms`));
    }, ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/** Exact addresses only (not the interfaces' networks): the neighbours on a LAN stay bannable. */
export async function selfAddresses(sources: SelfSources, probe: SelfProbe = {}): Promise<SelfResult> {
  const found = new Map<string, IpAddress>();
  const add = (text: string): void => {
    const a = parseIp(text);
    if (a !== null) found.set(a.ip, { family: a.family, ip: a.ip });
  };
  for (const list of Object.values((probe.interfaces ?? networkInterfaces)())) for (const i of list ?? []) add(i.address);
  const unresolved: { host: string; error: string }[] = [];
  for (const host of [sources.amiHost, sources.controlHost]) {
    if (host === undefined || host === '') continue;
    if (parseIp(host) !== null) {
      add(host);
      continue;
    }
    try {
      for (const a of await withTimeout((probe.resolve ?? defaultResolve)(host), probe.resolveTimeoutMs ?? 5000)) add(a);
    } catch (err) {
      unresolved.push({ host, error: err instanceof Error ? err.message : String(err) });
    }
  }
  return { addresses: [...found.values()], unresolved };
}
