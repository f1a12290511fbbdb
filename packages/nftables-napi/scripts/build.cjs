// Builds the addon when libnftables' headers are there; otherwise says what to install and
// leaves the package usable (ami2ban then falls back to `nft -j -f -`).
'use strict';
/* eslint-disable @typescript-eslint/no-require-imports -- an npm install script: plain CommonJS, no build step */
const { execFileSync, spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');

function hasLibnftables() {
  try {
    execFileSync('pkg-config', ['--exists', 'libnftables'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

if (!hasLibnftables()) {
  console.warn(
    '@ami2ban/nftables-napi: libnftables development files not found (pkg-config libnftables).\n' +
      '  Install them with: apt-get install -y libnftables-dev pkg-config   (then run npm rebuild @ami2ban/nftables-napi)\n' +
      '  Until then ami2ban uses its fallback backend, `nft -j -f -` (package nftables).',
  );
  process.exit(0);
}

const args = ['rebuild'];
// Build against the headers installed with this Node (npm's nodedir, or the prefix of the node
// binary, e.g. /usr or /usr/local in the official images), so nothing is downloaded.
const prefix = path.resolve(path.dirname(process.execPath), '..');
const nodedir = process.env.npm_config_nodedir || (existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : '');
if (nodedir) args.push(`--nodedir=${nodedir}`);
const gyp = process.env.npm_config_node_gyp;
const cmd = gyp ? process.execPath : 'node-gyp';
const r = spawnSync(cmd, gyp ? [gyp, ...args] : args, { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error('@ami2ban/nftables-napi: the addon failed to build although libnftables-dev is installed (see above).');
  process.exit(r.status ?? 1);
}
