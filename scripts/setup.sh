#!/bin/sh
# Everything ami2ban's build and tests need on a Debian/Ubuntu machine with Node.js >= 20:
# the system packages (installed only when missing), then `npm ci` (which builds the addon).
set -eu
cd "$(dirname "$0")/.."
# libnftables (build and run the addon), nft (fallback backend, test checks), iproute2 and
# unshare (the tests' private network namespace), node-gyp's toolchain; e2fsprogs, mount and
# util-linux's fsfreeze for the store tests on a frozen (loop-mounted ext4) and a full filesystem;
# prometheus for promtool (metrics and alert rules are checked with it); systemd for systemd-analyze
# (the unit is verified and rated), passwd for useradd (scripts/install.sh in a scratch root) and
# redis-server/redis-sentinel and openssl (the fleet tests start their own servers, one with TLS).
PACKAGES="libnftables-dev libnftables1 nftables pkg-config iproute2 util-linux mount e2fsprogs prometheus systemd passwd redis-server redis-sentinel openssl python3 make g++"
missing=""
for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y $missing
fi
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || {
  echo "ami2ban needs Node.js >= 20 (found $(node --version))" >&2
  exit 1
}
# npm ci only when something changed since the last one (lock file, Node version, the addon's
# sources or a missing build): running this script again costs a second, not a reinstall.
stamp=node_modules/.ami2ban-setup
want="$(cat package-lock.json packages/nftables-napi/csrc/* packages/nftables-napi/binding.gyp 2>/dev/null | sha256sum | cut -d' ' -f1) $(node --version)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d dist ] && [ -e packages/nftables-napi/build/Release/nftables_napi.node ]; then
  echo "setup: nothing changed since the last npm ci (remove $stamp to force one)"
  exit 0
fi
npm ci --no-audit --no-fund
echo "$want" > "$stamp"
