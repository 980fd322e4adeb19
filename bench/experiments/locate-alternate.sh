#!/usr/bin/env bash
# Pipelined `locate` (4 clients x 64 in flight among 10,000 services),
# builds and their echoes alternating round by round (BENCHMARKS.md, "Taken
# off in a fourth session"). Each SPEC is NAME=BINDIR[:VAR=VALUE,...]: a
# pycomd started from BINDIR with those environment variables, or, for a
# NAME starting with "echo", the raw echo of BINDIR's pycom-bench (so each
# build can be held against the echo built with its own libzmq). Every
# server is started once and preloaded; then ROUNDS rounds run each for
# $DUR (3) s with BINDIR's own load tool. Prints each run and per name the
# median throughput, its ratio to an echo, p50 and the machine's idle share.
#
#   bash bench/experiments/locate-alternate.sh 10 echo=old old=old echo2=target/release new=target/release
set -uo pipefail
rounds="$1"; shift
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -A endpoint bindir preload
names=(); pids=(); fds=(); work="$(mktemp -d)"
# An echo serves until its stdin closes: each reads a FIFO held open here.
cleanup() {
  for fd in "${fds[@]}"; do exec {fd}>&-; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT
for spec in "$@"; do
  name="${spec%%=*}"; rest="${spec#*=}"; bin="${rest%%:*}"; vars=""
  [[ $rest == *:* ]] && vars="${rest#*:}"
  if [[ $name == echo* ]]; then
    mkfifo "$work/$name.stdin"
    "$bin/pycom-bench" --serve echo < "$work/$name.stdin" > "$work/$name.endpoint" & pids+=($!)
    exec {fd}> "$work/$name.stdin"; fds+=("$fd")
    until [[ -s $work/$name.endpoint ]]; do sleep 0.05; done
    endpoint[$name]="$(head -1 "$work/$name.endpoint")"; preload[$name]=0
  else
    ns="tcp://127.0.0.1:$(free_port)"
    env ${vars//,/ } PYCOMD_HTTP_LISTEN=127.0.0.1:0 PYCOMD_PUBSUB__XSUB="tcp://127.0.0.1:$(free_port)" \
      PYCOMD_PUBSUB__XPUB="tcp://127.0.0.1:$(free_port)" \
      "$bin/pycomd" --listen "$ns" --data-dir "$work/$name.data" --log-level warn > "$work/$name.log" 2>&1 & pids+=($!)
    until "$bin/pycomctl" --nameserver "$ns" --timeout 50 stat >/dev/null 2>&1; do sleep 0.01; done
    "$bin/pycom-bench" --nameserver "$ns" --op locate --preload 10000 --preload-only >/dev/null
    endpoint[$name]="$ns"; preload[$name]=10000
  fi
  bindir[$name]="$bin"; names+=("$name")
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$rounds"); do
  for name in "${names[@]}"; do
    read -r _ u1 n1 s1 i1 _ < /proc/stat
    line="$("${bindir[$name]}/pycom-bench" --quiet --nameserver "${endpoint[$name]}" --op locate \
      --preload "${preload[$name]}" --clients 4 --in-flight 64 --duration "${DUR:-3}" --no-baseline | tail -1)"
    read -r _ u2 n2 s2 i2 _ < /proc/stat
    busy=$(( (u2 - u1) + (n2 - n1) + (s2 - s1) )); idle=$(( i2 - i1 ))
    echo "$name $line idle% $(( 100 * idle / (busy + idle) ))"
  done
done | tee "$work/runs"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
# Each pycomd's ratio is to the echo of its own BINDIR, else the first echo.
python3 - "$work/runs" $(for n in "${names[@]}"; do echo "$n=${bindir[$n]}"; done) <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    runs[f[0]].append((float(f[4]), float(f[5]), float(f[-1])))
bindir = dict(a.split("=", 1) for a in sys.argv[2:])
echoes = [n for n in bindir if n.startswith("echo")]
median = {n: statistics.median(x[0] for x in v) for n, v in runs.items()}
for name, v in runs.items():
    own = [e for e in echoes if bindir[e] == bindir[name]] or echoes
    ratio = f"{median[name] / median[own[0]]:5.2f} of {own[0]}" if own and not name.startswith("echo") else ""
    print(f"{name:<9} median {median[name]:8,.0f}/s {ratio:<16} p50 {statistics.median(x[1] for x in v):4.0f} µs  "
          f"idle {statistics.median(x[2] for x in v):3.0f} %  runs: " + " ".join(f"{x[0]/1000:.0f}k" for x in v))
PY
