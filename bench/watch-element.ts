// A watcher for bench:fleet, run inside a host's namespace: asks the kernel for its elements every
// INTERVAL ms (default 1; a lookup by key, ~0.07 ms, instead of listing 100 000 elements) and
// prints `present <address> <epoch ms> cpu <its own CPU time, ms>` as each is there; it ends once
// all of them are.
//   node dist/bench/watch-element.js TABLE SET ADDRESS[,ADDRESS…] [INTERVAL]
import { Nftables } from '@ami2ban/nftables-napi';

const [table = 'ami2ban', set = 'ipv4_addr', addresses = '', interval = '1'] = process.argv.slice(2);
const nft = new Nftables();
const waiting = new Set(addresses.split(','));
for (const address of waiting) {
  if (nft.hasElement('inet', table, set, address) === undefined) {
    console.error(`watch-element: cannot ask the kernel for ${address} in ${table} ${set}`);
    process.exit(2);
  }
}
// Its CPU so far (node's start), so that what the watching costs can be told apart.
const started = process.cpuUsage();
console.log(`watching cpu ${String((started.user + started.system) / 1000)}`);
const timer = setInterval(() => {
  for (const address of waiting) {
    if (nft.hasElement('inet', table, set, address) !== true) continue;
    const cpu = process.cpuUsage();
    console.log(`present ${address} ${String(performance.timeOrigin + performance.now())} cpu ${String((cpu.user + cpu.system) / 1000)}`);
    waiting.delete(address);
  }
  if (waiting.size > 0) return;
  clearInterval(timer);
  nft.close();
}, Number(interval));
