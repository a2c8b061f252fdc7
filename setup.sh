#!/usr/bin/env bash
# Set up BPCV-FL on a fresh machine: a Python virtual environment (.venv) with the project installed.
#   ./setup.sh          the runtime (TensorFlow 2.15.1, tensorflow-privacy 0.9.0, paho-mqtt, lmdb, pynacl, ...)
#   ./setup.sh --test   also the test tools, and mosquitto from apt-get (the integration tests use a real broker)
# Safe to re-run: it only installs what is missing or out of date.
set -euo pipefail
cd "$(dirname "$0")"

want_tests=0
for arg in "$@"; do
  case "$arg" in
    --test) want_tests=1 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
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

if [ "$want_tests" = 1 ] && ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "== installing mosquitto (apt-get)"
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq mosquitto >/dev/null
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
echo "== ready: .venv/bin/bpcv --help"
