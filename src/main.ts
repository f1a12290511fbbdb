// Composition root: the only place that reads process.env, handles signals and exits.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import dotenv from 'dotenv';
import { runCli } from './cli.js';
import { errorMessage } from './errors.js';

function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) return (JSON.parse(readFileSync(file, 'utf8')) as { version?: string }).version ?? '0.0.0';
    dir = dirname(dir);
  }
  return '0.0.0';
}

type ReadEnv = { env: Record<string, string | undefined>; fromDotenv: Set<string> };

/** The environment with .env under it: the real environment wins. A string says why it cannot be read. */
function readEnv(): ReadEnv | string {
  let fileEnv: Record<string, string> = {};
  const named = process.env.AMI2BAN_ENV_FILE;
  if (named !== undefined && named !== '') {
    // A file named on purpose must be readable (a missing `.env` in the working directory is fine).
    try {
      fileEnv = dotenv.parse(readFileSync(named, 'utf8'));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? `permission denied (running as uid ${String(process.getuid?.())})` : errorMessage(err);
      return `AMI2BAN_ENV_FILE: cannot read "${named}": ${why}`;
    }
  } else {
    dotenv.config({ path: '.env', processEnv: fileEnv, quiet: true });
  }
  return { env: { ...fileEnv, ...process.env }, fromDotenv: new Set(Object.keys(fileEnv).filter((k) => process.env[k] === undefined)) };
}

// `ami2ban replay big.log | head`: a reader that went away ends the command quietly.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}

const first = readEnv();
if (typeof first === 'string') {
  process.stderr.write(`ami2ban: ${first}\n`);
  process.exit(2);
}
const { env, fromDotenv } = first;

// Only the daemon handles signals: SIGHUP reloads, SIGTERM/SIGINT stop it cleanly. The other
// commands keep the defaults, so that Ctrl-C ends `status`, `list` or `replay` at once.
const daemon = process.argv[2] === 'run';
let reloader: ((env: Record<string, string | undefined>) => void) | undefined;
if (daemon) {
  process.on('SIGHUP', () => {
    const next = readEnv();
    // A reload that cannot read its file keeps the settings in force.
    if (typeof next === 'string') process.stderr.write(`ami2ban: reload refused: ${next}\n`);
    else reloader?.(next.env);
  });
}

const stopSignal = new Promise<string>((resolve) => {
  if (!daemon) return;
  let stopping = false;
  const onSignal = (signal: string): void => {
    if (stopping) {
      process.stderr.write(`ami2ban: ${signal} again, exiting now\n`);
      process.exit(1);
    }
    stopping = true;
    resolve(signal);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
});

runCli(process.argv.slice(2), {
  env,
  fromDotenv,
  stdout: process.stdout,
  stderr: process.stderr,
  version: packageVersion(),
  stopSignal,
  onReload: (reload) => {
    reloader = reload;
  },
}).then(
  (code) => {
    // Exit once stdout has drained, so piped output is not cut short.
    process.exitCode = code;
    process.stdout.write('', () => process.exit(code));
  },
  (err: unknown) => {
    process.stderr.write(`ami2ban: ${errorMessage(err)}\n`);
    process.exit(1);
  },
);
