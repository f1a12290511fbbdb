// The port through which a host shares decisions with the others. Never on the local ban path:
// publishing queues and returns; a bus that is down only delays what the others learn.
import type { DecodeError, FleetBan, FleetDecision } from './decision.js';

export type BusState = 'connecting' | 'connected' | 'degraded' | 'stopped';

export interface FleetHost {
  readonly id: string;
  /** Epoch ms of its last heartbeat. */
  readonly lastSeen: number;
}

export interface BusStatus {
  readonly state: BusState;
  readonly hostId: string;
  /** Where the bus is (no credentials), e.g. `redis://10.0.0.5:6379` or `sentinel mymaster@…`. */
  readonly server: string;
  readonly connectedSince: number | null;
  readonly lastError: string | null;
  /** Decisions waiting to be published (kept while the bus is down, oldest dropped past the cap). */
  readonly outbox: number;
  /** Dropped from a full outbox (anti-entropy re-publishes the bans among them). */
  readonly outboxDropped: number;
  /** How far behind the stream's newest entry this host's reading is, in ms (0 when caught up). */
  readonly lagMs: number;
  /** Last stream position read. */
  readonly cursor: string | null;
  readonly published: { readonly ban: number; readonly unban: number };
  readonly snapshots: number;
  readonly reconnects: number;
  readonly hosts: readonly FleetHost[];
}

export interface BusEvents {
  /** Others' decisions from the stream, in order (this host's own are skipped). */
  decisions: [decisions: readonly FleetDecision[]];
  /**
   * Every ban in force in the fleet (a catch-up), in parts as they are read (applied while the
   * rest is read); `first` and `last` mark the first and the final part (one part may be both).
   * complete: what is not in it is no longer banned anywhere; false when the bus lost its data
   * (Redis restarted empty, a failover): then absence says nothing, and the hosts re-assert their bans.
   */
  snapshot: [bans: readonly FleetBan[], complete: boolean, first: boolean, last: boolean];
  /** This host won the fleet-wide threshold for an address: it bans it for everyone. */
  threshold: [ip: string, failures: number];
  state: [state: BusState, error: string | null];
  /** An entry read from the bus that is not a valid decision. */
  rejected: [reason: DecodeError];
}

export interface DecisionBus {
  /** Opens the connection ahead of start(), reading nothing: start() takes it over. */
  prepare(): void;
  start(): void;
  stop(): Promise<void>;
  /** Queues a decision of this host for the others (those decided together go out together, after their kernel transaction). */
  publish(d: FleetDecision): void;
  /** Adds failures of an address seen here to the fleet-wide count (batched). */
  countFailures(ip: string, n: number): void;
  status(): BusStatus;
  on<K extends keyof BusEvents>(event: K, listener: (...args: BusEvents[K]) => void): this;
}
