import { execFileSync } from 'node:child_process';

/**
 * Fails loudly unless this process runs in the private network namespace made by
 * scripts/netns-exec.sh (as `npm test` does): these tests flush rulesets.
 */
export function assertPrivateNetns(): void {
  const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).trim().split('\n');
  if (process.env.AMI2BAN_NETNS !== 'private' || links.length !== 1 || !links[0]?.includes(' lo:')) {
    throw new Error('kernel tests must run in a private network namespace: use `npm test` (scripts/netns-exec.sh vitest run)');
  }
}

export function nft(...args: string[]): string {
  return execFileSync('nft', args, { encoding: 'utf8', maxBuffer: 256 << 20 });
}

export function nftJson(...args: string[]): unknown {
  return JSON.parse(nft('-j', ...args)) as unknown;
}

type Val = string | { prefix: { addr: string; len: number } };
const text = (v: Val): string => (typeof v === 'string' ? v : `${v.prefix.addr}/${String(v.prefix.len)}`);

/** Elements of one of our sets, as `ip → seconds left` (Infinity when permanent); networks as `addr/len`. */
export function setElements(table: string, set: string): Map<string, number> {
  const out = new Map<string, number>();
  const listed = nftJson('list', 'set', 'inet', table, set) as { nftables: { set?: { elem?: unknown[] } }[] };
  for (const item of listed.nftables) {
    for (const e of item.set?.elem ?? []) {
      const el = (e as { elem?: { val: Val; expires?: number } }).elem;
      if (el === undefined) out.set(text(e as Val), Infinity);
      else out.set(text(el.val), el.expires ?? Infinity);
    }
  }
  return out;
}
