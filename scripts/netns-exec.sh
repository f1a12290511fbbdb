#!/bin/sh
# Runs a command inside a new, private network namespace with loopback up and test addresses on
# it, so the tests use the real kernel's nftables without ever touching the host's firewall.
set -eu
if [ "${AMI2BAN_NETNS:-}" = "private" ]; then
  ip link set lo up
  for a in fd00::1 fd00::2 fd00::3; do ip -6 addr add "$a/128" dev lo nodad; done
  exec "$@"
fi
export AMI2BAN_NETNS=private
if unshare -n true 2>/dev/null; then exec unshare -n "$0" "$@"; fi
if unshare -rn true 2>/dev/null; then exec unshare -rn "$0" "$@"; fi
echo "netns-exec: cannot create a network namespace: run as root (or enable unprivileged user namespaces)." >&2
echo "The nftables tests need one; they never run against the host's firewall." >&2
exit 1
