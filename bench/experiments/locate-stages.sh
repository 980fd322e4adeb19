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
exec bash bench/experiments/locate-alternate.sh "$rounds" echo="$bin" trivial="$bin:EXP_TRIVIAL=1" \
  decode="$bin:EXP_STAGE=1" dispatch="$bin:EXP_STAGE=2" full="$bin:EXP_STAGE=0"
