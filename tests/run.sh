#!/usr/bin/env bash
# The test command (README "Quick start"): builds the workspace, makes the
# Python venv with PyCOM 0.3.2 for the interop tests (once, in
# target/py-peers), then runs every test of every crate.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${PYCOM_VENV:-$PWD/target/py-peers}"
if ! "$venv/bin/python" -c 'import pycom, zmq, tornado, six' 2>/dev/null; then
  echo "== Creating $venv with the PyCOM 0.3.2 peers from PyPI"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
fi
export PYCOM_PYTHON="$venv/bin/python"

echo "== Building"
cargo build --release --workspace --locked
echo "== Testing"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --workspace --locked 2>&1 | tee "$log" || status=$?
# One closing line for the whole run: cargo prints one per test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
