// What the kernel counts of the machine's CPU, for the benches that print where the cores went.
import { readFileSync } from 'node:fs';

/** The whole machine's CPU so far (/proc/stat, seconds, all cores): busy (any process or the kernel) and stolen by the hypervisor. */
export function machineSeconds(): { busy: number; steal: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
  return { busy: (user + nice + system + irq + softirq) / 100, steal: steal / 100 };
}
