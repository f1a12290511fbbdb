// What the control API needs of the running service; the daemon implements it.

export interface StatusReport {
  readonly version: string;
  readonly uptimeSeconds: number;
  readonly ami: {
    readonly state: string;
    readonly connected: boolean;
    /** Seconds since the last AMI message; null before the first. */
    readonly lastEventAgeSeconds: number | null;
    readonly reconnects: number;
    /** Why the last attempt or session ended (wrong secret, refused, timeout…); null once logged in. */
    readonly lastError: { readonly kind: string; readonly message: string; readonly at: string } | null;
  };
  readonly firewall: {
    readonly backend: string;
    readonly state: 'starting' | 'ready' | 'stopped';
    /** Bans decided but not in the kernel (being retried). */
    readonly unenforced: number;
    readonly errors: number;
    readonly lastError: string | null;
  };
  readonly store: {
    readonly path: string;
    readonly healthy: boolean;
    readonly pending: number;
    readonly writeErrors: number;
    readonly dropped: number;
    readonly lastError: string | null;
  };
  readonly trackedAddresses: number;
  readonly activeBans: number;
  readonly counts: { readonly events: number; readonly failures: number; readonly bans: number; readonly unbans: number };
  /** The fleet's bus (Redis); null when the fleet is off. degraded: bans stay local until it is back. */
  readonly fleet: { readonly state: string; readonly hostId: string; readonly outbox: number; readonly lastError: string | null } | null;
}

export interface BanView {
  readonly ip: string;
  readonly family: string;
  /** ISO time the ban started. */
  readonly since: string;
  /** ISO time it ends; null = permanent. */
  readonly expiresAt: string | null;
  /** Seconds left; null = permanent. */
  readonly remainingSeconds: number | null;
  /** Including this ban, within the kept history. */
  readonly timesBanned: number;
  readonly reason: string;
  readonly failures: number;
  readonly events: Readonly<Record<string, number>>;
  /** The fleet host that decided it; null when this host did. */
  readonly origin: string | null;
  /** A ban of this host kept from the fleet (`--local`). */
  readonly local: boolean;
}

/** The fleet as this host sees it (`ami2ban fleet`, GET /v1/fleet). */
export interface FleetView {
  readonly enabled: boolean;
  readonly hostId: string | null;
  readonly server: string | null;
  readonly state: string;
  /** ISO time; null while not connected. */
  readonly connectedSince: string | null;
  readonly lastError: string | null;
  readonly apply: boolean;
  readonly publish: boolean;
  readonly outbox: number;
  readonly outboxDropped: number;
  readonly streamLagSeconds: number;
  readonly cursor: string | null;
  readonly hosts: readonly { readonly id: string; readonly lastSeen: string; readonly ageSeconds: number }[];
  readonly published: { readonly ban: number; readonly unban: number };
  readonly applied: { readonly ban: number; readonly unban: number };
  readonly rejected: Readonly<Record<string, number>>;
  readonly snapshots: number;
  readonly reconnects: number;
  /** Bans in force here that another host decided. */
  readonly remoteBans: number;
}

export type ManualBanOutcome =
  | { readonly kind: 'banned'; readonly ban: BanView }
  | { readonly kind: 'invalid'; readonly message: string }
  | { readonly kind: 'refused'; readonly message: string }
  /** Not acknowledged: the kernel (502) or the database (503) failed; the message says which and why. */
  | { readonly kind: 'failed'; readonly status: 502 | 503; readonly message: string };

export type UnbanOutcome =
  /** Lifted from the kernel and the lifting durable in the database (a restart does not put it back). */
  | { readonly kind: 'unbanned' }
  | { readonly kind: 'not-banned' }
  | { readonly kind: 'invalid' }
  /** Not acknowledged: the kernel (502: it stays banned) or the database (503: lifted, the write retried) failed. */
  | { readonly kind: 'failed'; readonly status: 502 | 503; readonly message: string };

export interface ExplainedBan {
  readonly since: string;
  /** ISO time; null = permanent. */
  readonly until: string | null;
  /** Which rule: threshold, unanswered, manual, adopted (found in the kernel). */
  readonly rule: string;
  readonly failures: number;
  readonly events: Readonly<Record<string, number>>;
  /** The most recent failures behind it, oldest first (at most 32; fewer when a scan pushed them out). */
  readonly failuresShown: readonly { readonly at: string; readonly event: string; readonly account: string; readonly transport: string }[];
  readonly timesBannedBefore: number;
  /** ISO time and why it ended (expired, manual, replaced, extended, …); null while in force. */
  readonly ended: { readonly at: string; readonly why: string } | null;
}

export type ExplainOutcome =
  | { readonly kind: 'invalid'; readonly message: string }
  | { readonly kind: 'failed'; readonly message: string }
  | {
      readonly kind: 'explained';
      readonly ip: string;
      /** The ban in force and its outcome (enforced, pending, failed), or null. */
      readonly inForce: (BanView & { readonly outcome: string }) | null;
      readonly history: readonly ExplainedBan[];
    };

/** A pair trusted after a successful SIP login (BAN_TRUST_SUCCESS). */
export interface TrustView {
  readonly ip: string;
  readonly account: string;
  /** ISO time. */
  readonly until: string;
}

/** A copy of the ban database written by the daemon (`ami2ban backup`, POST /v1/backup). */
export type BackupOutcome = { readonly kind: 'written'; readonly path: string; readonly bytes: number } | { readonly kind: 'failed'; readonly message: string };

export type RevokeOutcome = { readonly kind: 'invalid'; readonly message: string } | { readonly kind: 'revoked'; readonly revoked: readonly TrustView[] };

export interface ControlTarget {
  status(): StatusReport;
  /** The bans in force, a page at a time: a long list is sent without holding the loop. */
  banPages(size: number): Iterable<BanView[]>;
  /** duration as the operator wrote it (`1h`, `600`, `-1`); undefined = the policy's. */
  /** `replace`: a shorter ban may replace a longer one in force. */
  /** `local`: kept from the fleet (not published). */
  ban(ip: string, duration: string | undefined, force: boolean, replace?: boolean, local?: boolean): Promise<ManualBanOutcome>;
  unban(ip: string): Promise<UnbanOutcome>;
  unbanAll(): Promise<number>;
  /** Why an address is or was banned; invalid = not an address. */
  explain(ip: string): Promise<ExplainOutcome>;
  readiness(): { readonly ready: boolean; readonly reasons: readonly string[] };
  /** Pairs trusted now; empty when BAN_TRUST_SUCCESS is off. */
  trusted(): TrustView[];
  /** Revokes the trust of an address (every account, or one). */
  revokeTrust(ip: string, account: string | undefined): RevokeOutcome;
  fleet(): FleetView;
  /** Writes a consistent copy of the ban database into STATE_DIR. */
  backup(): Promise<BackupOutcome>;
}
