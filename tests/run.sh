#!/usr/bin/env bash
# The test command (README "Quick start"): builds the workspace, makes the
# Python venvs with PyCOM 0.3.2, 0.4.2 and 0.6.0 for the interop tests (once,
# in target/py-peers*), then runs every test of every crate.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${PYCOM_VENV:-$PWD/target/py-peers}"
if ! "$venv/bin/python" -c 'import pycom, zmq, tornado, six, prometheus_client' 2>/dev/null; then
  echo "== Creating $venv with the PyCOM 0.3.2 peers from PyPI"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
fi
export PYCOM_PYTHON="$venv/bin/python"
# PyCOM 0.4.2 (its proxy client) cannot share a venv with 0.3.2.
venv04="${PYCOM04_VENV:-$PWD/target/py-peers-0.4}"
if ! "$venv04/bin/python" -c 'import zmq, tornado, six; from importlib.metadata import version; assert version("pycom") == "0.4.2"' 2>/dev/null; then
  echo "== Creating $venv04 with PyCOM 0.4.2 from PyPI"
  python3 -m venv "$venv04"
  "$venv04/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements-0.4.txt
fi
export PYCOM04_PYTHON="$venv04/bin/python"
# PyCOM 0.6.0 needs three edits to import on Python 3.11 (patch_pycom06.py,
# idempotent, run every time; it fails loudly if an edit no longer applies).
venv06="${PYCOM06_VENV:-$PWD/target/py-peers-0.6}"
if ! "$venv06/bin/python" -c 'import zmq, tornado, six; from importlib.metadata import version; assert version("pycom") == "0.6.0"' 2>/dev/null; then
  echo "== Creating $venv06 with PyCOM 0.6.0 from PyPI"
  python3 -m venv "$venv06"
  "$venv06/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements-0.6.txt
fi
"$venv06/bin/python" tests/interop/patch_pycom06.py
"$venv06/bin/python" -c 'import pycom; assert pycom.__version__ == "0.6.0"'
export PYCOM06_PYTHON="$venv06/bin/python"

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
