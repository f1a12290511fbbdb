import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ROOT, cleanEnv } from './helpers/cli.js';

describe('npm run demo', () => {
  it('replays the captured attack against the real daemon and bans the attackers', async () => {
    const child = spawn(process.execPath, [`${ROOT}dist/src/demo/demo.js`], { env: cleanEnv(), cwd: ROOT });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code).toBe(0);
    expect(out.match(/^ {2}BAN {2}/gm)?.length).toBe(8);
    expect(out).toContain('summary: 139 events replayed');
    expect(out).toContain('banned: 127.0.0.2, 127.0.0.3, fd00::2, fd00::3, 127.0.0.4, 127.0.0.10, 127.0.0.11, 127.0.0.12');
    expect(out).toContain('daemon exited with code 0 after SIGTERM');
  }, 60_000);
});
