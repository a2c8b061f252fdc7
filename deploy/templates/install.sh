#!/bin/sh
# Install (or upgrade in place) this BPCV-FL edge agent bundle on a device. Run as root from the
# bundle folder:   sudo sh install.sh
# - refuses 32-bit systems (TensorFlow has no build for them) and Python outside 3.10-3.11
#   (BPCV_PYTHON=/path/to/python3.11 picks an interpreter);
# - creates the system user `bpcv`, /etc/bpcv (config, key, genesis, TLS files), /var/lib/bpcv (the chain);
# - creates /opt/bpcv/venv and installs BPCV-FL from the bundled wheel (dependencies from the package
#   index, or from wheels/ alone when BPCV_OFFLINE=1);
# - installs and enables bpcv-agent.service, and (re)starts it when systemd is running.
# Re-running it upgrades in place: the node's key and its chain are never replaced or removed.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=/opt/bpcv
ETC=/etc/bpcv
STATE=/var/lib/bpcv
UNIT=/etc/systemd/system/bpcv-agent.service
NODE=$(cat "$HERE/NODE")

say() { echo "bpcv install: $*"; }
die() { echo "bpcv install: error: $*" >&2; exit 1; }

case "$(uname -m)" in
  x86_64|amd64|aarch64|arm64) ;;
  armv6l|armv7l|armv8l|armhf|arm*|i386|i486|i586|i686)
    die "this is a 32-bit system ($(uname -m)). TensorFlow has no build for it: flash the 64-bit Raspberry Pi OS (arm64) and run this again." ;;
  *) die "unsupported machine type $(uname -m) (need x86_64 or aarch64)" ;;
esac
if [ "$(getconf LONG_BIT 2>/dev/null || echo 64)" != 64 ]; then
  die "this is a 32-bit userland on a 64-bit kernel (Raspberry Pi OS 32-bit). TensorFlow has no build for it: flash the 64-bit Raspberry Pi OS (arm64)."
fi

PYTHON=""
for candidate in "${BPCV_PYTHON:-}" python3.11 python3.10 python3; do
  [ -n "$candidate" ] || continue
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] < (3, 12) else 1)' 2>/dev/null; then
    PYTHON=$(command -v "$candidate"); break
  fi
done
if [ -z "$PYTHON" ]; then
  found=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)
  die "need Python 3.10 or 3.11 (TensorFlow 2.15 has no build for newer ones); this system's python3 is $found. Flash Raspberry Pi OS (Legacy, 64-bit), which is bookworm with 3.11, or install a Python 3.11 and run again with BPCV_PYTHON=/path/to/python3.11"
fi
[ "$(id -u)" = 0 ] || die "run as root (sudo sh $0)"

if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  if command -v apt-get >/dev/null 2>&1; then
    say "installing python3-venv (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
  fi
  "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || die "$PYTHON cannot create virtual environments: install python3-venv"
fi

# The key decides who this device is: never replace it with another node's.
if [ -f "$ETC/node.key" ] && ! cmp -s "$ETC/node.key" "$HERE/node.key"; then
  die "this device already runs node $(cat "$ETC/NODE" 2>/dev/null || echo '?') with another key; to re-provision it as $NODE, stop bpcv-agent and remove $ETC and $STATE first"
fi

getent group bpcv >/dev/null || groupadd --system bpcv
getent passwd bpcv >/dev/null || useradd --system --gid bpcv --home-dir "$STATE" --shell /usr/sbin/nologin bpcv
install -d -o root -g bpcv -m 0750 "$ETC"
install -d -o bpcv -g bpcv -m 0750 "$STATE"

[ -f "$ETC/agent.toml" ] && cp -p "$ETC/agent.toml" "$ETC/agent.toml.previous"
install -o root -g bpcv -m 0640 "$HERE/agent.toml" "$ETC/agent.toml"
install -o root -g bpcv -m 0640 "$HERE/genesis.bin" "$ETC/genesis.bin"
install -o root -g bpcv -m 0644 "$HERE/NODE" "$ETC/NODE"
[ -f "$ETC/node.key" ] || install -o bpcv -g bpcv -m 0600 "$HERE/node.key" "$ETC/node.key"
if [ -d "$HERE/tls" ]; then
  install -d -o root -g bpcv -m 0750 "$ETC/tls"
  install -o root -g bpcv -m 0644 "$HERE/tls/ca.crt" "$HERE/tls/client.crt" "$ETC/tls/"
  install -o bpcv -g bpcv -m 0600 "$HERE/tls/client.key" "$ETC/tls/client.key"
fi

[ -x "$PREFIX/venv/bin/python" ] || { say "creating $PREFIX/venv with $($PYTHON --version)"; "$PYTHON" -m venv "$PREFIX/venv"; }
WHEEL=$(ls "$HERE"/wheels/bpcv_fl-*.whl | head -n 1)
[ -n "${BPCV_OFFLINE:-}" ] && PIP_OPTS="--no-index --find-links $HERE/wheels" || PIP_OPTS="--find-links $HERE/wheels"
say "installing $(basename "$WHEEL") and its dependencies (TensorFlow is large: minutes the first time)"
# shellcheck disable=SC2086
"$PREFIX/venv/bin/python" -m pip install -q --disable-pip-version-check $PIP_OPTS "$WHEEL"
# shellcheck disable=SC2086
"$PREFIX/venv/bin/python" -m pip install -q --disable-pip-version-check $PIP_OPTS --force-reinstall --no-deps "$WHEEL"
"$PREFIX/venv/bin/bpcv" --help >/dev/null || die "the installed bpcv does not run"

install -m 0644 "$HERE/bpcv-agent.service" "$UNIT"
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  systemctl enable bpcv-agent.service >/dev/null
  systemctl restart bpcv-agent.service
  say "node $NODE installed and running: systemctl status bpcv-agent; journalctl -u bpcv-agent -f"
else
  # what `systemctl enable` does, for an image being prepared or a root without systemd running
  mkdir -p /etc/systemd/system/multi-user.target.wants
  ln -sf "$UNIT" /etc/systemd/system/multi-user.target.wants/bpcv-agent.service
  say "node $NODE installed and enabled; systemd is not running here, so it starts at the next boot"
fi
