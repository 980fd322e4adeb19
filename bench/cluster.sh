#!/usr/bin/env bash
# The cluster figures of BENCHMARKS.md, one run, same machine: a 3-node
# pycomd cluster against a single node (both durable: fdatasync before the
# reply). Register throughput at $CLIENTS clients (to the leader, and to a
# follower, which hands the writes to the leader); locate throughput on the
# leader, a follower and the single node; failover: the leader killed
# (kill -9) $KILLS times, time to the first acknowledged register.
#
#   bash bench/cluster.sh                  # DURATION=5 s per measurement, KILLS=20
#   DURATION=2 KILLS=5 bash bench/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-5}"
KILLS="${KILLS:-20}"
CLIENTS="${CLIENTS:-64}"
if [[ "${BUILD:-1}" != 0 ]]; then cargo build --release --workspace --locked -q; fi
bin=target/release
work="$(mktemp -d "${TMPDIR:-/tmp}/pycom-cluster-bench.XXXXXX")"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bench() { "$bin/pycom-bench" --quiet --duration "$DURATION" "$@"; }

echo "== single node (durable)"
single_port=$(free_port)
PYCOMD_PUBSUB__ENABLED=false "$bin/pycomd" --listen "tcp://127.0.0.1:$single_port" --data-dir "$work/single" --log-level warn &
pids+=($!)
until "$bin/pycomctl" --nameserver "tcp://127.0.0.1:$single_port" stat >/dev/null 2>&1; do sleep 0.05; done
single="tcp://127.0.0.1:$single_port"
echo "-- register, $CLIENTS clients"; bench --nameserver "$single" --op register --clients "$CLIENTS" --no-baseline
echo "-- locate among 10,000, 4 x 64"; bench --nameserver "$single" --op locate --preload 10000 --clients 4 --in-flight 64

echo "== 3-node cluster (durable)"
declare -A client peer pid
members=""
for i in 1 2 3; do
  client[$i]=$(free_port); peer[$i]=$(free_port)
  members+="$i = { peer = \"127.0.0.1:${peer[$i]}\", client = \"tcp://127.0.0.1:${client[$i]}\" }"$'\n'
done
start_node() {
  local i=$1
  cat > "$work/node$i.toml" <<TOML
listen = "tcp://127.0.0.1:${client[$i]}"
data_dir = "$work/node$i"
log_level = "warn"
[pubsub]
enabled = false
[cluster]
node_id = $i
peer_listen = "127.0.0.1:${peer[$i]}"
[cluster.members]
$members
TOML
  "$bin/pycomd" --config "$work/node$i.toml" 2>>"$work/node$i.log" &
  pid[$i]=$!
  pids+=($!)
}
for i in 1 2 3; do start_node "$i"; done
leader() {
  for i in 1 2 3; do
    local s
    s=$("$bin/pycomctl" --timeout 300 --nameserver "tcp://127.0.0.1:${client[$i]}" --json stat 2>/dev/null) || continue
    python3 -c 'import json,sys; c=json.loads(sys.argv[1]).get("cluster",{}); l=c.get("leader") or {}; sys.exit(0 if c.get("role")=="leader" and not c.get("cut_off") else 1)' "$s" && { echo "$i"; return 0; }
  done
  return 1
}
until L=$(leader); do sleep 0.05; done
F=$(( L % 3 + 1 ))
echo "leader: node $L; a follower: node $F"
echo "-- register, $CLIENTS clients, to the leader"; bench --nameserver "tcp://127.0.0.1:${client[$L]}" --op register --clients "$CLIENTS" --no-baseline
echo "-- register, $CLIENTS clients, to a follower"; bench --nameserver "tcp://127.0.0.1:${client[$F]}" --op register --clients "$CLIENTS" --no-baseline
echo "-- locate among 10,000, 4 x 64, on the leader"; bench --nameserver "tcp://127.0.0.1:${client[$L]}" --op locate --preload 10000 --clients 4 --in-flight 64
echo "-- locate among 10,000, 4 x 64, on a follower"; bench --nameserver "tcp://127.0.0.1:${client[$F]}" --op locate --preload 10000 --clients 4 --in-flight 64

echo "== failover: the leader killed $KILLS times"
times=()
for k in $(seq 1 "$KILLS"); do
  until L=$(leader); do sleep 0.02; done
  kill -9 "${pid[$L]}"
  t0=$(date +%s%N)
  others=()
  for i in 1 2 3; do [[ $i != "$L" ]] && others+=("tcp://127.0.0.1:${client[$i]}"); done
  ns=$(IFS=,; echo "${others[*]}")
  n=0
  until "$bin/pycomctl" --timeout 1000 --nameserver "$ns" register "/failover/$k" tcp://127.0.0.1:9 bench.failover --ttl 600000 >/dev/null 2>&1; do
    n=$((n + 1))
  done
  t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 ))
  times+=("$ms")
  echo "kill $k: node $L; first acknowledged write after $ms ms ($n refused or unanswered tries)"
  wait "${pid[$L]}" 2>/dev/null || true
  start_node "$L"
  until "$bin/pycomctl" --timeout 300 --nameserver "tcp://127.0.0.1:${client[$L]}" stat >/dev/null 2>&1; do sleep 0.05; done
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "failover over %d kills: median %d ms, max %d ms, min %d ms\n", NR, a[int((NR+1)/2)], a[NR], a[1]}'
