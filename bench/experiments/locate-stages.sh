#!/usr/bin/env bash
# Where a pipelined `locate` spends what the raw echo does not: pycomd with
# its request handling cut short at each stage, against the raw ZeroMQ echo,
# 4 clients x 64 in flight, in alternating rounds (BENCHMARKS.md, "Where a
# locate's time goes"). Needs a pycomd built with locate-stages.patch:
#
#   # the patch is against commit df4ce69 (the request path changed after it)
#   git worktree add /tmp/stages df4ce69 && cd /tmp/stages
#   git apply bench/experiments/locate-stages.patch
#   cargo build --release -p pycomd -p pycomctl -p pycom-bench
#   bash bench/experiments/locate-stages.sh [ROUNDS]    # default 6, DUR=3 s each
#   git apply -R bench/experiments/locate-stages.patch
#
# Stages (environment of each pycomd):
#   trivial   EXP_TRIVIAL=1  a fixed locate-sized reply, nothing decoded
#   decode    EXP_STAGE=1    the request decoded (proto::decode_call), then the fixed reply
#   dispatch  EXP_STAGE=2    decoded, looked up, its reply made, then the fixed reply sent
#   full      (none)         pycomd as it is
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-6}"
bin="${CARGO_TARGET_DIR:-target}/release"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work="$(mktemp -d)"; pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
declare -A endpoint preload
names=(echo trivial decode dispatch full)
# The raw echo in a process of its own; it serves until its stdin, a pipe
# this script holds open, closes (when the script exits).
mkfifo "$work/echo-stdin"
"$bin/pycom-bench" --serve echo < "$work/echo-stdin" > "$work/echo" & pids+=($!)
exec 9> "$work/echo-stdin"
until [[ -s "$work/echo" ]]; do sleep 0.05; done
endpoint[echo]="$(head -1 "$work/echo")"; preload[echo]=0
start() { # name env...
  local name="$1"; shift
  local ns="tcp://127.0.0.1:$(free_port)"
  env "$@" PYCOMD_HTTP_LISTEN=127.0.0.1:0 PYCOMD_PUBSUB__XSUB="tcp://127.0.0.1:$(free_port)" \
    PYCOMD_PUBSUB__XPUB="tcp://127.0.0.1:$(free_port)" \
    "$bin/pycomd" --listen "$ns" --data-dir "$work/$name" --log-level warn & pids+=($!)
  until "$bin/pycomctl" --nameserver "$ns" --timeout 50 stat >/dev/null 2>&1; do sleep 0.01; done
  endpoint[$name]="$ns"; preload[$name]=10000
}
start trivial EXP_TRIVIAL=1
start decode EXP_STAGE=1
start dispatch EXP_STAGE=2
start full EXP_STAGE=0
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$rounds"); do
  for name in "${names[@]}"; do
    line=$("$bin/pycom-bench" --quiet --nameserver "${endpoint[$name]}" --op locate --preload "${preload[$name]}" \
      --clients 4 --in-flight 64 --duration "${DUR:-3}" --no-baseline | tail -1)
    echo "$name $line"
  done
done | tee "$work/runs"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$work/runs" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    runs[f[0]].append(float(f[4]))
echo = statistics.median(runs["echo"])
print(f"{'stage':10} {'median req/s':>12} {'of echo':>8}   runs")
for name, v in runs.items():
    m = statistics.median(v)
    print(f"{name:10} {m:12,.0f} {m / echo:8.2f}   " + " ".join(f"{x / 1000:.0f}k" for x in v))
PY
