#!/usr/bin/env bash
# Reproduces every figure in BENCHMARKS.md: starts pycomd (and PyCOM 0.3.2's
# nameserver) on free local ports with temporary data dirs, runs pycom-bench
# against them, measures memory and restart time. Takes a few minutes.
#
#   bash bench/run.sh            # full run, DURATION=5 s per measurement
#   DURATION=2 REPEAT=1 bash bench/run.sh # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-5}"
cargo build --release --workspace --locked -q
bin=target/release
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() { # endpoint -> prints ms until stat answers
  local start end; start=$(date +%s%N)
  until "$bin/pycomctl" --nameserver "$1" --timeout 50 stat >/dev/null 2>&1; do sleep 0.005; done
  end=$(date +%s%N); echo $(( (end - start) / 1000000 ))
}
rss_mb() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
REPEAT="${REPEAT:-3}"
# Each row: the median of $REPEAT runs, each followed by its raw-echo baseline.
bench() { "$bin/pycom-bench" --quiet --duration "$DURATION" --repeat "$REPEAT" "$@" | tail -n +2; }

echo "== machine"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

port=$(free_port); ns="tcp://127.0.0.1:$port"
"$bin/pycomd" --listen "$ns" --data-dir "$work/data" --log-level warn & pids+=($!); pycomd=$!
wait_ready "$ns" >/dev/null

header() { printf '%-10s %7s %9s %10s %8s %8s %8s %7s | %10s %8s | %7s %7s\n' op clients in-flight req/s "p50 us" "p99 us" "p99.9 us" errors "echo req/s" "echo p50" "x req/s" "x p50"; }
echo "== stat, locate (10,000 services): one request in flight, then pipelined"
header
bench --nameserver "$ns" --op stat --clients 1 --in-flight 1
bench --nameserver "$ns" --op stat --clients 4 --in-flight 64
bench --nameserver "$ns" --op locate --preload 10000 --clients 1 --in-flight 1
bench --nameserver "$ns" --op locate --preload 10000 --clients 4 --in-flight 64

echo "== scaling: locate, 16 in flight per client"
header
bench --nameserver "$ns" --op locate --preload 10000 --scaling 1,4,16,64 --in-flight 16

echo "== durable register (64 clients), renew (pipelined)"
header
bench --nameserver "$ns" --op register --clients 64 --in-flight 1
bench --nameserver "$ns" --op renew --preload 10000 --clients 4 --in-flight 64

echo "== invoke: pycom-client Component -> pycom-client echo service; raw pipelined DEALER -> same service"
header
bench --op invoke --clients 4
bench --op invoke-raw --clients 4 --in-flight 64

echo "== memory and restart with 100,000 leased services"
kill -TERM "$pycomd"; wait "$pycomd" || true
port=$(free_port); ns="tcp://127.0.0.1:$port"
rm -rf "$work/big"
"$bin/pycomd" --listen "$ns" --data-dir "$work/big" --log-level warn & pids+=($!); pycomd=$!
wait_ready "$ns" >/dev/null
echo "RSS empty: $(rss_mb "$pycomd") MB"
"$bin/pycom-bench" --quiet --nameserver "$ns" --op renew --preload 100000 --clients 1 --duration 0.5 --no-baseline >/dev/null
echo "RSS with 100,000 services: $(rss_mb "$pycomd") MB"
kill -TERM "$pycomd"; wait "$pycomd" || true
"$bin/pycomd" --listen "$ns" --data-dir "$work/big" --log-level warn & pids+=($!); pycomd=$!
echo "restart with 100,000 records: serving after $(wait_ready "$ns") ms (pycomctl polling every 5 ms)"
echo "RSS after restart: $(rss_mb "$pycomd") MB"
kill -TERM "$pycomd"; wait "$pycomd" || true

venv=target/py-peers
if "$venv/bin/python" -c 'import pycom' 2>/dev/null; then
  echo "== PyCOM 0.3.2 nameserver (Python), same tool"
  header
  port=$(free_port); old="tcp://127.0.0.1:$port"
  "$venv/bin/python" -c "import pycom; pycom.main(['pycom.apps.nameserver', '-a', '$old', '-s', '/org/pycom/nameserver'])" 2>/dev/null & pids+=($!)
  wait_ready "$old" >/dev/null
  bench --nameserver "$old" --op stat --clients 1 --in-flight 1
  bench --nameserver "$old" --op stat --clients 4 --in-flight 64
  bench --nameserver "$old" --op locate --preload 1000 --clients 4 --in-flight 64
else
  echo "(no $venv: run bash tests/run.sh once to get the PyCOM 0.3.2 peers)"
fi
