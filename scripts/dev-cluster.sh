#!/usr/bin/env bash
# A local pycomd cluster for trying it: N nodes (default 3) on 127.0.0.1,
# requests on ports 2112, 2212, 2312, ..., Raft on 2116, 2216, ...; data in
# a temporary directory removed at exit. Ctrl-C stops them all.
#
#   bash scripts/dev-cluster.sh [N]
#   PYCOM_NAMESERVER=tcp://127.0.0.1:2112,tcp://127.0.0.1:2212,tcp://127.0.0.1:2312 target/release/pycomctl cluster status
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-3}"
pycomd="${PYCOMD:-target/release/pycomd}"
[ -x "$pycomd" ] || cargo build --release -p pycomd -p pycomctl
dir="$(mktemp -d -t pycomd-cluster.XXXXXX)"
members=""
for i in $(seq 1 "$n"); do
  members+="$i = { peer = \"127.0.0.1:2${i}16\", client = \"tcp://127.0.0.1:2${i}12\" }"$'\n'
done
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT INT TERM
endpoints=()
for i in $(seq 1 "$n"); do
  cat > "$dir/node$i.toml" <<TOML
listen = "tcp://127.0.0.1:2${i}12"
data_dir = "$dir/data$i"
[pubsub]
xsub = "tcp://127.0.0.1:2${i}13"
xpub = "tcp://127.0.0.1:2${i}14"
[cluster]
node_id = $i
peer_listen = "127.0.0.1:2${i}16"
[cluster.members]
$members
TOML
  "$pycomd" --config "$dir/node$i.toml" 2> >(sed "s/^/node $i: /" >&2) &
  pids+=($!)
  endpoints+=("tcp://127.0.0.1:2${i}12")
done
joined="$(IFS=,; echo "${endpoints[*]}")"
echo "== $n pycomd nodes; data in $dir"
echo "export PYCOM_NAMESERVER=$joined"
wait
