import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readlinkSync } from 'node:fs';

function netnsOfInit(): string | undefined {
  try {
    return readlinkSync('/proc/1/ns/net');
  } catch {
    return undefined; // not ours to read: an unprivileged user namespace, made by netns-exec
  }
}

/**
 * Fails loudly unless this process runs in the private network namespace made by
 * scripts/netns-exec.sh (as `npm test` does): these tests flush rulesets.
 */
export function assertPrivateNetns(): void {
  // Not the namespace of PID 1 (the machine's or the container's); links are no sign: the fleet
  // tests add veth pairs to it meanwhile.
  if (process.env.AMI2BAN_NETNS !== 'private' || readlinkSync('/proc/self/ns/net') === netnsOfInit()) {
    throw new Error('kernel tests must run in a private network namespace: use `npm test` (scripts/netns-exec.sh vitest run)');
  }
}

export function nft(...args: string[]): string {
  return execFileSync('nft', args, { encoding: 'utf8', maxBuffer: 256 << 20 });
}

export function nftJson(...args: string[]): unknown {
  return JSON.parse(nft('-j', ...args)) as unknown;
}

function nftJsonIn(netns: OwnNetns | undefined, args: string[]): unknown {
  if (netns === undefined) return nftJson(...args);
  return JSON.parse(execFileSync(...netns.command('nft', '-j', ...args), { encoding: 'utf8', maxBuffer: 256 << 20 })) as unknown;
}

type Val = string | { prefix: { addr: string; len: number } };
const text = (v: Val): string => (typeof v === 'string' ? v : `${v.prefix.addr}/${String(v.prefix.len)}`);

/** Elements of one of our sets (in the test's namespace, or in `netns`), as `ip → seconds left` (Infinity when permanent); networks as `addr/len`. */
export function setElements(table: string, set: string, netns?: OwnNetns): Map<string, number> {
  const out = new Map<string, number>();
  // A listing that gives an element twice raced the kernel resizing the set and missed as many
  // (see the firewall's wholeListing): listed again, all joined.
  for (let n = 0; n < 4; n++) {
    const listed = nftJsonIn(netns, ['list', 'set', 'inet', table, set]) as { nftables: { set?: { elem?: unknown[] } }[] };
    const mine = new Set<string>();
    let count = 0;
    for (const item of listed.nftables) {
      for (const e of item.set?.elem ?? []) {
        const el = (e as { elem?: { val: Val; expires?: number } }).elem;
        const key = text(el === undefined ? (e as Val) : el.val);
        out.set(key, el === undefined ? Infinity : (el.expires ?? Infinity));
        mine.add(key);
        count++;
      }
    }
    if (mine.size === count) break;
  }
  return out;
}

/**
 * A network namespace of its own, beside the test's (held by a sleeping process), so that a test
 * file can use a ruleset while another file flushes the test namespace's.
 */
export class OwnNetns {
  private readonly holder: ChildProcess;

  constructor() {
    this.holder = spawn('unshare', ['-n', 'sleep', 'infinity'], { stdio: 'ignore' });
  }

  /** Waits until the holder is in its new namespace, then brings its loopback up. */
  async ready(): Promise<this> {
    const mine = readlinkSync('/proc/self/ns/net');
    for (let i = 0; i < 500; i++) {
      let theirs = mine;
      try {
        theirs = readlinkSync(`/proc/${String(this.holder.pid)}/ns/net`);
      } catch {
        // not started yet
      }
      if (theirs !== mine) {
        execFileSync(...this.command('ip', 'link', 'set', 'lo', 'up'));
        return this;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error('the namespace holder did not start');
  }

  /** `[file, args]` running a command inside the namespace (for spawn/execFileSync). */
  command(file: string, ...args: string[]): [string, string[]] {
    return ['nsenter', ['-t', String(this.holder.pid), '-n', '--', file, ...args]];
  }

  close(): void {
    this.holder.kill('SIGKILL');
  }
}
