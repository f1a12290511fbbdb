// Loaded into bench:fleet's origin daemon (`node --import`): the time each single-address kernel
// transaction is handed to the binding, which the daemon does right after deciding the ban. Lines
// `<address> <epoch ms>`, written to BENCH_FLEET_DECISIONS every 100 ms (not on the ban's path).
import { appendFileSync } from 'node:fs';
import { Nftables } from '@ami2ban/nftables-napi';

const file = process.env.BENCH_FLEET_DECISIONS;
if (file !== undefined && file !== '') {
  let lines = '';
  // eslint-disable-next-line @typescript-eslint/unbound-method -- called with its own `this` below
  const run = Nftables.prototype.run;
  Nftables.prototype.run = function (this: Nftables, commands) {
    const t = performance.timeOrigin + performance.now();
    const done = run.call(this, commands);
    // A's bans: one command, one element.
    const only = commands.nftables.length === 1 ? (commands.nftables[0] as { add?: { element?: { elem?: unknown[] } } }).add?.element?.elem : undefined;
    const val = only?.length === 1 ? (only[0] as { elem?: { val?: unknown } }).elem?.val : undefined;
    if (typeof val === 'string') lines += `${val} ${String(t)}\n`;
    return done;
  };
  setInterval(() => {
    if (lines === '') return;
    appendFileSync(file, lines);
    lines = '';
  }, 100).unref();
}
