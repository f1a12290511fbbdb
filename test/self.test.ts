import { describe, expect, it } from 'vitest';
import { networkInterfaces } from 'node:os';
import { parseIp } from '../src/common/ip.js';
import { selfAddresses } from '../src/service/self.js';

const interfaces = () => ({
  lo: [{ address: '127.0.0.1' }, { address: '::1' }],
  eth0: [{ address: '192.0.2.10' }, { address: 'FE80::1%eth0' }, { address: '2001:db8::10' }],
});

describe("ignore-self: the host's own addresses", () => {
  it('takes the exact interface addresses, the AMI host and the control host, canonical and once each', async () => {
    const r = await selfAddresses(
      { amiHost: 'asterisk.internal', controlHost: '::ffff:192.0.2.10' },
      { interfaces, resolve: (h) => Promise.resolve(h === 'asterisk.internal' ? ['198.51.100.5', '2001:DB8:0::5'] : []) },
    );
    expect(r.addresses.map((a) => a.ip).sort()).toEqual(['127.0.0.1', '192.0.2.10', '198.51.100.5', '2001:db8::10', '2001:db8::5', '::1', 'fe80::1']);
    expect(r.unresolved).toEqual([]);
  });

  it('a name that fails or hangs is reported, and the rest is still returned', async () => {
    const failing = await selfAddresses({ amiHost: 'nowhere.invalid' }, { interfaces, resolve: () => Promise.reject(new Error('ENOTFOUND nowhere.invalid')) });
    expect(failing.unresolved).toEqual([{ host: 'nowhere.invalid', error: 'ENOTFOUND nowhere.invalid' }]);
    expect(failing.addresses.length).toBe(5);
    const hanging = await selfAddresses({ amiHost: 'slow.example' }, { interfaces, resolve: () => new Promise(() => undefined), resolveTimeoutMs: 20 });
    expect(hanging.unresolved).toEqual([{ host: 'slow.example', error: 'no answer within 20 ms' }]);
  });

  it("reads this machine's real interfaces by default", async () => {
    const r = await selfAddresses({ amiHost: '127.0.0.1' });
    const real = Object.values(networkInterfaces()).flatMap((l) => (l ?? []).map((i) => parseIp(i.address)?.ip));
    expect(real.length).toBeGreaterThan(0);
    expect(r.addresses.map((a) => a.ip).sort()).toEqual([...new Set(real)].sort());
  });
});
