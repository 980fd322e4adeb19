#!/usr/bin/env bash
# Reproduces every figure in BENCHMARKS.md: starts pycomd (and PyCOM 0.3.2's
# nameserver) on free local ports with temporary data dirs, runs pycom-bench
# against them, measures memory and restart time. Takes a few minutes.
#
#   bash bench/run.sh            # full run, DURATION=5 s per measurement
#   DURATION=2 REPEAT=1 bash bench/run.sh # quicker
#
# Blocks, each switchable (BLOCKS lists those to run, in this order):
#   main      stat, locate, scaling, register (64), renew, invoke
#   durable   fdatasync of the data dir's filesystem, durable register at
#             $REGISTER_CLIENTS clients, implied group-commit factor
#   restart   RSS, preload, stop and restart time at each of $RESTART_SIZES records
#   bounded   locate while another client loops lists (whole, pages) among
#             100,000 services; paging through $RESTART_SIZES records with pycomctl
#   pubsub    pycomd's forwarder with pycom-client Publisher/Subscriber against a
#             raw zmq_proxy with raw PUB/SUB (throughput, latency, gaps) at
#             $PUBSUB_SIZES B bodies and 1 -> $PUBSUB_SUBSCRIBERS subscribers; the
#             same forwarder with raw peers; registry events while
#             $EVENT_SERVICES services register at once (durable); the
#             last-value cache's memory at its bounds ($LVC_CONFIGS)
#   auth      access control on: locate with a token against locate with it off;
#             a burst of $LOGIN_BURST (50) logins at the default argon2id cost
#             while a client locates (its p99), then logins back to back
#   workflow  a 3-step workflow (three durable log entries a run) against the
#             same three calls made directly by the client, one client (latency)
#             and $WORKFLOW_CLIENTS (throughput of concurrent runs), with the
#             data dir on tmpfs (/dev/shm: the engine alone) and on the disk,
#             each beside that filesystem's fdatasync latency
#   peers     PyCOM 0.3.2's nameserver (needs the venv tests/run.sh makes)
#   python    the Python client (python/): invoke on the Rust echo service and
#             pub/sub through the forwarder, against raw pyzmq REQ and XPUB/SUB
#             in the same run (bench/python.py; needs target/py-client, which
#             tests/run.sh makes); PY_DURATION (1 s) x PY_REPEAT (15) rounds
#   scrape    locate throughput with a scrape of /metrics every second against
#             none: $SCRAPE_RUNS (5) runs of each, alternating, and the medians
#
#   BLOCKS=pubsub DURATION=2 REPEAT=3 bash bench/run.sh
#   BLOCKS=durable DURATION=2 REPEAT=1 bash bench/run.sh
#   BLOCKS=restart RESTART_SIZES=100000 bash bench/run.sh
#   DATA_ROOT=/var/tmp bash bench/run.sh     # data dirs (and the fdatasync file) on /var/tmp's filesystem
#
# Other knobs: REGISTER_CLIENTS ("1 16 64"), RESTART_SIZES ("100000 1000000"),
# PRELOAD_CLIENTS (4), PRELOAD_IN_FLIGHT (256), BUILD=0 (use the binaries in
# target/release as they are), PYCOMD / PYCOMCTL (other binaries to measure);
# pub-sub: PUBSUB_HWM (10000, pycomd's and every bench socket's high-water
# mark), PUBSUB_SIZES ("16,128,1024"), PUBSUB_SUBSCRIBERS ("1,4"), PUBSUB_RATE
# (1000 messages/s for latency), EVENT_SERVICES (10000), EVENT_CLIENTS (100),
# EVENT_IN_FLIGHT (100), LVC_CONFIGS ("max_topics:max_bytes:published:body_bytes ...").
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-5}"
BLOCKS="${BLOCKS:-main durable restart bounded pubsub auth scrape workflow peers python}"
WORKFLOW_CLIENTS="${WORKFLOW_CLIENTS:-16}"
SCRAPE_RUNS="${SCRAPE_RUNS:-5}"
REGISTER_CLIENTS="${REGISTER_CLIENTS:-1 16 64}"
RESTART_SIZES="${RESTART_SIZES:-100000 1000000}"
PRELOAD_CLIENTS="${PRELOAD_CLIENTS:-4}"
PRELOAD_IN_FLIGHT="${PRELOAD_IN_FLIGHT:-256}"
PUBSUB_HWM="${PUBSUB_HWM:-10000}"
PUBSUB_SIZES="${PUBSUB_SIZES:-16,128,1024}"
PUBSUB_SUBSCRIBERS="${PUBSUB_SUBSCRIBERS:-1,4}"
PUBSUB_RATE="${PUBSUB_RATE:-1000}"
EVENT_SERVICES="${EVENT_SERVICES:-10000}"
EVENT_CLIENTS="${EVENT_CLIENTS:-100}"
EVENT_IN_FLIGHT="${EVENT_IN_FLIGHT:-100}"
LOGIN_BURST="${LOGIN_BURST:-50}"
# Default bounds, full at 10,000 topics; the byte bound (64 MiB) reached
# first; the topic bound with small publications.
LVC_CONFIGS="${LVC_CONFIGS:-10000:67108864:20000:1024 1000000:67108864:100000:1024 100000:67108864:100000:16}"
if [[ "${BUILD:-1}" != 0 ]]; then cargo build --release --workspace --locked -q; fi
bin="${CARGO_TARGET_DIR:-target}/release"
PYCOMD="${PYCOMD:-$bin/pycomd}"
PYCOMCTL="${PYCOMCTL:-$bin/pycomctl}"
work="$(mktemp -d "${DATA_ROOT:-${TMPDIR:-/tmp}}/pycom-bench.XXXXXX")"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
block() { [[ " $BLOCKS " == *" $1 "* ]]; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() { # endpoint -> prints ms until stat answers (fails if pycomd exits first)
  local start end; start=$(date +%s%N)
  until "$PYCOMCTL" --nameserver "$1" --timeout 50 stat >/dev/null 2>&1; do
    if [[ -n "${pycomd:-}" ]] && ! kill -0 "$pycomd" 2>/dev/null; then echo "pycomd exited before serving" >&2; return 1; fi
    sleep 0.005
  done
  end=$(date +%s%N); echo $(( (end - start) / 1000000 ))
}
rss_mb() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
start_pycomd() { # data dir [endpoint] -> sets $ns and $pycomd (a new free port unless given)
  ns="${2:-tcp://127.0.0.1:$(free_port)}"
  # The pub-sub forwarder on free ports too, never the host's 2013/2014.
  PYCOMD_PUBSUB__XSUB="tcp://127.0.0.1:$(free_port)" PYCOMD_PUBSUB__XPUB="tcp://127.0.0.1:$(free_port)" \
    "$PYCOMD" --listen "$ns" --data-dir "$1" --log-level warn & pids+=($!); pycomd=$!
}
stop_pycomd() { # SIGTERM, wait; sets $stopped_ms (until the process has exited)
  local start end; start=$(date +%s%N)
  kill -TERM "$pycomd"; wait "$pycomd" || true
  end=$(date +%s%N); stopped_ms=$(( (end - start) / 1000000 )); pycomd=
}
store_counters() { # -> "writes flushes" from pycomd's stat ("- -" if it has no such counters)
  "$PYCOMCTL" --nameserver "$ns" --json stat | python3 -c 'import json, sys
s = json.load(sys.stdin).get("store") or {}
print(s.get("writes", "-"), s.get("flushes", "-"))'
}
thousands() { python3 -c "print(f'{int(\"$1\"):,}')"; }
REPEAT="${REPEAT:-3}"
# Each row: the median of $REPEAT runs, each followed by its raw-echo baseline.
bench() { "$bin/pycom-bench" --quiet --duration "$DURATION" --repeat "$REPEAT" "$@" | tail -n +2; }

echo "== machine"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

header() { printf '%-10s %7s %9s %10s %8s %8s %8s %7s | %10s %8s | %7s %7s\n' op clients in-flight req/s "p50 us" "p99 us" "p99.9 us" errors "echo req/s" "echo p50" "x req/s" "x p50"; }

if block main; then
  start_pycomd "$work/data"
  wait_ready "$ns" >/dev/null
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

  stop_pycomd
fi

if block durable; then
  # (a) the disk's own fdatasync, on the data dir's filesystem (a sibling
  # dir, so pycomd's dir holds only its own files); (b) durable register at
  # each client count, with its raw-echo baseline; (c) the implied
  # group-commit factor, against pycomd's own writes/flushes counters.
  echo "== durable register: fdatasync on the data dir's filesystem, then register at $REGISTER_CLIENTS clients (1 in flight each)"
  mkdir -p "$work/durable" "$work/fsync-probe"
  echo "data dir $work/durable on: $(findmnt -n -o SOURCE,FSTYPE,OPTIONS -T "$work/durable" || df -T "$work/durable" | tail -1)"
  if [[ $(stat -c %d "$work/fsync-probe") != $(stat -c %d "$work/durable") ]]; then
    echo "warning: the fdatasync probe dir is not on the data dir's filesystem" >&2
  fi
  start_pycomd "$work/durable"
  wait_ready "$ns" >/dev/null
  header
  sync_out=$(bench --op fdatasync --dir "$work/fsync-probe")
  echo "$sync_out"
  sync_row=$(awk '$1 == "fdatasync"' <<<"$sync_out")
  sync_rate=$(awk '{print $4}' <<<"$sync_row"); sync_p50=$(awk '{print $5}' <<<"$sync_row")
  rows=()
  for n in $REGISTER_CLIENTS; do
    read -r w0 f0 < <(store_counters)
    line=$(bench --nameserver "$ns" --op register --clients "$n" --in-flight 1)
    read -r w1 f1 < <(store_counters)
    echo "$line"
    rows+=("$n $(awk '{print $4}' <<<"$line") $w0 $f0 $w1 $f1")
  done
  echo "group commit: acknowledged registers per fdatasync (fdatasync p50 $sync_p50 us, $sync_rate syncs/s one at a time)"
  printf '%7s %10s %16s %17s %14s\n' clients "reg/s" "per sync @p50" "per sync @mean" "writes/flush"
  for r in "${rows[@]}"; do
    awk -v p50="$sync_p50" -v srate="$sync_rate" '{
      n = $1; rps = $2; w0 = $3; f0 = $4; w1 = $5; f1 = $6
      measured = (w0 ~ /^[0-9]+$/ && f1 ~ /^[0-9]+$/ && f1 > f0) ? sprintf("%.1f", (w1 - w0) / (f1 - f0)) : "-"
      printf "%7s %10.0f %16.1f %17.1f %14s\n", n, rps, rps * p50 / 1e6, (srate > 0 ? rps / srate : 0), measured
    }' <<<"$r"
  done
  echo "(per sync @p50 = reg/s x fdatasync p50 in s: registers acknowledged per fdatasync if every sync took the p50;"
  echo " @mean: the same with the mean sync time, reg/s / syncs/s; writes/flush: pycomd's own store counters over the register runs)"
  stop_pycomd
fi

if block restart; then
  for size in $RESTART_SIZES; do
    label=$(thousands "$size")
    echo "== memory and restart with $label leased services"
    dir="$work/restart-$size"
    # Room for the preload and pycomd's own record (default max_records is 1,000,000).
    export PYCOMD_MAX_RECORDS=$(( size + 1000 ))
    start_pycomd "$dir"
    wait_ready "$ns" >/dev/null
    echo "RSS empty: $(rss_mb "$pycomd") MB"
    "$bin/pycom-bench" --quiet --nameserver "$ns" --preload-only --preload "$size" \
      --preload-clients "$PRELOAD_CLIENTS" --preload-in-flight "$PRELOAD_IN_FLIGHT"
    echo "RSS with $label services: $(rss_mb "$pycomd") MB"
    stop_pycomd
    echo "stopped (SIGTERM until exit) in $stopped_ms ms; data dir $(du -sh "$dir" | cut -f1)"
    start_pycomd "$dir" "$ns"
    ms=$(wait_ready "$ns")
    echo "restart with $label records: serving after $ms ms (pycomctl polling every 5 ms)"
    echo "RSS after restart: $(rss_mb "$pycomd") MB; services: $("$PYCOMCTL" --nameserver "$ns" --json stat | python3 -c 'import json, sys; print(json.load(sys.stdin)["services"])')"
    stop_pycomd
    rm -rf "$dir"
  done
  unset PYCOMD_MAX_RECORDS
fi

if block bounded; then
  echo "== locate among 100,000 services while another client loops list_services"
  export PYCOMD_MAX_RECORDS=2000000
  start_pycomd "$work/bounded"
  wait_ready "$ns" >/dev/null
  header
  bench --nameserver "$ns" --op locate --preload 100000 --clients 4 --in-flight 64
  bench --nameserver "$ns" --op locate --preload 100000 --clients 4 --in-flight 64 --background-lists whole
  bench --nameserver "$ns" --op locate --preload 100000 --clients 4 --in-flight 64 --background-lists pages
  bench --nameserver "$ns" --op locate --preload 100000 --background-lists pages
  stop_pycomd
  for size in $RESTART_SIZES; do
    label=$(thousands "$size")
    export PYCOMD_MAX_RECORDS=$(( size + 1000 ))
    start_pycomd "$work/pages-$size"
    wait_ready "$ns" >/dev/null
    "$bin/pycom-bench" --quiet --nameserver "$ns" --preload-only --preload "$size" >/dev/null
    start=$(date +%s%N)
    n=$("$PYCOMCTL" --nameserver "$ns" --timeout 30000 --output json list-services | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
    end=$(date +%s%N)
    echo "paged through $label records ($n listed, pages of 10,000) in $(( (end - start) / 1000000 )) ms with pycomctl list-services"
    stop_pycomd
  done
  unset PYCOMD_MAX_RECORDS
fi

if block pubsub; then
  # Each row: pycomd's forwarder with pycom-client's Publisher and
  # Subscriber, then a raw zmq_proxy (XSUB/XPUB, a child process of
  # pycom-bench) with raw PUB/SUB sending the same frames; every socket at
  # the same high-water mark. Throughput with at most hwm/4 messages in
  # flight (so gaps are losses, not high-water-mark drops); latency at
  # $PUBSUB_RATE messages/s (queues empty).
  export PYCOMD_PUBSUB__HIGH_WATER_MARK="$PUBSUB_HWM"
  psbench() { "$bin/pycom-bench" --quiet --nameserver "$ns" --duration "$DURATION" --repeat "$REPEAT" --hwm "$PUBSUB_HWM" "$@"; }
  start_pycomd "$work/pubsub"
  wait_ready "$ns" >/dev/null
  echo "== pub-sub: pycomd forwarder + pycom-client Publisher/Subscriber vs raw zmq_proxy + raw PUB/SUB"
  psbench --op pubsub --pycomd-pid "$pycomd" --body-bytes "$PUBSUB_SIZES" --subscribers "$PUBSUB_SUBSCRIBERS" --rate "$PUBSUB_RATE"
  echo "== pub-sub: pycomd forwarder + raw PUB/SUB peers (the forwarder's share, without the client library's)"
  psbench --op pubsub --pycomd-pid "$pycomd" --pubsub-peers raw --body-bytes "$PUBSUB_SIZES" --subscribers "$PUBSUB_SUBSCRIBERS" --rate "$PUBSUB_RATE"
  stop_pycomd

  # Durable, as by default: each register is on disk (fdatasync) before
  # its reply and its event.
  echo "== registry events: $EVENT_SERVICES services register at once ($EVENT_CLIENTS clients x $EVENT_IN_FLIGHT in flight, durable)"
  start_pycomd "$work/events"
  wait_ready "$ns" >/dev/null
  psbench --op events --preload "$EVENT_SERVICES" --clients "$EVENT_CLIENTS" --in-flight "$EVENT_IN_FLIGHT"
  stop_pycomd

  echo "== last-value cache at its bounds: pycomd's RSS against the cache's own count (stat cache_bytes)"
  for cfg in $LVC_CONFIGS; do
    IFS=: read -r topics bytes published body <<<"$cfg"
    export PYCOMD_PUBSUB__LVC_MAX_TOPICS="$topics" PYCOMD_PUBSUB__LVC_MAX_BYTES="$bytes"
    start_pycomd "$work/lvc-$topics-$bytes-$body"
    wait_ready "$ns" >/dev/null
    echo -n "lvc_max_topics $(thousands "$topics"), lvc_max_bytes $(thousands "$bytes"): "
    psbench --op lvc --topics "$published" --body-bytes "$body" --pycomd-pid "$pycomd"
    stop_pycomd
  done
  unset PYCOMD_PUBSUB__LVC_MAX_TOPICS PYCOMD_PUBSUB__LVC_MAX_BYTES PYCOMD_PUBSUB__HIGH_WATER_MARK
fi

if block scrape; then
  # The cost of serving /metrics to the request path: locate at 4 x 64 in
  # flight among 10,000 services, without a scraper and with one asking
  # for /metrics every second (bash's /dev/tcp: no process started per
  # scrape to add noise), alternating so that the machine's drift falls on
  # both, then the median of each.
  http="127.0.0.1:$(free_port)"
  PYCOMD_HTTP_LISTEN="$http" start_pycomd "$work/scrape"
  wait_ready "$ns" >/dev/null
  scraper() {
    while :; do
      if exec 3<>"/dev/tcp/${http%:*}/${http#*:}"; then
        printf 'GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$http" >&3
        cat <&3 >/dev/null; exec 3<&-
      fi
      sleep 1
    done
  }
  echo "== locate (10,000 services, 4 x 64 in flight): no scrape against a scrape of /metrics every second, $SCRAPE_RUNS runs each, alternating"
  header
  none=(); scraped=()
  for i in $(seq "$SCRAPE_RUNS"); do
    row=$("$bin/pycom-bench" --quiet --nameserver "$ns" --op locate --preload 10000 --clients 4 --in-flight 64 --duration "$DURATION" --repeat 1 | tail -n +2)
    echo "$row   (no scrape)"; none+=("$(awk '{print $4}' <<<"$row")")
    scraper & scraping=$!
    row=$("$bin/pycom-bench" --quiet --nameserver "$ns" --op locate --preload 10000 --clients 4 --in-flight 64 --duration "$DURATION" --repeat 1 | tail -n +2)
    kill "$scraping"; wait "$scraping" 2>/dev/null || true
    echo "$row   (scrape every 1 s)"; scraped+=("$(awk '{print $4}' <<<"$row")")
  done
  python3 -c 'import statistics, sys
n = len(sys.argv) // 2
a, b = [float(x) for x in sys.argv[1:n + 1]], [float(x) for x in sys.argv[n + 1:]]
ma, mb = statistics.median(a), statistics.median(b)
print(f"locate req/s, median of {n}: no scrape {ma:,.0f}, scrape every 1 s {mb:,.0f} ({(mb / ma - 1) * 100:+.1f}%)")' "${none[@]}" "${scraped[@]}"
  metrics() { exec 3<>"/dev/tcp/${http%:*}/${http#*:}"; printf 'GET /metrics HTTP/1.1\r\n\r\n' >&3; cat <&3; exec 3<&-; }
  metrics >/dev/null
  echo "/metrics: $(metrics | grep -c '^pycom_') pycom_ samples; the server thread's part of a scrape: $(metrics | awk '/^pycom_scrape_server_seconds / { printf "%.1f us", $2 * 1e6 }')"
  stop_pycomd
fi

venv=target/py-peers
if block auth; then
  # Access control on (one user at the default argon2id cost, 64 MiB, made
  # by pycomctl auth passwd; anonymous callers may preload under /bench/):
  # locate carrying a token against locate with access control off, each
  # with its raw echo; then a burst of $LOGIN_BURST logins while a client
  # locates, and logins back to back.
  printf %s bench | "$PYCOMCTL" auth passwd bench --password-stdin > "$work/users"
  printf '[auth]\nenabled = true\nusers_file = "%s"\n\n[auth.roles]\nbench = ["bench"]\n\n[[auth.grant]]\nrole = "bench"\ncall = ["bench.>"]\n\n[[auth.grant]]\nrole = "anonymous"\nregister = ["/bench/"]\n' "$work/users" > "$work/auth.toml"
  echo "== locate (10,000 services): access control off, then on with a token"
  header
  start_pycomd "$work/auth-off"
  wait_ready "$ns" >/dev/null
  off1=$(bench --nameserver "$ns" --op locate --preload 10000 --clients 1 --in-flight 1); echo "$off1"
  off64=$(bench --nameserver "$ns" --op locate --preload 10000 --clients 4 --in-flight 64); echo "$off64"
  stop_pycomd
  PYCOMD_CONFIG="$work/auth.toml" start_pycomd "$work/auth-on"
  wait_ready "$ns" >/dev/null
  on1=$(bench --nameserver "$ns" --op locate --preload 10000 --clients 1 --in-flight 1 --login --user bench --password bench); echo "$on1"
  on64=$(bench --nameserver "$ns" --op locate --preload 10000 --clients 4 --in-flight 64 --login --user bench --password bench); echo "$on64"
  # Second row against the first: each row's ratio to its own raw echo, divided
  # (the machine's speed drifts between rows), then the plain req/s ratio.
  ratio() { python3 -c "import sys; a, b = sys.argv[1].split(), sys.argv[2].split(); print(f'{float(b[12]) / float(a[12]):.2f} (req/s alone {float(b[3]) / float(a[3]):.2f})')" "$1" "$2"; }
  echo "locate with a token / without access control: $(ratio "$off1" "$on1") (1 in flight), $(ratio "$off64" "$on64") (4 x 64 in flight)"
  echo "== invoke, pycom-client echo service: unguarded, then Auth::required with a token (validated with pycomd once, then cached)"
  header
  u1=$(bench --nameserver "$ns" --op invoke --clients 4); echo "$u1"
  g1=$(bench --nameserver "$ns" --op invoke --clients 4 --guarded --login --user bench --password bench); echo "$g1"
  u64=$(bench --nameserver "$ns" --op invoke-raw --clients 4 --in-flight 64); echo "$u64"
  g64=$(bench --nameserver "$ns" --op invoke-raw --clients 4 --in-flight 64 --guarded --login --user bench --password bench); echo "$g64"
  echo "guarded / unguarded: $(ratio "$u1" "$g1") (components, 1 in flight each), $(ratio "$u64" "$g64") (raw, 4 x 64 in flight)"
  echo "== logins at the default argon2id cost: a burst of $LOGIN_BURST while one client locates, then back to back"
  "$bin/pycom-bench" --quiet --nameserver "$ns" --op login --preload 10000 --clients "$LOGIN_BURST" --duration "$DURATION" --user bench --password bench
  stop_pycomd
fi

if block workflow; then
  echo "== workflow: 3 steps (bench.echo.echo) through pycomd against the same 3 calls made directly; medians of $REPEAT alternating runs"
  mkdir -p "$work/workflows.d"
  cat >"$work/workflows.d/bench.json" <<'JSON'
{"service": "/bench/workflow",
 "tasks": {"echo": [{"interface": "bench.echo", "method": "echo"},
                    {"interface": "bench.echo", "method": "echo"},
                    {"interface": "bench.echo", "method": "echo"}]}}
JSON
  for where in tmpfs disk; do
    case $where in
      tmpfs) root="$(mktemp -d /dev/shm/pycom-bench-wf.XXXXXX)" ;;
      disk) root="$work/wf-disk"; mkdir -p "$root" ;;
    esac
    mkdir -p "$root/probe"
    echo "-- data dir on $where: $(findmnt -n -o SOURCE,FSTYPE -T "$root" | head -1 || true)"
    printf '%-10s %7s %9s %10s %8s %8s %8s\n' op clients in-flight "syncs/s" "p50 us" "p99 us" "p99.9 us"
    bench --op fdatasync --dir "$root/probe" | awk '$1 == "fdatasync" {printf "%-10s %7s %9s %10s %8s %8s %8s\n", $1, $2, $3, $4, $5, $6, $7}'
    export PYCOMD_WORKFLOWS_DIR="$work/workflows.d"
    start_pycomd "$root/data"
    unset PYCOMD_WORKFLOWS_DIR
    wait_ready "$ns" >/dev/null
    "$bin/pycom-bench" --quiet --duration "$DURATION" --repeat "$REPEAT" --nameserver "$ns" --op workflow --scaling "1,$WORKFLOW_CLIENTS"
    stop_pycomd
    if [[ $where == tmpfs ]]; then rm -rf "$root"; fi
  done
  echo "(+p50 us: the workflow's p50 minus the direct sequence's; x runs: workflow runs/s over direct sequences/s)"
fi

if ! block peers; then
  :
elif "$venv/bin/python" -c 'import pycom' 2>/dev/null; then
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

# The Python client (python/) against raw pyzmq, same run: needs the venv
# tests/run.sh makes (maturin, pyzmq); the wheel is built and installed there.
pyvenv="${PYCOM_CLIENT_VENV:-$PWD/target/py-client}"
if ! block python; then
  :
elif "$pyvenv/bin/python" -c 'import zmq' 2>/dev/null && [[ -x "$pyvenv/bin/maturin" ]]; then
  if [[ "${BUILD:-1}" != 0 ]]; then
    cargo build --release --locked -q -p pycom-client --examples
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" "$pyvenv/bin/maturin" build --release --locked --quiet \
      -m python/Cargo.toml -o "$work/wheels" >/dev/null
    "$pyvenv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps "$work"/wheels/*.whl
  fi
  start_pycomd "$work/python"
  wait_ready "$ns" >/dev/null
  PYCOM_NAMESERVER="$ns" "$bin/examples/echo_service" >/dev/null 2>&1 & pids+=($!)
  for _ in $(seq 1000); do
    "$PYCOMCTL" --nameserver "$ns" --timeout 200 locate com.example.echo >/dev/null 2>&1 && break
    sleep 0.01
  done
  echo "== Python: pycom_client against raw pyzmq (one thread; rounds alternate; medians of ${PY_REPEAT:-15} rounds of ${PY_DURATION:-1} s)"
  "$pyvenv/bin/python" bench/python.py "$ns" --duration "${PY_DURATION:-1}" --repeat "${PY_REPEAT:-15}"
  stop_pycomd
else
  echo "(no $pyvenv with maturin and pyzmq: run bash tests/run.sh once to make it)"
fi
