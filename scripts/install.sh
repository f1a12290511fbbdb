#!/bin/sh
# Installs ami2ban on a host without containers (FreePBX, plain Debian), as a systemd service.
#
#   sudo scripts/install.sh                  build here, install under /opt/ami2ban, print what is next
#   sudo scripts/install.sh --uninstall      remove the program and the unit; keep settings, state and the kernel table
#   sudo scripts/install.sh --uninstall --purge --remove-table    remove everything
#
# --root DIR installs into DIR as if it were / (packaging, tests): users and files only, systemd untouched.
set -eu

SRC="$(cd "$(dirname "$0")/.." && pwd)"
ROOT=""
PREFIX=/opt/ami2ban
ACTION=install
PURGE=false
REMOVE_TABLE=false
BUILD=true

usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  echo "options: --root DIR  --prefix DIR (default /opt/ami2ban)  --no-build  --uninstall [--purge] [--remove-table]"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="${2:?--root needs a directory}"; shift ;;
    --root=*) ROOT="${1#--root=}" ;;
    --prefix) PREFIX="${2:?--prefix needs a directory}"; shift ;;
    --prefix=*) PREFIX="${1#--prefix=}" ;;
    --no-build) BUILD=false ;;
    --uninstall) ACTION=uninstall ;;
    --purge) PURGE=true ;;
    --remove-table) REMOVE_TABLE=true ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$PREFIX" in /*) ;; *) echo "install.sh: --prefix must be absolute" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (it creates a system user and a systemd unit)" >&2; exit 1; }

USER_NAME=ami2ban
ETC="$ROOT/etc/ami2ban"
ENV_FILE="$ETC/ami2ban.env"
UNIT="$ROOT/etc/systemd/system/ami2ban.service"
BIN="$ROOT/usr/local/bin/ami2ban"
STATE="$ROOT/var/lib/ami2ban"
# systemd is driven only for a real install on a host where it runs.
systemd_up() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }
say() { echo "install.sh: $*"; }

table_name() {
  t=""
  [ -f "$ENV_FILE" ] && t="$(sed -n 's/^NFT_TABLE=//p' "$ENV_FILE" | tail -n 1)"
  echo "${t:-ami2ban}"
}

uninstall() {
  if systemd_up; then
    systemctl disable --now ami2ban.service 2>/dev/null || true
  fi
  rm -f "$UNIT" "$BIN"
  rm -rf "$ROOT$PREFIX"
  systemd_up && systemctl daemon-reload
  say "removed $PREFIX, the unit and the ami2ban command"
  if [ "$REMOVE_TABLE" = true ]; then
    t="$(table_name)"
    if [ -z "$ROOT" ] && nft list table inet "$t" >/dev/null 2>&1; then
      nft delete table inet "$t"
      say "removed the nftables table inet $t (its bans are lifted)"
    fi
  else
    say "the nftables table inet $(table_name) and its bans are left in the kernel (--remove-table lifts them)"
  fi
  if [ "$PURGE" = true ]; then
    rm -rf "$ETC" "$STATE"
    if grep -q "^$USER_NAME:" "$ROOT/etc/passwd" 2>/dev/null; then
      if [ -n "$ROOT" ]; then userdel --prefix "$ROOT" "$USER_NAME"; else userdel "$USER_NAME"; fi
    fi
    say "removed /etc/ami2ban, /var/lib/ami2ban (the ban history) and the user $USER_NAME"
  else
    say "kept /etc/ami2ban and /var/lib/ami2ban (--purge removes them and the user)"
  fi
}

install_files() {
  node_bin="$(command -v node || true)"
  [ -n "$node_bin" ] || { echo "install.sh: Node.js >= 20 is needed (node not found in PATH)" >&2; exit 1; }
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || {
    echo "install.sh: ami2ban needs Node.js >= 20 (found $(node --version))" >&2
    exit 1
  }
  if [ "$BUILD" = true ]; then
    say "building (scripts/setup.sh: system packages, npm ci, tsc)"
    "$SRC/scripts/setup.sh"
  fi
  [ -e "$SRC/packages/nftables-napi/build/Release/nftables_napi.node" ] && [ -f "$SRC/dist/src/main.js" ] || {
    echo "install.sh: $SRC is not built (run without --no-build)" >&2
    exit 1
  }

  # The program: built code and production dependencies only, owned by root, read-only to the service.
  dest="$ROOT$PREFIX"
  rm -rf "$dest.new"
  mkdir -p "$dest.new/packages/nftables-napi/build/Release"
  cp -a "$SRC/package.json" "$SRC/package-lock.json" "$SRC/README.md" "$SRC/LICENSE" "$SRC/bin" "$SRC/dist" "$SRC/node_modules" "$dest.new/"
  cp -a "$SRC/packages/nftables-napi/package.json" "$SRC/packages/nftables-napi/dist" "$dest.new/packages/nftables-napi/"
  cp -a "$SRC/packages/nftables-napi/build/Release/nftables_napi.node" "$dest.new/packages/nftables-napi/build/Release/"
  rm -rf "$dest.new/dist/test" "$dest.new/dist/bench"
  (cd "$dest.new" && npm prune --omit=dev --no-audit --no-fund --ignore-scripts >/dev/null)
  # better-sqlite3's SQLite sources and object files are not needed to run (two thirds of the install).
  sq="$dest.new/node_modules/better-sqlite3"
  rm -rf "$sq/deps" "$sq/src" "$sq/build/deps" "$sq/build/Release/obj" "$sq/build/Release/obj.target" "$sq/build/Release/.deps" "$sq/build/Release/sqlite3.a" "$sq/build/Release/test_extension.node"
  find "$dest.new/node_modules" -mindepth 1 -maxdepth 1 -type d -empty -delete
  chown -R 0:0 "$dest.new"
  chmod -R go-w "$dest.new"
  rm -rf "$dest"
  mv "$dest.new" "$dest"
  mkdir -p "$(dirname "$BIN")"
  ln -sfn "$PREFIX/bin/ami2ban.js" "$BIN"
  say "installed $PREFIX (node: $node_bin)"

  # The user: a system account without a shell or a home of its own.
  if ! grep -q "^$USER_NAME:" "$ROOT/etc/passwd" 2>/dev/null; then
    if [ -n "$ROOT" ]; then
      useradd --prefix "$ROOT" --system --user-group --home-dir /var/lib/ami2ban --no-create-home --shell /usr/sbin/nologin "$USER_NAME"
    else
      useradd --system --user-group --home-dir /var/lib/ami2ban --no-create-home --shell /usr/sbin/nologin "$USER_NAME"
    fi
    say "created the system user $USER_NAME"
  fi

  # Settings: made once from the example, root-only (the AMI secret is in it); never overwritten.
  mkdir -p "$ETC"
  chmod 0755 "$ETC"
  if [ ! -f "$ENV_FILE" ]; then
    secret="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
    (umask 077 && sed -e "s|^AMI_SECRET=.*|AMI_SECRET=$secret|" \
      -e 's|^STATE_DIR=.*|STATE_DIR=/var/lib/ami2ban|' \
      -e 's|^#\{0,1\}CONTROL_LISTEN=.*|CONTROL_LISTEN=/run/ami2ban/control.sock|' \
      "$SRC/config/.env.example" > "$ENV_FILE")
    chmod 0600 "$ENV_FILE"
    say "wrote $ENV_FILE (mode 0600) with a new AMI secret"
  else
    secret="$(sed -n 's/^AMI_SECRET=//p' "$ENV_FILE" | tail -n 1)"
    say "kept the existing $ENV_FILE"
  fi

  # The unit, pointing at this node and this prefix.
  mkdir -p "$(dirname "$UNIT")"
  sed -e "s|^ExecStart=/usr/bin/node /opt/ami2ban/|ExecStart=$node_bin $PREFIX/|" \
    -e "s|file:/opt/ami2ban/|file:$PREFIX/|" \
    "$SRC/deploy/systemd/ami2ban.service" > "$UNIT"
  chmod 0644 "$UNIT"
  say "installed the unit $UNIT"
  systemd_up && systemctl daemon-reload

  cat <<EOF

Next:
 1. Give Asterisk the AMI user: add to /etc/asterisk/manager.conf (FreePBX: manager_custom.conf)

[ami2ban]
secret = ${secret:-<AMI_SECRET from $ENV_FILE>}
read = security
write =
deny = 0.0.0.0/0.0.0.0
permit = 127.0.0.1/255.255.255.255
writetimeout = 200

    then: asterisk -rx 'manager reload'
 2. Review /etc/ami2ban/ami2ban.env (BAN_IGNOREIP: your trunks and phones' networks), then check it:
    ami2ban check-config   (as root: AMI2BAN_ENV_FILE=/etc/ami2ban/ami2ban.env ami2ban check-config)
 3. systemctl enable --now ami2ban && ami2ban status
EOF
}

if [ "$ACTION" = uninstall ]; then uninstall; else install_files; fi
