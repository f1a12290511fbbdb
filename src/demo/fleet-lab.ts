// A fleet on one machine, for the tests and bench:fleet: a real redis-server on this namespace's
// addresses, and ami2ban daemons each in its own network namespace (its own nftables), joined to
// this one by a veth pair (10.77.N.2 there, 10.77.N.1 here), each with its own fake AMI.
// Run it inside a private namespace only (scripts/netns-exec.sh): it adds links and addresses.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ControlClient } from '../control/client.js';
import { FakeAmiServer } from './fake-ami-server.js';

const CREDENTIALS = { AMI_USERNAME: 'ami2ban', AMI_SECRET: 'ami2ban-secret' } as const;

/** bin/ami2ban.js, from the sources (src/demo) or the build (dist/src/demo). */
const BIN = fileURLToPath(new URL(import.meta.url.includes('/dist/') ? '../../../bin/ami2ban.js' : '../../bin/ami2ban.js', import.meta.url));

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '0.0.0.0', () => {
      const a = s.address();
      s.close(() => {
        resolve(typeof a === 'object' && a !== null ? a.port : 0);
      });
    });
  });
}

async function waitFor(what: string, ok: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await ok()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A redis-server (no persistence) on every address of the test namespace. */
export class RedisServer {
  private child: ChildProcess | undefined;

  /** The server's process id, while it runs. */
  get pid(): number | undefined {
    return this.child?.exitCode === null ? this.child.pid : undefined;
  }
  output = '';

  private constructor(
    readonly port: number,
    private readonly args: readonly string[],
    private readonly sentinelConf: string | undefined,
    private readonly tls: TlsFiles | undefined,
  ) {}

  /** A server, or with sentinelConf a sentinel (its configuration file's text); with tls, TLS only on its port. */
  static async start(args: readonly string[] = [], sentinelConf?: string, tls?: TlsFiles): Promise<RedisServer> {
    const r = new RedisServer(await freePort(), args, sentinelConf, tls);
    await r.restart();
    return r;
  }

  async restart(): Promise<void> {
    const dir = mkdtempSync(join(tmpdir(), 'ami2ban-redis-'));
    const common = ['--port', String(this.port), '--bind', '0.0.0.0', '--protected-mode', 'no', '--dir', dir];
    const t = this.tls;
    const tls = t === undefined ? [] : ['--port', '0', '--tls-port', String(this.port), '--tls-cert-file', t.cert, '--tls-key-file', t.key, '--tls-ca-cert-file', t.ca, '--tls-auth-clients', 'no'];
    let argv = [...common, '--save', '', '--appendonly', 'no', ...tls, ...this.args];
    if (this.sentinelConf !== undefined) {
      // A sentinel rewrites its configuration file: it must have one of its own.
      writeFileSync(join(dir, 'sentinel.conf'), this.sentinelConf);
      argv = [join(dir, 'sentinel.conf'), '--sentinel', ...common];
    }
    const child = spawn('redis-server', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    child.stdout.on('data', (d: Buffer) => (this.output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (this.output += d.toString()));
    await waitFor(`redis-server on port ${String(this.port)}`, () => this.output.includes('Ready to accept connections') || this.output.includes('Sentinel ID is'));
  }

  /** redis-cli against it. */
  cli(...args: string[]): string {
    const tls = this.tls === undefined ? [] : ['--tls', '--cacert', this.tls.ca];
    return execFileSync('redis-cli', ['-p', String(this.port), ...tls, ...args], { encoding: 'utf8', maxBuffer: 256 << 20 }).trim();
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const c = this.child;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return;
    this.output = '';
    const exited = new Promise((r) => c.once('exit', r));
    c.kill(signal);
    await exited;
  }
}

/**
 * An address of the test's namespace that every host reaches the same way (through its default
 * route): what Sentinel announces for the primary and replicas.
 */
export const SERVICE_ADDRESS = '10.77.0.1';

export function addServiceAddress(): void {
  const present = execFileSync('ip', ['-o', 'addr', 'show', 'dev', 'lo'], { encoding: 'utf8' }).includes(` ${SERVICE_ADDRESS}/`);
  if (!present) execFileSync('ip', ['addr', 'add', `${SERVICE_ADDRESS}/32`, 'dev', 'lo']);
}

/** Three sentinels watching a primary and its replica, all announcing SERVICE_ADDRESS. */
export class SentinelGroup {
  private constructor(
    readonly primary: RedisServer,
    readonly replica: RedisServer,
    readonly sentinels: readonly RedisServer[],
  ) {}

  static async start(): Promise<SentinelGroup> {
    addServiceAddress();
    const primary = await RedisServer.start(['--replica-announce-ip', SERVICE_ADDRESS]);
    const replica = await RedisServer.start(['--replicaof', SERVICE_ADDRESS, String(primary.port), '--replica-announce-ip', SERVICE_ADDRESS]);
    const sentinels: RedisServer[] = [];
    const conf = [
      `sentinel monitor mymaster ${SERVICE_ADDRESS} ${String(primary.port)} 2`,
      'sentinel down-after-milliseconds mymaster 1000',
      'sentinel failover-timeout mymaster 5000',
      `sentinel announce-ip ${SERVICE_ADDRESS}`,
      '',
    ].join('\n');
    for (let i = 0; i < 3; i++) sentinels.push(await RedisServer.start([], conf));
    await waitFor('the replica in sync', () => replica.cli('INFO', 'replication').includes('master_link_status:up'));
    await waitFor('the sentinels to see each other', () => sentinels.every((s) => /num-other-sentinels\r?\n2/.test(s.cli('SENTINEL', 'MASTER', 'mymaster'))), 20_000);
    return new SentinelGroup(primary, replica, sentinels);
  }

  get list(): string {
    return this.sentinels.map((s) => `${SERVICE_ADDRESS}:${String(s.port)}`).join(',');
  }

  /** The primary's port as the sentinels say. */
  primaryPort(): number {
    return Number(this.sentinels[0]?.cli('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'mymaster').split('\n')[1]);
  }

  async stop(): Promise<void> {
    await Promise.all([this.primary, this.replica, ...this.sentinels].map((s) => s.kill()));
  }
}

export interface TlsFiles {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

/** A CA and a server certificate for SERVICE_ADDRESS (openssl), in a new directory. */
export function makeCertificates(): TlsFiles {
  const dir = mkdtempSync(join(tmpdir(), 'ami2ban-tls-'));
  const f = (n: string): string => join(dir, n);
  const run = (...args: string[]): void => {
    execFileSync('openssl', args, { stdio: 'ignore' });
  };
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=ami2ban test CA', '-keyout', f('ca.key'), '-out', f('ca.pem'));
  run('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${SERVICE_ADDRESS}`, '-keyout', f('server.key'), '-out', f('server.csr'));
  writeFileSync(f('san.ext'), `subjectAltName=IP:${SERVICE_ADDRESS}\n`);
  run('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', f('san.ext'), '-out', f('server.pem'));
  return { ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key') };
}

let nextIndex = 1;

export interface LogLine {
  readonly message: string;
  readonly [k: string]: unknown;
}

/** One ami2ban host in its own network namespace. */
export class FleetHost {
  readonly index: number;
  readonly hostAddress: string;
  readonly nsAddress: string;
  readonly ami: FakeAmiServer;
  readonly control: ControlClient;
  readonly socket: string;
  lines: LogLine[] = [];
  private holder: ChildProcess | undefined;
  private daemon: ChildProcess | undefined;
  private amiPort = 0;
  private readonly link: string;
  private readonly stateDir: string;
  /** Options for node itself (e.g. `--cpu-prof`). */
  nodeArgs: readonly string[] = [];

  constructor(
    readonly name: string,
    /** The daemon's settings beyond the defaults here (may be changed before a start). */
    readonly env: Record<string, string>,
    /** TCP_NODELAY on the fake AMI (Asterisk leaves Nagle on; a latency bench takes it off). */
    noDelay = false,
  ) {
    this.ami = new FakeAmiServer({ username: CREDENTIALS.AMI_USERNAME, secret: CREDENTIALS.AMI_SECRET, noDelay });
    this.index = nextIndex++;
    this.hostAddress = `10.77.${this.index}.1`;
    this.nsAddress = `10.77.${this.index}.2`;
    this.link = `fleet${this.index}`;
    const dir = mkdtempSync(join(tmpdir(), `ami2ban-fleet-${name}-`));
    this.stateDir = join(dir, 'state');
    this.socket = join(dir, 'control.sock');
    this.control = new ControlClient({ kind: 'unix', path: this.socket }, undefined);
  }

  /** The namespace, its link, its fake AMI, then the daemon. */
  async start(): Promise<this> {
    const holder = spawn('unshare', ['-n', 'sleep', 'infinity'], { stdio: 'ignore' });
    this.holder = holder;
    const pid = String(holder.pid);
    await waitFor('the namespace', () => {
      try {
        return execFileSync('readlink', [`/proc/${pid}/ns/net`], { encoding: 'utf8' }) !== execFileSync('readlink', ['/proc/self/ns/net'], { encoding: 'utf8' });
      } catch {
        return false;
      }
    });
    execFileSync('ip', ['link', 'add', this.link, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pid]);
    execFileSync('ip', ['addr', 'add', `${this.hostAddress}/24`, 'dev', this.link]);
    execFileSync('ip', ['link', 'set', this.link, 'up']);
    this.inside('ip', 'link', 'set', 'lo', 'up');
    this.inside('ip', 'addr', 'add', `${this.nsAddress}/24`, 'dev', 'eth0');
    this.inside('ip', 'link', 'set', 'eth0', 'up');
    // Through its link, every address of the test's namespace (SERVICE_ADDRESS among them).
    this.inside('ip', 'route', 'add', 'default', 'via', this.hostAddress);
    this.amiPort = await this.ami.start(0, this.hostAddress);
    await this.startDaemon();
    return this;
  }

  /** (Re)starts the daemon in the namespace; resolves once it reads AMI events. */
  async startDaemon(extra: Record<string, string> = {}): Promise<void> {
    this.lines = [];
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/root',
      ...CREDENTIALS,
      AMI_HOST: this.hostAddress,
      AMI_PORT: String(this.amiPort),
      STATE_DIR: this.stateDir,
      CONTROL_LISTEN: this.socket,
      FLEET_HOST_ID: this.name,
      BAN_IGNOREIP: '',
      BAN_V4_SUBNET_ESCALATE: '0',
      BAN_SUBNET_ESCALATE: '0',
      BAN_SUBNET_MAXRETRY: '0',
      LOG_FORMAT: 'json',
      NFT_CHECK_INTERVAL: '1s',
      ...this.env,
      ...extra,
    };
    const subscribed = this.ami.nextSubscription();
    const child = spawn('nsenter', ['-t', String(this.holder?.pid), '-n', '--', process.execPath, ...this.nodeArgs, BIN, 'run'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.daemon = child;
    let partial = '';
    child.stdout.on('data', (d: Buffer) => {
      const text = partial + d.toString();
      const parts = text.split('\n');
      partial = parts.pop() ?? '';
      for (const l of parts) if (l.startsWith('{')) this.lines.push(JSON.parse(l) as LogLine);
    });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<never>((_, reject) => child.once('exit', (code) => { reject(new Error(`${this.name} exited with ${String(code)}: ${err}${JSON.stringify(this.lines.slice(-5))}`)); }));
    await Promise.race([subscribed, exited]);
    await waitFor(`${this.name} listening`, async () => {
      try {
        return (await this.control.call('GET', '/healthz')).status === 200;
      } catch {
        return false;
      }
    });
  }

  /** The daemon's process id, while it runs. */
  get daemonPid(): number | undefined {
    return this.daemon?.exitCode === null ? this.daemon.pid : undefined;
  }

  /** Starts a command in the namespace (e.g. `nft monitor`). */
  spawnInside(args: readonly string[]): ChildProcess {
    return spawn('nsenter', ['-t', String(this.holder?.pid), '-n', '--', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  }

  inside(...args: string[]): string {
    return execFileSync('nsenter', ['-t', String(this.holder?.pid), '-n', '--', ...args], { encoding: 'utf8' });
  }

  /** The elements of one of the host's sets (`ipv4_addr`, `ipv6_addr`, `ipv4_net`…), sorted. */
  elements(set = 'ipv4_addr'): string[] {
    // A listing that gives an element twice raced the kernel resizing the set and missed as many
    // (see the firewall's wholeListing): listed again, all joined.
    const all = new Set<string>();
    for (let n = 0; n < 4; n++) {
      let listed: { nftables: { set?: { elem?: unknown[] } }[] };
      try {
        const text = execFileSync('nsenter', ['-t', String(this.holder?.pid), '-n', '--', 'nft', '-j', 'list', 'set', 'inet', 'ami2ban', set], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 512 << 20 });
        listed = JSON.parse(text) as typeof listed;
      } catch {
        return [];
      }
      const mine = new Set<string>();
      let count = 0;
      for (const item of listed.nftables) {
        for (const e of item.set?.elem ?? []) {
          const v = (e as { elem?: { val: unknown } }).elem?.val ?? e;
          const text = typeof v === 'string' ? v : JSON.stringify(v);
          mine.add(text);
          all.add(text);
          count++;
        }
      }
      if (mine.size === count) break;
    }
    return [...all].sort();
  }

  /** Failed SIP requests from an address, as Asterisk reports them. */
  attack(ip: string, times: number, first = 0): void {
    this.ami.broadcast(this.failures(ip, times, first));
  }

  /** The AMI text of failed SIP requests from an address (each its own request). */
  failures(ip: string, times: number, first = 0): string {
    const family = ip.includes(':') ? 'IPV6' : 'IPV4';
    let text = '';
    for (let n = first; n < first + times; n++) {
      text +=
        `Event: InvalidAccountID\r\nPrivilege: security,all\r\nEventTV: 2026-11-21T22:36:02.621+0000\r\nSeverity: Error\r\n` +
        `Service: PJSIP\r\nEventVersion: 1\r\nAccountID: fleet\r\nSessionID: ${this.name}-${ip}-${String(n)}@test\r\n` +
        `LocalAddress: IPV4/UDP/${this.nsAddress}/5060\r\nRemoteAddress: ${family}/UDP/${ip}/5060\r\n\r\n`;
    }
    return text;
  }

  async api(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
    return this.control.call(method, path, body);
  }

  linkDown(): void {
    execFileSync('ip', ['link', 'set', this.link, 'down']);
  }

  linkUp(): void {
    execFileSync('ip', ['link', 'set', this.link, 'up']);
  }

  async waitElements(what: string, ok: (elements: string[]) => boolean, set = 'ipv4_addr', timeoutMs = 10_000): Promise<void> {
    await waitFor(`${this.name}: ${what}`, () => ok(this.elements(set)), timeoutMs).catch((err: unknown) => {
      throw this.withLog(err);
    });
  }

  /** Waits until the host's fleet bus is connected (asked through its control API). */
  async connected(timeoutMs = 10_000): Promise<void> {
    await waitFor(`${this.name}: fleet connected`, async () => ((await this.control.call('GET', '/v1/fleet')).body as { state?: string }).state === 'connected', timeoutMs);
  }

  async waitLog(what: string, ok: (l: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> {
    await waitFor(`${this.name}: ${what}`, () => this.lines.some(ok), timeoutMs).catch((err: unknown) => {
      throw this.withLog(err);
    });
    return this.lines.find(ok) as LogLine;
  }

  /** A failure, with what the daemon said last. */
  private withLog(err: unknown): Error {
    const tail = this.lines.slice(-12).map((l) => JSON.stringify(l)).join('\n');
    return new Error(`${err instanceof Error ? err.message : String(err)}; ${this.name}'s last log lines:\n${tail}`);
  }

  /** Stops the daemon (SIGTERM, or SIGKILL); the namespace and its kernel sets stay. */
  /** Resolves with its exit code (null when killed by a signal). */
  async stopDaemon(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const c = this.daemon;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return c?.exitCode ?? null;
    const exited = new Promise<number | null>((r) => c.once('exit', r));
    c.kill(signal);
    return exited;
  }

  async close(): Promise<void> {
    await this.stopDaemon('SIGKILL');
    await this.ami.stop();
    this.holder?.kill('SIGKILL');
  }
}
