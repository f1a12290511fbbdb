import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const BIN = `${ROOT}bin/ami2ban.js`;

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * A clean environment: nothing of the caller's settings leaks in, and each run gets its own
 * state directory and control socket unless the test names them.
 */
export function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const dir = mkdtempSync(join(tmpdir(), 'ami2ban-test-'));
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/root',
    STATE_DIR: join(dir, 'state'),
    CONTROL_LISTEN: join(dir, 'control.sock'),
    // Escalation to networks off unless asked (see helpers/policy.ts).
    BAN_V4_SUBNET_ESCALATE: '0',
    BAN_SUBNET_ESCALATE: '0',
    BAN_SUBNET_MAXRETRY: '0',
    ...extra,
  };
}

export function startCli(args: readonly string[], env: Record<string, string>, cwd = ROOT): ChildProcess {
  return spawn(process.execPath, [BIN, ...args], { env: cleanEnv(env), cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}

export function runCli(args: readonly string[], env: Record<string, string> = {}, cwd = ROOT): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = startCli(args, env, cwd);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      resolve({ code, stdout, stderr });
    });
  });
}
