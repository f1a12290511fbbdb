// Every environment variable ami2ban reads: name, default (as text) and meaning.
// The README's configuration table and `.env.example` are checked against this list.

export interface VariableDoc {
  readonly name: string;
  /** Default as the operator would write it; undefined = required or none. */
  readonly default: string | undefined;
  readonly meaning: string;
  readonly secret?: boolean;
  /** An empty value means none (an empty list), not the default. */
  readonly emptyIsValue?: boolean;
}

export const DEFAULT_BAN_EVENTS = 'InvalidAccountID,ChallengeResponseFailed,FailedACL,InvalidPassword,UnexpectedAddress';

export const VARIABLES: readonly VariableDoc[] = [
  { name: 'AMI_HOST', default: '127.0.0.1', meaning: 'Asterisk manager (AMI) host' },
  { name: 'AMI_PORT', default: '5038', meaning: 'Asterisk manager (AMI) TCP port' },
  { name: 'AMI_USERNAME', default: undefined, meaning: 'the manager.conf user (needs `read = security`); required' },
  { name: 'AMI_SECRET', default: undefined, meaning: 'its secret; this or AMI_SECRET_FILE is required', secret: true },
  { name: 'AMI_SECRET_FILE', default: undefined, meaning: 'a file holding the secret (container secrets); trailing newline ignored' },
  { name: 'AMI_PING_INTERVAL', default: '15s', meaning: 'how often a keep-alive Ping is sent' },
  { name: 'AMI_PING_TIMEOUT', default: '5s', meaning: 'a Ping (or login) unanswered this long drops the connection and reconnects' },
  { name: 'AMI_CONNECT_TIMEOUT', default: '10s', meaning: 'a TCP connect to AMI unanswered this long (a black hole) is abandoned and retried' },
  { name: 'AMI_GIVEUP', default: '5m', meaning: 'exit non-zero after this long without an AMI login, so that the orchestrator restarts us (a sidecar left in a dead network namespace); 0 = never' },
  { name: 'AMI_RECONNECT_MAX', default: '30s', meaning: 'cap of the jittered exponential reconnect backoff (starts near 0.5 s)' },
  { name: 'BAN_EVENTS', default: DEFAULT_BAN_EVENTS, meaning: 'security events that count as failures (only with Severity Error)', emptyIsValue: true },
  { name: 'BAN_MAXRETRY', default: '3', meaning: 'failures within BAN_FINDTIME that trigger a ban' },
  { name: 'BAN_FINDTIME', default: '10m', meaning: 'sliding window in which failures are counted' },
  { name: 'BAN_BANTIME', default: '1h', meaning: 'ban duration; -1 = permanent' },
  { name: 'BAN_INCREMENT', default: 'false', meaning: 'lengthen the ban of an address banned before (fail2ban bantime.increment)' },
  { name: 'BAN_FACTOR', default: '1', meaning: 'bantime.factor of the increment formula' },
  { name: 'BAN_MULTIPLIERS', default: '', meaning: 'bantime.multipliers, e.g. `1 5 30 60 300 720 1440 2880`; empty = the 2^n formula', emptyIsValue: true },
  { name: 'BAN_MAXTIME', default: '1w', meaning: 'cap of an incremented ban time' },
  { name: 'BAN_RNDTIME', default: '0', meaning: 'random 0..rndtime added to an incremented ban time' },
  { name: 'BAN_IGNOREIP', default: '127.0.0.1/8,::1', meaning: 'addresses, CIDRs (v4 and v6) and host names (trunks by name: their A and AAAA addresses) never counted nor banned, comma or space separated; empty = none', emptyIsValue: true },
  { name: 'BAN_IGNOREIP_FILE', default: undefined, meaning: 'a file of more addresses/CIDRs/host names never banned, one per line (`#` comments); re-read on SIGHUP' },
  { name: 'BAN_DNS_REFRESH', default: '5m', meaning: 'how often host names of the ignore list are resolved again (the last good answer is kept when resolution fails)' },
  { name: 'BAN_DNS_SERVERS', default: '', meaning: 'DNS servers for those host names, e.g. `192.0.2.53,[2001:db8::53]:53`; empty = the system resolver', emptyIsValue: true },
  { name: 'BAN_IGNORESELF', default: 'true', meaning: "never ban this host's own addresses, the AMI host's and the control listener's (apart from BAN_IGNOREIP; fail2ban's ignoreself)" },
  { name: 'BAN_HISTORY_KEEP', default: '30d', meaning: 'how long ban history is kept (for incremental ban time); never shorter than BAN_MAXTIME' },
  { name: 'BAN_COLLAPSE_WINDOW', default: '2s', meaning: 'how long a SIP request that raised a counted event but no challenge outcome yet is remembered; its further events count once (one failed request = one failure)' },
  { name: 'BAN_CHALLENGE_TIMEOUT', default: '5s', meaning: 'a SIP challenge (`ChallengeSent`) with no response on its Call-ID within this time is unanswered; 0 = off' },
  { name: 'BAN_V6_PREFIX', default: '64', meaning: 'the network an IPv6 address is counted in as well (attackers rotate through their /64): 32 to 128' },
  { name: 'BAN_SUBNET_MAXRETRY', default: 'auto', meaning: 'failures from one IPv6 network (BAN_V6_PREFIX) within BAN_FINDTIME that ban the network; auto = 2 × BAN_MAXRETRY; 0 = off' },
  { name: 'BAN_SUBNET_ESCALATE', default: '3', meaning: 'addresses of one IPv6 network banned at once that escalate to a ban of the network; 0 = off' },
  { name: 'BAN_V4_PREFIX', default: '24', meaning: 'the network an IPv4 address is counted in for escalation: 16 to 32' },
  { name: 'BAN_V4_SUBNET_MAXRETRY', default: '0', meaning: 'failures from one IPv4 network (BAN_V4_PREFIX) within BAN_FINDTIME that ban the network; 0 = off (CGNAT and offices share /24s)' },
  { name: 'BAN_V4_SUBNET_ESCALATE', default: '5', meaning: 'addresses of one IPv4 network banned at once that escalate to a ban of the network; 0 = off' },
  { name: 'BAN_TRUST_SUCCESS', default: 'true', meaning: 'an address and account that logged in (SIP SuccessfulAuth) are trusted: that account\'s failures from that address weigh a quarter, unless maxretry of them come within a minute; other accounts count in full' },
  { name: 'BAN_TRUST_TTL', default: '7d', meaning: 'how long a pair stays trusted after its last successful login' },
  { name: 'BAN_UNANSWERED_MAXRETRY', default: '10', meaning: 'unanswered challenges from one address within BAN_FINDTIME that ban it (slow scanners Asterisk reports no failure for); 0 = off' },
  { name: 'BAN_MAX_TRACKED', default: '1000000', meaning: 'cap on addresses with pending failures; the oldest are evicted first (counted)' },
  { name: 'FIREWALL', default: 'nftables', meaning: '`nftables` (bans in the kernel) or `dry-run` (log bans only)' },
  { name: 'NFT_TABLE', default: 'ami2ban', meaning: 'our own table, `table inet <name>`; no other table is touched' },
  { name: 'NFT_BLOCKTYPE', default: 'drop', meaning: '`drop` (prerouting hook, raw priority) or `reject` (input hook, filter - 1, `reject with icmpx admin-prohibited`)' },
  { name: 'NFT_PORTS', default: '', meaning: 'limit bans to these ports, e.g. `udp/5060,tcp/5060-5061,5061` (bare port = tcp and udp); empty = all traffic', emptyIsValue: true },
  { name: 'NFT_CLEANUP_ON_EXIT', default: 'false', meaning: 'delete our table on shutdown (by default bans stay in the kernel)' },
  { name: 'NFT_BACKEND', default: 'auto', meaning: '`auto` (the libnftables addon, else `nft -j -f -`), `libnftables` or `nft`' },
  { name: 'NFT_CHECK_INTERVAL', default: '10s', meaning: 'how often our table is checked; if flushed, it is recreated and active bans re-added; 0 = never' },
  { name: 'STATE_DIR', default: '/var/lib/ami2ban', meaning: 'directory of the ban database, `ami2ban.sqlite`' },
  { name: 'CONTROL_LISTEN', default: undefined, meaning: 'control API: a unix socket path (default `STATE_DIR/control.sock`, mode 0600), or `host:port` (then CONTROL_TOKEN is required)' },
  { name: 'CONTROL_TOKEN', default: undefined, meaning: 'every control request needs `Authorization: Bearer <token>`; required when CONTROL_LISTEN is TCP', secret: true },
  { name: 'CONTROL_GROUP', default: undefined, meaning: 'a group (name or id) allowed to use the control socket: mode 0660 instead of 0600' },
  { name: 'METRICS_LISTEN', default: undefined, meaning: '`host:port` serving only /metrics, /healthz and /readyz, without a token (for Prometheus and health checks); none by default' },
  { name: 'FLEET_REDIS_URL', default: undefined, meaning: 'share bans with the other hosts through this Redis: `redis://[user:password@]host:port[/db]` or `rediss://` (TLS); unset = no fleet', secret: true },
  { name: 'FLEET_REDIS_PASSWORD_FILE', default: undefined, meaning: "a file holding the Redis password (instead of the URL's); trailing newline ignored" },
  { name: 'FLEET_REDIS_CA_FILE', default: undefined, meaning: "PEM file of the CA that signed the Redis server's certificate, for rediss:// (default: the system's CAs)" },
  { name: 'FLEET_REDIS_SENTINELS', default: '', meaning: 'Redis Sentinel `host:port` list: the primary is asked of them at every connection (then FLEET_REDIS_URL, if set, gives only credentials, TLS and db)', emptyIsValue: true },
  { name: 'FLEET_REDIS_MASTER', default: 'mymaster', meaning: "the Sentinel primary's name" },
  { name: 'FLEET_NAME', default: 'ami2ban', meaning: 'the key prefix shared by one fleet (letters, digits, `_.-`)' },
  { name: 'FLEET_HOST_ID', default: undefined, meaning: "this host's name in the fleet; default: the host name" },
  { name: 'FLEET_APPLY', default: 'true', meaning: "apply the other hosts' bans here (through this host's ignore list and ignore-self)" },
  { name: 'FLEET_PUBLISH', default: 'true', meaning: "share this host's bans and manual unbans with the others" },
  { name: 'FLEET_MAXRETRY', default: '0', meaning: 'failures of one address across all hosts within FLEET_FINDTIME that ban it everywhere, even when no host reached BAN_MAXRETRY; 0 = off' },
  { name: 'FLEET_FINDTIME', default: '10m', meaning: 'window of the fleet-wide count' },
  { name: 'FLEET_REMOTE_RATE', default: '1000', meaning: "other hosts' bans applied per second past the burst; more are refused and counted (a runaway or hostile host)" },
  { name: 'FLEET_REMOTE_BURST', default: '20000', meaning: "other hosts' bans applied at once before FLEET_REMOTE_RATE limits them" },
  { name: 'FLEET_STREAM_MAXLEN', default: '100000', meaning: 'decisions kept on the stream (approximately); a host further behind catches up from the snapshot' },
  { name: 'FLEET_OUTBOX', default: '100000', meaning: 'decisions kept for publishing while Redis is unreachable; past it the oldest are dropped (counted; the bans among them are re-published by anti-entropy)' },
  { name: 'FLEET_RESYNC', default: '5m', meaning: "how often this host re-asserts its bans the bus no longer holds (heals what a Redis failover lost)" },
  { name: 'LOG_LEVEL', default: 'info', meaning: '`error`, `warn`, `info` or `debug`' },
  { name: 'LOG_FORMAT', default: 'auto', meaning: '`json`, `text`, or `auto` (JSON when stdout is not a TTY)' },
];

/** Prefixes that belong to ami2ban: an unknown variable with one of them is a configuration error. */
export const OWN_PREFIXES = ['AMI_', 'BAN_', 'NFT_', 'CONTROL_', 'METRICS_', 'FLEET_'] as const;
