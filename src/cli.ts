// The `ami2ban` command line: run, check-config, replay.
import { createReadStream } from 'node:fs';
import { hostname } from 'node:os';
import { isAbsolute, relative, resolve } from 'node:path';
import { type Config, type ControlListen, type Env, loadConfig, loadIgnoreList } from './config/config.js';
import { formatDuration } from './config/duration.js';
import { VARIABLES } from './config/variables.js';
import { COMMANDS, type CommandArgs, parseCommand } from './cli-args.js';
import { controlCommand } from './cli-control.js';
import { ControlServer } from './control/server.js';
import { Ami2banError, ConfigError, ReplayInputError, errorMessage } from './errors.js';
import { type Logger, createLogger } from './log/logger.js';
import { type Built, buildDaemon } from './service/build.js';
import type { Daemon } from './service/daemon.js';
import { eventSummary, failureLines } from './service/pipeline.js';
import { type ReplayResult, Replayer } from './service/replay.js';

export interface CliIo {
  readonly env: Env;
  /** Which variables came from the .env file, for check-config. */
  readonly fromDotenv: ReadonlySet<string>;
  readonly stdout: NodeJS.WritableStream & { isTTY?: boolean };
  readonly stderr: NodeJS.WritableStream;
  readonly version: string;
  /** Resolves when the process is asked to stop (SIGTERM/SIGINT). */
  readonly stopSignal: Promise<string>;
  /** Registers what to do on SIGHUP, given the environment read afresh (with .env). */
  readonly onReload: (reload: (env: Env) => void) => void;
}

/** Bound on a clean stop; past it the process exits anyway. */
const STOP_DEADLINE_MS = 4500;
// How long a start waits for STATE_DIR's disk before it goes on without its database, and how
// often it then says that the disk still does not answer.
const STATE_DIR_WAIT_MS = 5000;

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_CONFIG = 2;

const USAGE = `usage: ami2ban <command>

commands:
  run                   start the daemon (AMI → engine → firewall)
  check-config          print the effective configuration (secrets masked), or the errors
  replay FILE [--json]  feed an AMI capture or an Asterisk security log through the engine
                        and print every ban decision
  status [--json]       the running daemon's state (through CONTROL_LISTEN)
  list [--json]         the bans in force
  ban IP [--for 1h] [--force] [--replace] [--local] [--json]
                        ban an address by hand (default duration: the policy's); a
                        longer ban in force is kept unless --replace; --local: not
                        shared with the fleet
  unban IP | --all [--json]
                        lift one ban, or all of them
  explain IP [--json]   why an address is or was banned: the ban in force and its history
  fleet [--json]        the fleet (Redis) as this host sees it: hosts, lag, outbox, refusals
  backup [--json]       a consistent copy of the ban database, written into STATE_DIR
  trust [--json]        the (address, account) pairs trusted after a successful SIP login
  trust revoke IP [--account A]
                        revoke an address's trust (every account, or one)
  ready                 exit 0 when the daemon is ready (AMI logged in, firewall ready): health checks
  help                  this text
  version               print the version

Configuration comes from environment variables and an optional .env file; see README.md.
`;

function write(stream: NodeJS.WritableStream, text: string): void {
  stream.write(text.endsWith('\n') ? text : `${text}\n`);
}

function configOrExit(io: CliIo, purpose: 'daemon' | 'replay' | 'client'): Config | number {
  try {
    return loadConfig(io.env, { purpose, hostname: hostname() });
  } catch (err) {
    if (err instanceof ConfigError) {
      write(io.stderr, `ami2ban: ${err.message}`);
      return EXIT_CONFIG;
    }
    throw err;
  }
}

const plural = (n: number, what: string): string => `${String(n)} ${what}${n === 1 ? '' : 's'}`;

/** What a setting means once the defaults and the other settings are applied, where that is not its text. */
function effective(name: string, config: Config, isTTY: boolean): string | undefined {
  const listen = (l: ControlListen): string => (l.kind === 'unix' ? `unix socket ${l.path}` : `tcp ${l.host}:${String(l.port)}`);
  const b = config.ban;
  switch (name) {
    case 'CONTROL_LISTEN':
      return `${listen(config.control.listen)}${config.control.listen.kind === 'unix' ? `, mode ${config.control.group === undefined ? '0600' : `0660 group ${config.control.group}`}` : ''}`;
    case 'CONTROL_TOKEN':
      return config.control.token === undefined ? 'none: the unix socket\'s mode guards the API' : 'required on every request';
    case 'METRICS_LISTEN':
      return config.metricsListen === undefined ? 'off: /metrics on the control socket only' : `${listen(config.metricsListen)}: /metrics, /healthz, /readyz`;
    case 'BAN_IGNOREIP':
      return `${plural(b.ignoreIp.length, 'network')}${b.ignoreHosts.length > 0 ? ` + ${plural(b.ignoreHosts.length, 'host name')}` : ''} (with BAN_IGNOREIP_FILE)${b.ignoreSelf ? ' + this host\'s addresses' : ''}`;
    case 'BAN_DNS_SERVERS':
      return b.ignoreHosts.length === 0 ? 'unused: no host names to resolve' : b.dnsServers.length === 0 ? 'the system\'s resolvers' : undefined;
    case 'BAN_MULTIPLIERS':
      return !b.increment ? 'unused: BAN_INCREMENT=false' : b.multipliers.length === 0 ? 'the 2^n formula' : undefined;
    case 'BAN_FACTOR':
    case 'BAN_MAXTIME':
    case 'BAN_RNDTIME':
      return b.increment ? undefined : 'unused: BAN_INCREMENT=false';
    case 'BAN_UNANSWERED_MAXRETRY':
      return b.unansweredMaxRetry === 0 || b.challengeTimeout === 0 ? 'off: unanswered challenges are not counted' : undefined;
    case 'NFT_PORTS':
      return config.nftables.ports.length === 0 ? 'every port: a banned address gets nothing through' : undefined;
    case 'NFT_BACKEND':
      return config.nftables.backend === 'auto' ? 'the libnftables addon, else `nft -j -f -`' : undefined;
    case 'LOG_FORMAT':
      return config.log.format === 'auto' ? (isTTY ? 'text (a terminal)' : 'json (not a terminal)') : undefined;
    default:
      return undefined;
  }
}

function checkConfig(io: CliIo): number {
  const config = configOrExit(io, 'daemon');
  if (typeof config === 'number') return config;
  const width = Math.max(...VARIABLES.map((v) => v.name.length));
  const lines = VARIABLES.map((v) => {
    const set = io.env[v.name];
    const explicit = set !== undefined && (set.trim() !== '' || v.emptyIsValue === true);
    const source = explicit ? (io.fromDotenv.has(v.name) ? '.env' : 'env') : 'default';
    let value = explicit ? set.trim() : (v.default ?? '');
    if (v.secret === true && value !== '') value = '********';
    const means = effective(v.name, config, io.stdout.isTTY === true);
    return `${v.name.padEnd(width)}  ${(value === '' ? '(empty)' : value).padEnd(40)}  ${source.padEnd(7)}${means === undefined ? '' : `  ${means}`}`.trimEnd();
  });
  write(io.stdout, `configuration is valid\n\n${'VARIABLE'.padEnd(width)}  ${'VALUE'.padEnd(40)}  SOURCE   MEANING\n${lines.join('\n')}`);
  return EXIT_OK;
}

async function replayCommand(io: CliIo, args: CommandArgs): Promise<number> {
  const json = args.values.json === true;
  const config = configOrExit(io, 'replay');
  if (typeof config === 'number') return config;
  const file = args.positionals[0] ?? '';
  const banSeconds = (s: number): number => (s === Number.POSITIVE_INFINITY ? -1 : Math.round(s));
  // JSON lines go out as the bans fall; the table keeps one short row per ban.
  const explain = args.values.explain === true;
  const rows: string[][] = [];
  /** --explain: the failure lines under the row of the same index. */
  const behind: string[][] = [];
  const replayer = new Replayer(config.ban, (b) => {
    const details = b.details.map((d) => ({ at: new Date(d.at).toISOString(), event: d.event, account: d.account, transport: d.transport }));
    if (json) write(io.stdout, JSON.stringify({ ip: b.ip, at: new Date(b.at).toISOString(), failures: b.failures, banSeconds: banSeconds(b.banSeconds), rule: b.rule, ...(explain ? { details } : {}) }));
    else {
      rows.push([new Date(b.at).toISOString(), b.ip, String(b.failures), formatDuration(b.banSeconds), b.rule, eventSummary(b.events)]);
      if (explain) behind.push(failureLines(details, b.failures, '    '));
    }
  });
  let result: ReplayResult;
  try {
    // Streamed: a large log is never held whole in memory.
    for await (const chunk of createReadStream(file, { highWaterMark: 1 << 16 })) replayer.push(chunk as Buffer);
    result = replayer.end();
  } catch (err) {
    if (err instanceof ReplayInputError) throw err;
    write(io.stderr, `ami2ban: cannot read ${file}: ${errorMessage(err)}`);
    return EXIT_FAILURE;
  }
  if (json) return EXIT_OK;
  const header = ['TIME', 'ADDRESS', 'FAILURES', 'BAN', 'RULE', 'EVENTS'];
  const widths = header.map((h) => h.length);
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  const fmt = (r: readonly string[]): string => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  const s = result.skipped;
  write(
    io.stdout,
    [
      `${file} (${result.format}): ${result.securityEvents} security events, ${result.failures} failures counted, ${result.banCount} bans`,
      `skipped: ${s.nonSecurity} non-security, ${s.unknown} unknown, ${s.malformed} malformed, ${s.noTime} without EventTV`,
      '',
      fmt(header),
      ...rows.flatMap((r, i) => [fmt(r), ...(behind[i] ?? [])]),
    ].join('\n'),
  );
  return EXIT_OK;
}

/** Re-reads BAN_IGNOREIP and BAN_IGNOREIP_FILE; keeps the old list when the new one is bad. */
function reloadIgnoreList(env: Env, daemon: Daemon, logger: Logger): void {
  const { cidrs, hosts, problems } = loadIgnoreList(env);
  if (problems.length > 0) {
    logger.error('ignore list not reloaded: the old one stays', { problems: problems.map((p) => `${p.variable}: ${p.problem}`).join('; ') });
    return;
  }
  daemon.setIgnoreList(cidrs, hosts);
}

/** The Redis password, wherever it was given: never in a log line. */
function fleetSecrets(config: Config): string[] {
  const f = config.fleet;
  if (f === undefined) return [];
  const out = f.password === undefined ? [] : [f.password.reveal()];
  try {
    const p = new URL(f.url ?? '').password;
    if (p !== '') out.push(p, decodeURIComponent(p));
  } catch {
    // no URL (sentinels only)
  }
  return out;
}

/** Whether the disk under STATE_DIR answered within `ms`, or a stop came first. */
async function stateDirWithin(answered: Promise<void>, stop: Promise<unknown>, ms: number): Promise<'answered' | 'stopped' | 'late'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => {
      resolve('late');
    }, ms);
  });
  const outcome = await Promise.race([answered.then(() => 'answered' as const), stop.then(() => 'stopped' as const), late]);
  clearTimeout(timer);
  return outcome;
}

const WITHOUT_DATABASE = 'bans go to the kernel; their acknowledgements, the ban history and the fleet wait for it';

/**
 * After a start without the database: says every STATE_DIR_WAIT_MS that STATE_DIR does not answer;
 * true once it does, false when a stop came first.
 */
async function awaitStateDir(dir: string, answered: Promise<void>, logger: Logger, stop: Promise<unknown>): Promise<boolean> {
  for (let waited = STATE_DIR_WAIT_MS; ; ) {
    const outcome = await stateDirWithin(answered, stop, STATE_DIR_WAIT_MS);
    if (outcome !== 'late') return outcome === 'answered';
    waited += STATE_DIR_WAIT_MS;
    logger.error(`STATE_DIR still does not answer (disk hung?): ${WITHOUT_DATABASE}`, { stateDir: dir, waitedSeconds: waited / 1000 });
  }
}

async function listenControl(control: ControlServer, config: Config, logger: Logger): Promise<void> {
  await control.listen();
  logger.info('control API listening', { address: control.address, bearerAuth: config.control.token !== undefined });
}

function isWithin(path: string, dir: string): boolean {
  const rel = relative(resolve(dir), resolve(path));
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

/**
 * After a start without the database: opens it once STATE_DIR answers (then the control socket, if
 * it lives there). Resolves with why when that fails; never when it works or a stop comes first.
 */
async function openWhenAnswered(
  daemon: Daemon,
  control: ControlServer,
  controlLater: boolean,
  config: Config,
  answered: Promise<void>,
  logger: Logger,
  stop: Promise<unknown>,
): Promise<string> {
  const never = new Promise<string>(() => undefined);
  if (!(await awaitStateDir(config.stateDir, answered, logger, stop))) return never;
  try {
    await daemon.openStore();
    if (controlLater) await listenControl(control, config, logger);
  } catch (err) {
    logger.error('start failed', { error: errorMessage(err), ...(err instanceof Ami2banError ? { code: err.code } : {}) });
    return `the start could not be completed once STATE_DIR answered: ${errorMessage(err)}`;
  }
  return never;
}

async function run(io: CliIo): Promise<number> {
  const config = configOrExit(io, 'daemon');
  if (typeof config === 'number') return config;
  const logger: Logger = createLogger({
    level: config.log.level,
    format: config.log.format,
    isTTY: io.stdout.isTTY === true,
    secrets: [config.ami.secret.reveal(), ...(config.control.token === undefined ? [] : [config.control.token.reveal()]), ...fleetSecrets(config)],
  });
  logger.info('starting', {
    version: io.version,
    ami: `${config.ami.host}:${config.ami.port}`,
    user: config.ami.username,
    firewall: config.firewall,
    maxRetry: config.ban.maxRetry,
    findTime: formatDuration(config.ban.findTime),
    banTime: formatDuration(config.ban.banTime),
    events: config.ban.events.join(','),
    ignoreIp: config.ban.ignoreIp.map((c) => `${c.address.ip}/${c.prefix}`).join(','),
  });
  let built: Built;
  try {
    built = buildDaemon(config, logger, io.version);
  } catch (err) {
    logger.error('start failed', { error: errorMessage(err), ...(err instanceof Ami2banError ? { code: err.code } : {}) });
    return EXIT_FAILURE;
  }
  built.daemon.prepare();
  // The database opens on its own thread. A hung disk (fsfreeze, a dead network volume) holds that
  // thread as long: past STATE_DIR_WAIT_MS the daemon starts without its database rather than wait.
  // (A failure is an answer too: the start reports it.)
  const answered = built.store.open().then(
    () => undefined,
    () => undefined,
  );
  const disk = await stateDirWithin(answered, io.stopSignal, STATE_DIR_WAIT_MS);
  if (disk === 'stopped') {
    logger.error('stopped while waiting for STATE_DIR to answer', { stateDir: config.stateDir });
    return EXIT_FAILURE;
  }
  const deferred = disk === 'late';
  if (deferred) {
    logger.error(`STATE_DIR does not answer: the ban database has not opened (disk hung?); starting without it: ${WITHOUT_DATABASE}`, {
      stateDir: config.stateDir,
      waitedSeconds: STATE_DIR_WAIT_MS / 1000,
    });
  }
  // A control socket in STATE_DIR cannot be made there either: it follows the database.
  const listen = config.control.listen;
  const controlLater = deferred && listen.kind === 'unix' && isWithin(listen.path, config.stateDir);
  const daemon = built.daemon;
  let control: ControlServer;
  let observability: ControlServer | undefined;
  try {
    control = new ControlServer({
      listen: config.control.listen,
      token: config.control.token?.reveal(),
      target: daemon,
      metrics: built.metrics,
      group: config.control.group,
    });
    if (config.metricsListen !== undefined) {
      observability = new ControlServer({ listen: config.metricsListen, token: undefined, target: daemon, metrics: built.metrics, observabilityOnly: true });
    }
    await daemon.start(
      config.ban.ignoreIp.map((c) => `${c.address.ip}/${c.prefix}`),
      { withoutStore: deferred },
    );
    if (!controlLater) await listenControl(control, config, logger);
    await observability?.listen();
    if (observability !== undefined) logger.info('metrics listening', { address: observability.address });
  } catch (err) {
    // A clear line naming what failed (database path, nftables, listen address), no stack trace.
    logger.error('start failed', { error: errorMessage(err), ...(err instanceof Ami2banError ? { code: err.code } : {}) });
    return EXIT_FAILURE;
  }
  io.onReload((env) => {
    logger.info('SIGHUP: reloading the ignore list');
    reloadIgnoreList(env, daemon, logger);
  });
  const storeFailed = deferred ? openWhenAnswered(daemon, control, controlLater, config, answered, logger, io.stopSignal) : new Promise<string>(() => undefined);
  const ended = await Promise.race([
    io.stopSignal.then((signal) => ({ signal, fatal: undefined })),
    daemon.fatal.then((fatal) => ({ signal: undefined, fatal })),
    storeFailed.then((fatal) => ({ signal: undefined, fatal })),
  ]);
  if (ended.fatal !== undefined) logger.error('giving up: exiting so that the orchestrator restarts ami2ban', { reason: ended.fatal });
  else logger.info('stopping', { signal: ended.signal });
  const stopped = (async () => {
    await control.close();
    await observability?.close();
    await daemon.stop();
    return true;
  })();
  const deadline = new Promise<false>((resolve) => setTimeout(() => { resolve(false); }, STOP_DEADLINE_MS).unref());
  if (!(await Promise.race([stopped, deadline]))) {
    logger.error('stop took too long; exiting anyway (bans stay in the kernel)');
    return EXIT_FAILURE;
  }
  return ended.fatal === undefined ? EXIT_OK : EXIT_FAILURE;
}

export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv;
  let args: CommandArgs = { values: {}, positionals: [] };
  if (command !== undefined && COMMANDS[command] !== undefined) {
    const parsed = parseCommand(command, rest);
    if (parsed.kind === 'help') {
      write(io.stdout, parsed.usage);
      return EXIT_OK;
    }
    if (parsed.kind === 'error') {
      write(io.stderr, `ami2ban ${command}: ${parsed.message}\n${parsed.usage}`);
      return EXIT_CONFIG;
    }
    args = parsed;
  }
  switch (command) {
    case 'run':
      return run(io);
    case 'check-config':
      return checkConfig(io);
    case 'replay':
      return replayCommand(io, args);
    case 'status':
    case 'ready':
    case 'list':
    case 'ban':
    case 'explain':
    case 'trust':
    case 'fleet':
    case 'backup':
    case 'unban': {
      const config = configOrExit(io, 'client');
      if (typeof config === 'number') return config;
      return controlCommand(command, args, config, io);
    }
    case 'version':
    case '--version':
      write(io.stdout, io.version);
      return EXIT_OK;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      write(command === undefined ? io.stderr : io.stdout, USAGE);
      return command === undefined ? EXIT_CONFIG : EXIT_OK;
    default:
      write(io.stderr, `ami2ban: unknown command "${command}"\n\n${USAGE}`);
      return EXIT_CONFIG;
  }
}
