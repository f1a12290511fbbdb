// Start-up reconciliation of the ban store and the kernel: a pure function from what each holds,
// the current policy and ignore lists, to what must be done. No I/O, so every case is a table row.
import { type IpFamily, parseBanTarget } from '../common/ip.js';

export type Enforcer = 'nftables' | 'dry-run';

export interface StoreBan {
  readonly ip: string;
  readonly family: IpFamily;
  /** Epoch ms; Infinity = permanent. */
  readonly expiresAt: number;
  /** What applied it: a dry-run ban was never in the kernel and is never promoted to one. */
  readonly enforcer: Enforcer;
  /** `manual` bans keep the length the operator chose; others are capped at the current policy. */
  readonly reason: string;
}

export interface KernelBan {
  readonly ip: string;
  readonly family: IpFamily;
  /** Epoch ms; Infinity = permanent. */
  readonly expiresAt: number;
}

export interface ReconcilePolicy {
  /** The longest ban the current policy gives (Infinity when permanent bans are possible). */
  readonly maxSeconds: number;
  /** The enforcer now in use. */
  readonly enforcer: Enforcer;
  /** Why an address may not be banned now, or null. */
  readonly excluded: (ip: string) => string | null;
  /** A kernel ban this much shorter than recorded is put back (a cut-off commit). */
  readonly toleranceMs?: number;
}

export interface Plan<T> {
  /** Stored bans to keep in force; `expiresAt` may be capped; `apply` = put into the kernel. */
  readonly keep: { readonly ban: T; readonly expiresAt: number; readonly apply: boolean; readonly cappedFrom: number | null }[];
  /** In the kernel, unknown to the store: adopt and record. */
  readonly adopt: KernelBan[];
  /** Stored and/or in the kernel but now excluded (ignore list, self): remove and close. */
  readonly lift: { readonly ip: string; readonly family: IpFamily; readonly why: string; readonly inKernel: boolean; readonly stored: T | null }[];
  /** Recorded by another enforcer (dry-run): closed, never applied. */
  readonly notPromoted: T[];
  /** Kernel elements whose text is not an address (ignored). */
  readonly invalid: string[];
}

const DEFAULT_TOLERANCE_MS = 5000;

export function reconcile<T extends StoreBan>(stored: readonly T[], kernel: readonly KernelBan[], policy: ReconcilePolicy, now: number): Plan<T> {
  const plan: Plan<T> = { keep: [], adopt: [], lift: [], notPromoted: [], invalid: [] };
  const inKernel = new Map<string, KernelBan>();
  for (const k of kernel) {
    // The kernel prints addresses its own way (`::1.2.3.4`): compare canonical texts.
    const a = parseBanTarget(k.ip);
    if (a === null) plan.invalid.push(k.ip);
    else inKernel.set(a.ip, { ip: a.ip, family: a.family, expiresAt: k.expiresAt });
  }
  const cap = policy.maxSeconds === Number.POSITIVE_INFINITY ? Number.POSITIVE_INFINITY : now + policy.maxSeconds * 1000;
  const tolerance = policy.toleranceMs ?? DEFAULT_TOLERANCE_MS;
  for (const s of stored) {
    if (s.expiresAt <= now) continue;
    const ip = parseBanTarget(s.ip)?.ip ?? s.ip;
    const k = inKernel.get(ip);
    inKernel.delete(ip);
    const why = policy.excluded(ip);
    if (why !== null) {
      plan.lift.push({ ip, family: s.family, why, inKernel: k !== undefined, stored: s });
      continue;
    }
    if (s.enforcer !== policy.enforcer && s.enforcer === 'dry-run') {
      plan.notPromoted.push(s);
      // What the kernel holds of it was put there by someone else: it stays, adopted.
      if (k !== undefined) plan.adopt.push(k);
      continue;
    }
    const expiresAt = s.reason === 'manual' ? s.expiresAt : Math.min(s.expiresAt, cap);
    const capped = expiresAt < s.expiresAt;
    // Missing or shorter in the kernel (a reboot, a cut-off commit): put back. Longer there is left
    // alone (a newer ban committed before its write), unless the policy now caps it.
    const apply = k === undefined || expiresAt - k.expiresAt > tolerance || (capped && k.expiresAt - expiresAt > tolerance);
    plan.keep.push({ ban: s, expiresAt, apply, cappedFrom: capped ? s.expiresAt : null });
  }
  for (const k of inKernel.values()) {
    const why = policy.excluded(k.ip);
    if (why !== null) plan.lift.push({ ip: k.ip, family: k.family, why, inKernel: true, stored: null });
    else if (k.expiresAt > now) plan.adopt.push(k);
  }
  return plan;
}
