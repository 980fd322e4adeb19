#!/usr/bin/env bash
# CPU per pipelined `locate`, thread by thread, against the raw echo
# (BENCHMARKS.md, "What was taken off"): steadier than throughput on a
# shared machine. Each round runs the raw echo, then each pycomd binary
# given (default: target/release/pycomd), 4 clients x 64 in flight among
# $PRELOAD (10,000) services; after the preload, a $DUR (4) s window reads
# /proc: the server thread's and the whole server process's CPU, the load
# tool's threads' CPU, and the machine's idle share. Prints each run, then
# per binary the medians and the ratio to the echo of the same round.
#
#   cargo build --release -p pycomd -p pycomctl -p pycom-bench
#   bash bench/experiments/locate-cpu.sh 5 old/pycomd target/release/pycomd
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-5}"; shift || true
bin="${CARGO_TARGET_DIR:-target}/release"
targets=("${@:-$bin/pycomd}")
dur="${DUR:-4}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# One run: "tp N server NS process NS bench NS idle PCT".
run() { # target: "echo" or a pycomd binary
  local target="$1" work pid server ns preload bench
  work="$(mktemp -d)"
  if [[ $target == echo ]]; then
    mkfifo "$work/stdin"
    "$bin/pycom-bench" --serve echo < "$work/stdin" > "$work/endpoint" & pid=$!
    exec 9> "$work/stdin"
    until [[ -s "$work/endpoint" ]]; do sleep 0.05; done
    ns="$(head -1 "$work/endpoint")"; preload=0
    # The echo's serving thread: the process's third (main, I/O, echo).
    server="$(ls /proc/$pid/task | sort -n | sed -n 3p)"
  else
    ns="tcp://127.0.0.1:$(free_port)"; preload="${PRELOAD:-10000}"
    PYCOMD_HTTP_LISTEN=127.0.0.1:0 PYCOMD_PUBSUB__XSUB="tcp://127.0.0.1:$(free_port)" \
      PYCOMD_PUBSUB__XPUB="tcp://127.0.0.1:$(free_port)" \
      "$target" --listen "$ns" --data-dir "$work/data" --log-level warn > "$work/log" 2>&1 & pid=$!
    server=$pid
    until "$bin/pycomctl" --nameserver "$ns" --timeout 50 stat >/dev/null 2>&1; do sleep 0.01; done
  fi
  "$bin/pycom-bench" --nameserver "$ns" --op locate --preload "$preload" --clients 4 --in-flight 64 \
    --duration $((dur + 3)) --no-baseline > "$work/out" 2> "$work/err" & bench=$!
  if (( preload > 0 )); then
    until grep -q preloaded "$work/err" 2>/dev/null; do sleep 0.05; done
  fi
  sleep 1
  snap() {
    echo "$(awk '/^cpu /{print $5+$6, $2+$3+$4+$5+$6+$7+$8}' /proc/stat)" \
      "$(awk '{print $1}' "/proc/$pid/task/$server/schedstat")" \
      "$(awk '{print $14+$15}' "/proc/$pid/stat")" \
      "$(cat /proc/$bench/task/*/schedstat | awk '{s+=$1} END {print s}')" \
      "$(date +%s.%N)" \
      "$(awk '/^voluntary_ctxt_switches/ {print $2}' "/proc/$pid/task/$server/status")"
  }
  local before after tp
  before="$(snap)"; sleep "$dur"; after="$(snap)"
  wait "$bench"
  tp="$(awk '/^locate/ {print $4}' "$work/out" | tail -1)"
  if [[ $target == echo ]]; then exec 9>&-; wait "$pid"; else kill "$pid"; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
  python3 - "$tp" "$before" "$after" "$(getconf CLK_TCK)" <<'PY'
import sys
tp = float(sys.argv[1]); a = [float(x) for x in sys.argv[2].split()]; b = [float(x) for x in sys.argv[3].split()]
tick = 1e9 / float(sys.argv[4]); n = tp * (b[5] - a[5])
print(f"tp {tp:.0f} server {(b[2]-a[2])/n:.0f} process {(b[3]-a[3])*tick/n:.0f} "
      f"bench {(b[4]-a[4])/n:.0f} idle {100*(b[0]-a[0])/(b[1]-a[1]):.1f} "
      f"sleeps {1000*(b[6]-a[6])/n:.1f}")
PY
}

out="$(mktemp)"; trap 'rm -f "$out"' EXIT
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$rounds"); do
  for target in echo "${targets[@]}"; do
    echo "$target $(run "$target")"
  done
done | tee "$out"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list); ratios = collections.defaultdict(list); echo = None
for line in open(sys.argv[1]):
    f = line.split()
    name, v = f[0], dict(zip(f[1::2], map(float, f[2::2])))
    if name == "echo":
        echo = v["tp"]
    elif echo:
        ratios[name].append(v["tp"] / echo)
    runs[name].append(v)
print("medians, per request in ns (server thread, server process, load tool), idle %,")
print("the server thread's sleeps per 1,000 requests:")
for name, vs in runs.items():
    m = {k: statistics.median(v[k] for v in vs) for k in vs[0]}
    ratio = f" ratio {statistics.median(ratios[name]):.3f}" if name in ratios else ""
    print(f"{name}: {m['tp']:.0f}/s{ratio} server {m['server']:.0f} process {m['process']:.0f} "
          f"bench {m['bench']:.0f} idle {m['idle']:.1f} sleeps {m['sleeps']:.1f}")
PY
