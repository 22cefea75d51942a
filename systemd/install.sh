#!/usr/bin/env bash
# Install maskgate as a system service on a Raspberry Pi (Raspberry Pi OS Bookworm) or any systemd host.
#
#   sudo systemd/install.sh [--mirror DIR] [--no-start] [--dry-run]
#
# Creates the `maskgate` system user (groups gpio and video), a virtual environment in
# /opt/maskgate/venv with maskgate from this checkout, /etc/maskgate/config.toml from the
# documented example (an existing one is kept), verified model files in /var/cache/maskgate,
# and the unit /etc/systemd/system/maskgate.service with its network drop-in (maskgate.service.d/
# network.conf, from `maskgate sandbox`), then enables and starts it.
# --mirror DIR takes the model files from a local folder instead of their official URLs.
# Running it again upgrades maskgate and the unit and keeps the configuration.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/maskgate
CONF=/etc/maskgate/config.toml
CACHE=/var/cache/maskgate
UNIT=/etc/systemd/system/maskgate.service
MIRROR=""
START=1
DRY=0

while [ $# -gt 0 ]; do
  case "$1" in
    --mirror) MIRROR=$(cd "$2" && pwd); shift 2 ;;
    --no-start) START=0; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

run() { if [ "$DRY" = 1 ]; then echo "+ $*"; else "$@"; fi; }

if [ "$DRY" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo), or with --dry-run to see the steps" >&2
  exit 2
fi

# picamera2 and lgpio come from Raspberry Pi OS's packages (libcamera has no wheels on PyPI);
# the venv sees them through --system-site-packages.
if command -v apt-get >/dev/null && apt-cache show python3-picamera2 >/dev/null 2>&1; then
  run apt-get install -y python3-venv python3-picamera2 python3-lgpio
fi

for group in gpio video; do
  getent group "$group" >/dev/null || run groupadd --system "$group"
done
if ! id maskgate >/dev/null 2>&1; then
  run useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
    --user-group --groups gpio,video maskgate
fi

run python3 -m venv --system-site-packages "$PREFIX/venv"
run "$PREFIX/venv/bin/pip" install --quiet --upgrade pip
run "$PREFIX/venv/bin/pip" install --quiet "$SRC[edge]"

run install -d -m 0750 -o root -g maskgate /etc/maskgate
if [ -e "$CONF" ]; then
  echo "keeping the existing $CONF"
else
  run install -m 0640 -o root -g maskgate "$SRC/systemd/config.toml" "$CONF"
fi
run "$PREFIX/venv/bin/maskgate" run --config "$CONF" --validate-config

run install -d -m 0755 -o maskgate -g maskgate "$CACHE"
run env MASKGATE_CACHE="$CACHE" ${MIRROR:+MASKGATE_MIRROR="$MIRROR"} \
  setpriv --reuid=maskgate --regid=maskgate --init-groups "$PREFIX/venv/bin/maskgate" models fetch --for edge

run install -m 0644 "$SRC/systemd/maskgate.service" "$UNIT"
# The network sandbox for this configuration (web.listen, web.allow, a stream camera's host): a drop-in
# beside the unit, written again by `maskgate sandbox --write` whenever [web] or [source] changes.
run install -d -m 0755 "$UNIT.d"
run "$PREFIX/venv/bin/maskgate" sandbox --config "$CONF" --write "$UNIT.d"
run systemctl daemon-reload
if [ "$START" = 1 ]; then
  run systemctl enable --now maskgate.service
  echo "maskgate is running: journalctl -u maskgate -f"
else
  run systemctl enable maskgate.service
  echo "maskgate is installed; start it with: systemctl start maskgate"
fi
