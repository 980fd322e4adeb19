#!/usr/bin/env bash
# The test command (README "Quick start"): builds the workspace, makes the
# Python venvs with PyCOM 0.3.2, 0.4.2 and 0.6.0 for the interop tests (once,
# in target/py-peers*), then runs every test of every crate, then builds the
# Python client's wheel (python/, with maturin from PyPI in target/py-client)
# and runs its pytest suite against the binaries just built.
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

# The Python client's build and test tools (maturin, pytest, pyzmq).
pyvenv="${PYCOM_CLIENT_VENV:-$PWD/target/py-client}"
if ! "$pyvenv/bin/python" -c 'import pytest, zmq; from importlib.metadata import version; assert version("maturin") == "1.16.0"' 2>/dev/null; then
  echo "== Creating $pyvenv with maturin, pytest and pyzmq from PyPI"
  python3 -m venv "$pyvenv"
  "$pyvenv/bin/pip" install --quiet --disable-pip-version-check -r python/requirements-test.txt
fi

echo "== Building"
cargo build --release --workspace --locked
echo "== Testing"
log="$(mktemp)"
wheels="$(mktemp -d)"
trap 'rm -rf "$log" "$wheels"' EXIT
status=0
cargo test --release --workspace --locked 2>&1 | tee "$log" || status=$?

# The Python client (python/): its wheel, built into the workspace's target
# directory (sharing its dependencies' builds), installed in its venv, and
# its pytest suite run against the pycomd, pycomctl and echo_service example
# that cargo test built.
echo "== Python client"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if "$pyvenv/bin/maturin" build --release --locked --quiet -m python/Cargo.toml -o "$wheels" \
  && "$pyvenv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheels"/*.whl; then
  # From the root: python/pycom_client (sources without the extension)
  # must not shadow the installed wheel.
  "$pyvenv/bin/python" -m pytest -p no:cacheprovider -q python/tests 2>&1 | tee -a "$log" || status=$?
else
  echo "the Python client's wheel did not build or install"
  echo "test result: FAILED. 0 passed; 1 failed;" >> "$log"
  status=1
fi

# One closing line for the whole run: cargo prints one per test binary,
# pytest one of its own ("N passed, M failed in Ts").
awk '
  /^test result:/ { p += $4; f += $6 }
  /^=* *[0-9]+ (passed|failed|error)/ && / in [0-9.]+s/ {
    if (match($0, /[0-9]+ passed/)) p += substr($0, RSTART, RLENGTH - 7)
    if (match($0, /[0-9]+ failed/)) f += substr($0, RSTART, RLENGTH - 7)
    if (match($0, /[0-9]+ error/)) f += substr($0, RSTART, RLENGTH - 6)
  }
  END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
