import { describe, expect, it } from 'vitest';
import { type KernelBan, type ReconcilePolicy, type StoreBan, reconcile } from '../src/service/reconcile.js';

const NOW = 1_000_000_000_000;
const S = 1000;
const H = 3600 * S;

function stored(ip: string, expiresIn: number, over: Partial<StoreBan> = {}): StoreBan {
  return { ip, family: ip.includes(':') ? 'ipv6' : 'ipv4', expiresAt: NOW + expiresIn, enforcer: 'nftables', reason: 'threshold', ...over };
}

function kernel(ip: string, expiresIn: number): KernelBan {
  return { ip, family: ip.includes(':') ? 'ipv6' : 'ipv4', expiresAt: NOW + expiresIn };
}

const POLICY: ReconcilePolicy = {
  maxSeconds: 24 * 3600,
  enforcer: 'nftables',
  excluded: (ip) => (ip === '192.0.2.1' ? 'self' : ip.startsWith('10.') ? 'ignore list' : null),
};

type Row = [name: string, store: StoreBan[], kernel: KernelBan[], policy: Partial<ReconcilePolicy>, expected: Record<string, unknown>];

const ROWS: Row[] = [
  ['in both, same time: kept, not re-applied', [stored('198.51.100.1', H)], [kernel('198.51.100.1', H - 2 * S)], {}, { keep: [['198.51.100.1', NOW + H, false, null]] }],
  ['lost from the kernel (reboot): put back', [stored('198.51.100.1', H)], [], {}, { keep: [['198.51.100.1', NOW + H, true, null]] }],
  ['shorter in the kernel than recorded (cut-off extension): put back', [stored('198.51.100.1', 2 * H)], [kernel('198.51.100.1', H)], {}, { keep: [['198.51.100.1', NOW + 2 * H, true, null]] }],
  ['longer in the kernel (committed before its write): left alone', [stored('198.51.100.1', H)], [kernel('198.51.100.1', 2 * H)], {}, { keep: [['198.51.100.1', NOW + H, false, null]] }],
  ['longer than the policy now gives: capped, and shortened in the kernel', [stored('198.51.100.1', 7 * 24 * H)], [kernel('198.51.100.1', 7 * 24 * H)], {}, { keep: [['198.51.100.1', NOW + 24 * H, true, NOW + 7 * 24 * H]] }],
  ['a manual ban keeps the length the operator chose', [stored('198.51.100.1', 7 * 24 * H, { reason: 'manual' })], [kernel('198.51.100.1', 7 * 24 * H)], {}, { keep: [['198.51.100.1', NOW + 7 * 24 * H, false, null]] }],
  ['permanent, policy permanent: kept', [stored('198.51.100.1', Infinity)], [kernel('198.51.100.1', Infinity)], { maxSeconds: Infinity }, { keep: [['198.51.100.1', Infinity, false, null]] }],
  ['permanent, policy now 1 day: capped', [stored('198.51.100.1', Infinity)], [kernel('198.51.100.1', Infinity)], {}, { keep: [['198.51.100.1', NOW + 24 * H, true, Infinity]] }],
  ['stored, now on the ignore list: lifted from store and kernel', [stored('10.1.1.1', H)], [kernel('10.1.1.1', H)], {}, { lift: [['10.1.1.1', 'ignore list', true]] }],
  ['stored, now self, not in the kernel: lifted from the store', [stored('192.0.2.1', H)], [], {}, { lift: [['192.0.2.1', 'self', false]] }],
  ['kernel only, now ignored: removed from the kernel', [], [kernel('10.2.2.2', H)], {}, { lift: [['10.2.2.2', 'ignore list', true]] }],
  ['kernel only: adopted', [], [kernel('198.51.100.9', H)], {}, { adopt: ['198.51.100.9'] }],
  ['the kernel writes ::1.2.3.4 for what the store holds canonically', [stored('::102:304', H)], [kernel('::1.2.3.4', H)], {}, { keep: [['::102:304', NOW + H, false, null]] }],
  ['the kernel and the store spell an IPv6 address differently', [stored('2001:db8::1', H)], [kernel('2001:DB8:0:0::1', H)], {}, { keep: [['2001:db8::1', NOW + H, false, null]] }],
  ['recorded under dry-run: never promoted to a kernel ban', [stored('198.51.100.1', H, { enforcer: 'dry-run' })], [], {}, { notPromoted: ['198.51.100.1'] }],
  ['recorded under dry-run but in the kernel anyway: adopted as a kernel ban', [stored('198.51.100.1', H, { enforcer: 'dry-run' })], [kernel('198.51.100.1', H)], {}, { notPromoted: ['198.51.100.1'], adopt: ['198.51.100.1'] }],
  ['nftables bans seen from a dry-run start: kept (the dry-run firewall applies nothing)', [stored('198.51.100.1', H)], [], { enforcer: 'dry-run' }, { keep: [['198.51.100.1', NOW + H, true, null]] }],
  ['already over: dropped', [stored('198.51.100.1', -S)], [], {}, {}],
  ['a kernel element that is not an address: reported, untouched', [], [kernel('garbage', H)], {}, { invalid: ['garbage'] }],
];

describe('reconcile(store, kernel, policy, ignore, now)', () => {
  it.each(ROWS)('%s', (_name, store, kern, policy, expected) => {
    const plan = reconcile(store, kern, { ...POLICY, ...policy }, NOW);
    const got = {
      keep: plan.keep.map((k) => [k.ban.ip, k.expiresAt, k.apply, k.cappedFrom]),
      lift: plan.lift.map((l) => [l.ip, l.why, l.inKernel]),
      adopt: plan.adopt.map((a) => a.ip),
      notPromoted: plan.notPromoted.map((n) => n.ip),
      invalid: plan.invalid,
    };
    expect(got).toEqual({ keep: [], lift: [], adopt: [], notPromoted: [], invalid: [], ...expected });
  });
});
