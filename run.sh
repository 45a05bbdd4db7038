#!/usr/bin/env bash
# EasyPhoto launcher: creates .venv, installs what changed, starts the app.
#   ./run.sh                 install if needed, start the app, open the browser
#   ./run.sh --install-only  install only
#   ./run.sh test            install test tools too and run the test suite
#   ./run.sh mutate [MODULE] mutation testing of the core (slow; not part of the tests): reports/mutation.md
#   ./run.sh [app options]   e.g. ./run.sh --port 7861 --no-browser --model demo
set -euo pipefail
cd "$(dirname "$0")"

fail() { echo "EasyPhoto: $*" >&2; exit 1; }

find_python() {
  for p in python3.12 python3.11 python3.10 python3 python; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      echo "$p"; return 0
    fi
  done
  return 1
}

MODE=run
case "${1:-}" in
  --install-only) MODE=install; shift ;;
  test) MODE=test; shift ;;
  mutate) MODE=mutate; shift ;;
esac

PY=$(find_python) || fail "Python 3.10 or newer is needed. Install it from https://www.python.org/downloads/ and run this again."
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating the Python environment in $VENV (first run only)..."
  "$PY" -m venv "$VENV" || fail "could not create $VENV (on Debian/Ubuntu: sudo apt install python3-venv)."
fi
VPY="$VENV/bin/python"

REQ=requirements.txt
[ "$MODE" = test ] && REQ=requirements-dev.txt
[ "$MODE" = mutate ] && REQ=requirements-mutate.txt
STAMP="$VENV/.easyphoto-$(basename "$REQ" .txt).stamp"
WANT=$(cat requirements.txt "$REQ" | "$VPY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "Installing EasyPhoto's packages (first run: several minutes)..."
  "$VPY" -m pip install --quiet --upgrade pip
  TORCH=$(grep -E '^torch==' requirements.txt)
  if ! "$VPY" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
      echo "NVIDIA GPU found: installing PyTorch with CUDA."
      "$VPY" -m pip install "$TORCH" --index-url "${EASYPHOTO_TORCH_INDEX:-https://download.pytorch.org/whl/cu128}"
    elif [ "$(uname -s)" = Linux ]; then
      echo "No NVIDIA GPU: installing the CPU build of PyTorch (small download)."
      "$VPY" -m pip install --retries 0 --timeout 10 "$TORCH" --index-url "${EASYPHOTO_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" \
        || "$VPY" -m pip install "$TORCH"
    else
      "$VPY" -m pip install "$TORCH"
    fi
  fi
  "$VPY" -m pip install -r "$REQ" || fail "installing packages failed (see above). Check your internet connection and run again."
  echo "$WANT" > "$STAMP"
fi

case "$MODE" in
  install) echo "EasyPhoto is installed. Start it with ./run.sh" ;;
  test)
    export EASYPHOTO_TEST_ARTIFACTS="${EASYPHOTO_TEST_ARTIFACTS:-test-artifacts}"
    exec "$VPY" -m pytest "$@" ;;
  mutate) exec "$VPY" scripts/mutate.py "$@" ;;
  run) exec "$VPY" app.py "$@" ;;
esac
