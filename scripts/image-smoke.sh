#!/bin/sh
# Smoke test of the container image, for a machine with a Docker engine:
# builds the image, starts a fake Asterisk AMI (from the same image) that reports three failed
# logins from 192.0.2.66, runs ami2ban in its network namespace with only NET_ADMIN, and checks
# readiness and that the address is banned in the kernel set.
set -eu
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-ami2ban:smoke}
NAME=ami2ban-smoke-$$
ATTACKER=192.0.2.66

cleanup() {
  docker rm -f "$NAME-ami2ban" "$NAME-ami" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

echo "== building $IMAGE"
docker build -t "$IMAGE" .

echo "== starting a fake Asterisk AMI"
docker run -d --name "$NAME-ami" --entrypoint node "$IMAGE" dist/src/demo/fake-ami.js 5038 ami2ban smoke-secret "$ATTACKER" >/dev/null

echo "== starting ami2ban in its network namespace (cap_drop ALL, cap_add NET_ADMIN)"
docker run -d --name "$NAME-ami2ban" --network "container:$NAME-ami" \
  --cap-drop ALL --cap-add NET_ADMIN \
  -e AMI_USERNAME=ami2ban -e AMI_SECRET=smoke-secret -e BAN_IGNOREIP= \
  "$IMAGE" >/dev/null

# wait_for SECONDS WHAT COMMAND...: retries COMMAND once a second, shows the logs on failure.
wait_for() {
  limit=$1 what=$2
  shift 2
  i=0
  until "$@" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -ge "$limit" ]; then
      docker logs "$NAME-ami2ban"
      echo "FAIL: $what"
      exit 1
    fi
    sleep 1
  done
}

echo "== waiting for /readyz"
wait_for 30 "not ready after 30 s" docker exec "$NAME-ami2ban" ami2ban ready

echo "== checking the ban"
wait_for 10 "$ATTACKER not banned" sh -c "docker exec '$NAME-ami2ban' ami2ban list --json | grep -q '\"$ATTACKER\"'"
docker exec "$NAME-ami2ban" nft list set inet ami2ban ipv4_addr | grep -q "$ATTACKER" || {
  echo "FAIL: $ATTACKER not in the kernel set"
  exit 1
}
docker exec "$NAME-ami2ban" ami2ban status
echo "OK: image ready, $ATTACKER banned in the kernel"
