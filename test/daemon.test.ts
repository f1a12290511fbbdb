import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeAmiServer, eventBlocks } from '../src/demo/fake-ami-server.js';
import { MemoryFirewall } from '../src/firewall/memory.js';
import { buildDaemon } from '../src/service/build.js';
import type { Daemon } from '../src/service/daemon.js';
import { EXPECTED_BANS, fixture } from './helpers/fixtures.js';
import { MemoryLogger } from './helpers/memory-logger.js';
import { config } from './helpers/policy.js';

describe('daemon: AMI → engine → firewall', () => {
  let server: FakeAmiServer | undefined;
  let daemon: Daemon | undefined;

  afterEach(async () => {
    await daemon?.stop();
    await server?.stop();
  });

  async function runCapture(name: string, env: Record<string, string> = {}): Promise<{ firewall: MemoryFirewall; log: MemoryLogger }> {
    server = new FakeAmiServer({ username: 'ami2ban', secret: 'ami2ban-secret' });
    const port = await server.start();
    const log = new MemoryLogger([], false);
    const firewall = new MemoryFirewall();
    const cfg = config({ AMI_PORT: String(port), BAN_IGNOREIP: '', STATE_DIR: mkdtempSync(join(tmpdir(), 'ami2ban-')), ...env });
    daemon = buildDaemon(cfg, log, 'test', { firewall }).daemon;
    const subscribed = server.nextSubscription();
    await daemon.start();
    await subscribed;
    const blocks = eventBlocks(fixture(name));
    server.broadcast(Buffer.concat(blocks));
    const d = daemon;
    await expectEventually(() => d.counters.events + 0 >= blocks.filter((b) => b.includes('Privilege: security')).length);
    await d.idle();
    return { firewall, log };
  }

  it('bans exactly the attackers of the captured run, one log line each', async () => {
    const { firewall, log } = await runCapture('ami-ami2ban-events-security.raw');
    expect([...firewall.elements.keys()].sort()).toEqual([...EXPECTED_BANS].sort());
    expect([...firewall.elements.values()].every((e) => e.seconds === 3600)).toBe(true);
    const banLines = log.lines.filter((l) => l.message === 'ban');
    expect(banLines.length).toBe(7);
    expect(banLines.find((l) => l.meta.ip === 'fd00::2')?.meta).toMatchObject({
      family: 'ipv6',
      reason: 'threshold',
      failures: 3,
      events: 'InvalidAccountID×2,ChallengeResponseFailed×1',
      duration: '1h',
      banSeconds: 3600,
    });
  });

  it('with the default ignore list, loopback attackers are left alone', async () => {
    const { firewall } = await runCapture('ami-ami2ban-events-security.raw', { BAN_IGNOREIP: '127.0.0.1/8,::1' });
    expect([...firewall.elements.keys()].sort()).toEqual(['fd00::2', 'fd00::3']);
  });

  it('non-security noise from a read=all user changes nothing', async () => {
    const { firewall } = await runCapture('ami-amiall-events-on.raw');
    expect([...firewall.elements.keys()].sort()).toEqual([...EXPECTED_BANS].sort());
  });
});

async function expectEventually(check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}
