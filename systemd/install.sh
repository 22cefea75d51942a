#!/usr/bin/env bash
# Install maskgate as a system service on a Raspberry Pi (Raspberry Pi OS Bookworm) or any systemd host.
#
#   sudo systemd/install.sh [--wheelhouse DIR] [--mirror DIR] [--no-start] [--dry-run]
#
# Creates the `maskgate` system user (groups gpio and video), a virtual environment in
# /opt/maskgate/venv (--system-site-packages: it sees apt's python3-picamera2 and python3-lgpio)
# with maskgate from this checkout, /etc/maskgate/config.toml from the documented example (an
# existing one is kept), the model files its detector needs, verified, in /var/cache/maskgate,
# and the unit /etc/systemd/system/maskgate.service with its network drop-in (maskgate.service.d/
# network.conf, from `maskgate sandbox`), then enables and starts it.
# --wheelhouse DIR installs offline from a folder of wheels (`make wheelhouse`) instead of PyPI.
# --mirror DIR takes the model files from a local folder instead of their official URLs.
# Running it again upgrades maskgate and the unit and keeps the configuration.
# Needs 64-bit Raspberry Pi OS Bookworm (or Debian 12) on a Pi 3, 4, 5, Zero 2 W or CM3/4/5.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/maskgate
CONF=/etc/maskgate/config.toml
CACHE=/var/cache/maskgate
UNIT=/etc/systemd/system/maskgate.service
MIRROR=""
WHEELHOUSE=""
START=1
DRY=0

while [ $# -gt 0 ]; do
  case "$1" in
    --mirror) MIRROR=$(cd "$2" && pwd); shift 2 ;;
    --wheelhouse) WHEELHOUSE=$(cd "$2" && pwd); shift 2 ;;
    --no-start) START=0; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

run() { if [ "$DRY" = 1 ]; then echo "+ $*"; else "$@"; fi; }

if [ "$DRY" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo), or with --dry-run to see the steps" >&2
  exit 2
fi

# LiteRT publishes 64-bit wheels only, and PyPI has no 32-bit ARM wheels of numpy, OpenCV or Pillow:
# refuse before anything is changed. The interpreter decides, not the kernel: 32-bit Raspberry Pi OS
# runs a 64-bit kernel on a Pi 4 and 5, so `uname -m` says aarch64 there.
command -v python3 >/dev/null || { echo "install.sh: python3 not found: apt install python3 python3-venv" >&2; exit 2; }
BITS=$(python3 -c 'import struct; print(8 * struct.calcsize("P"))')
MACHINE=$(uname -m)
if [ "$BITS" != 64 ] || { [ "$MACHINE" != x86_64 ] && [ "$MACHINE" != aarch64 ]; }; then
  echo "install.sh: $BITS-bit Python on $MACHINE is not supported: maskgate needs 64-bit Raspberry Pi OS" \
    "Bookworm (or Debian 12) on a Pi 3, 4, 5, Zero 2 W or CM3/4/5, or any 64-bit x86 Linux" >&2
  exit 2
fi

# picamera2 and lgpio come from Raspberry Pi OS's packages (libcamera has no wheels on PyPI);
# the venv sees them through --system-site-packages.
APT_PACKAGES="python3-venv python3-picamera2 python3-lgpio"
# shellcheck disable=SC2086
if dpkg-query -W -f='${Status}\n' $APT_PACKAGES 2>/dev/null | grep -c "ok installed" | grep -qx 3; then
  :
elif command -v apt-get >/dev/null && apt-cache show python3-picamera2 >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  run apt-get install -y $APT_PACKAGES
else
  echo "install.sh: python3-picamera2 is not installed nor available from apt here (not Raspberry Pi OS):" \
    "the camera source 'picamera' will not work; USB cameras, streams and files will"
fi

for group in gpio video; do
  getent group "$group" >/dev/null || run groupadd --system "$group"
done
if ! id maskgate >/dev/null 2>&1; then
  run useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
    --user-group --groups gpio,video maskgate
fi

run python3 -m venv --system-site-packages "$PREFIX/venv"
if [ -n "$WHEELHOUSE" ]; then  # offline: maskgate and every dependency from the folder, wheels only
  run "$PREFIX/venv/bin/pip" install --quiet --no-index --find-links "$WHEELHOUSE" --only-binary=:all: \
    --upgrade "maskgate[edge]"
  # the same version again is the wheelhouse's build, not necessarily the installed one
  run "$PREFIX/venv/bin/pip" install --quiet --no-index --find-links "$WHEELHOUSE" --no-deps --force-reinstall \
    maskgate
else
  run "$PREFIX/venv/bin/pip" install --quiet --upgrade pip
  run "$PREFIX/venv/bin/pip" install --quiet --only-binary=:all: "$SRC[edge]"
fi

run install -d -m 0750 -o root -g maskgate /etc/maskgate
if [ -e "$CONF" ]; then
  echo "keeping the existing $CONF"
else
  run install -m 0640 -o root -g maskgate "$SRC/systemd/config.toml" "$CONF"
fi
run "$PREFIX/venv/bin/maskgate" run --config "$CONF" --validate-config

run install -d -m 0755 -o maskgate -g maskgate "$CACHE"
run env MASKGATE_CACHE="$CACHE" ${MIRROR:+MASKGATE_MIRROR="$MIRROR"} \
  setpriv --reuid=maskgate --regid=maskgate --init-groups "$PREFIX/venv/bin/maskgate" models fetch --for edge \
  --config "$CONF"

run install -d -m 0755 "$(dirname "$UNIT")"
run install -m 0644 "$SRC/systemd/maskgate.service" "$UNIT"
# The network sandbox for this configuration (web.listen, web.allow, a stream camera's host, the MQTT
# broker): a drop-in beside the unit, written again by `maskgate sandbox --write` whenever [web],
# [source] or [mqtt] changes.
run install -d -m 0755 "$UNIT.d"
run "$PREFIX/venv/bin/maskgate" sandbox --config "$CONF" --write "$UNIT.d"
if [ "$DRY" = 0 ] && [ ! -d /run/systemd/system ]; then  # a chroot or a container: nothing to tell
  echo "maskgate is installed; systemd is not running here: enable it with: systemctl enable --now maskgate"
  exit 0
fi
run systemctl daemon-reload
if [ "$START" = 1 ]; then
  run systemctl enable --now maskgate.service
  echo "maskgate is running: journalctl -u maskgate -f"
else
  run systemctl enable maskgate.service
  echo "maskgate is installed; start it with: systemctl start maskgate"
fi
