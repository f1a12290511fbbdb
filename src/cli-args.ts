// The command line's arguments, parsed by Node's util.parseArgs: `--for=1h` and `--for 1h` alike,
// `--help` on any command, and unknown options named.
import { parseArgs } from 'node:util';

type OptionSpec = Readonly<Record<string, { readonly type: 'boolean' | 'string' }>>;

interface CommandSpec {
  readonly usage: string;
  readonly options: OptionSpec;
  /** How many positional arguments, at least and at most. */
  readonly positionals: readonly [number, number];
}

const JSON_FLAG = { json: { type: 'boolean' } } as const;

export const COMMANDS: Readonly<Record<string, CommandSpec>> = {
  run: { usage: 'usage: ami2ban run\n  start the daemon (configuration from the environment and .env)', options: {}, positionals: [0, 0] },
  'check-config': { usage: 'usage: ami2ban check-config\n  print the effective configuration (secrets masked), or the errors', options: {}, positionals: [0, 0] },
  replay: {
    usage: 'usage: ami2ban replay FILE [--explain] [--json]\n  --explain: under each ban, the failures behind it (time, event, account, transport)',
    options: { explain: { type: 'boolean' }, ...JSON_FLAG },
    positionals: [1, 1],
  },
  status: { usage: 'usage: ami2ban status [--json]', options: JSON_FLAG, positionals: [0, 0] },
  list: { usage: 'usage: ami2ban list [--json]', options: JSON_FLAG, positionals: [0, 0] },
  ready: { usage: 'usage: ami2ban ready', options: {}, positionals: [0, 0] },
  ban: {
    usage:
      'usage: ami2ban ban IP|NETWORK [--for DURATION] [--force] [--replace] [--json]\n' +
      '  NETWORK: a CIDR such as 2001:db8:1:2::/64 or 198.51.100.0/24 (at most /16 v4, /32 v6 wide unless --force;\n' +
      '  never /0, never one holding an ignored or own address); it replaces the bans inside it;\n' +
      '  DURATION: 600, 90s, 10m, 1h, 1d, 1w, or -1 for permanent (default: the policy\'s ban time;\n' +
      '  0 is refused: `ami2ban unban IP` lifts a ban);\n' +
      '  --force bans an ignored address or one of this host\'s; --replace may shorten a ban in force;\n' +
      '  --local keeps the ban on this host (not shared with the fleet)',
    options: { for: { type: 'string' }, force: { type: 'boolean' }, replace: { type: 'boolean' }, local: { type: 'boolean' }, ...JSON_FLAG },
    positionals: [1, 1],
  },
  unban: { usage: 'usage: ami2ban unban IP|NETWORK | --all [--json]', options: { all: { type: 'boolean' }, ...JSON_FLAG }, positionals: [0, 1] },
  explain: { usage: 'usage: ami2ban explain IP|NETWORK [--json]\n  why an address is or was banned: the ban in force and its history', options: JSON_FLAG, positionals: [1, 1] },
  backup: {
    usage:
      'usage: ami2ban backup [--json]\n' +
      '  a consistent copy of the ban database, written by the daemon into STATE_DIR as ami2ban-backup-TIME.sqlite\n' +
      '  (while ami2ban runs, no other process can open its database)',
    options: JSON_FLAG,
    positionals: [0, 0],
  },
  fleet: { usage: 'usage: ami2ban fleet [--json]\n  the fleet as this host sees it: hosts seen and their last contact, stream lag, outbox, what was applied and refused', options: JSON_FLAG, positionals: [0, 0] },
  trust: {
    usage:
      'usage: ami2ban trust [--json] | ami2ban trust revoke IP [--account ACCOUNT] [--json]\n' +
      '  the (address, account) pairs trusted after a successful SIP login (BAN_TRUST_SUCCESS), or revoke an address\'s trust',
    options: { account: { type: 'string' }, ...JSON_FLAG },
    positionals: [0, 2],
  },
};

export interface CommandArgs {
  readonly values: Readonly<Record<string, string | boolean | undefined>>;
  readonly positionals: readonly string[];
}

export type ParsedArgs =
  | ({ readonly kind: 'ok' } & CommandArgs)
  | { readonly kind: 'help'; readonly usage: string }
  | { readonly kind: 'error'; readonly message: string; readonly usage: string };

export function parseCommand(command: string, args: readonly string[]): ParsedArgs {
  const spec = COMMANDS[command];
  if (spec === undefined) return { kind: 'error', message: `unknown command "${command}"`, usage: '' };
  // A value that starts with a dash (`--for -1`) is the option's value, not another option.
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    const name = a.startsWith('--') ? a.slice(2) : '';
    const next = args[i + 1];
    if (spec.options[name]?.type === 'string' && next !== undefined) {
      joined.push(`${a}=${next}`);
      i++;
    } else joined.push(a);
  }
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({ args: joined, options: { ...spec.options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (err) {
    const e = err as { code?: string; message?: string };
    const option = /'(-[^' ]+)/.exec(e.message ?? '')?.[1];
    const message =
      e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && option !== undefined
        ? `unknown option ${option}`
        : e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && option !== undefined
          ? `option ${option} needs a value`
          : (e.message ?? String(err)).split('. ')[0] ?? 'bad arguments';
    return { kind: 'error', message, usage: spec.usage };
  }
  if (parsed.values.help === true) return { kind: 'help', usage: spec.usage };
  const [min, max] = spec.positionals;
  const n = parsed.positionals.length;
  if (n < min || n > max) {
    const message = n > max ? `unexpected argument "${parsed.positionals[max] ?? ''}"` : 'missing argument';
    return { kind: 'error', message, usage: spec.usage };
  }
  return { kind: 'ok', values: parsed.values, positionals: parsed.positionals };
}
