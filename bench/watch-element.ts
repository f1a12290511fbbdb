// A watcher for bench:fleet, run inside a host's namespace: asks the kernel for one element every
// INTERVAL ms (default 1; a lookup by key, ~0.07 ms, instead of listing 100 000 elements) and
// prints `present <epoch ms> cpu <its own CPU time, ms>` once it is there.
//   node dist/bench/watch-element.js TABLE SET ADDRESS [INTERVAL]
import { Nftables } from '@ami2ban/nftables-napi';

const [table = 'ami2ban', set = 'ipv4_addr', address = '', interval = '1'] = process.argv.slice(2);
const nft = new Nftables();
if (nft.hasElement('inet', table, set, address) === undefined) {
  console.error(`watch-element: cannot ask the kernel for ${address} in ${table} ${set}`);
  process.exit(2);
}
console.log('watching');
const timer = setInterval(() => {
  if (nft.hasElement('inet', table, set, address) !== true) return;
  const cpu = process.cpuUsage();
  console.log(`present ${String(performance.timeOrigin + performance.now())} cpu ${String((cpu.user + cpu.system) / 1000)}`);
  clearInterval(timer);
  nft.close();
}, Number(interval));
