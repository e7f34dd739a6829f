#!/usr/bin/env bash
# The lab's Service hop (the kube-proxy-like balancer) under keep-alive load, beside the
# same load straight to one pod, then the default scenario matrix's wall time.
# Usage: bench/lab.sh [SECONDS]   (SKIP_MATRIX=1 to measure only the Service hop)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh

secs=${1:-10}
conns=64
need_debs wrk:wrk curl:curl python3:python3
cargo build --release --quiet
rg=$PWD/target/release/rollguard

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

# One pod on its own, for reference.
pod_port=$(free_port)
$rg demo-app --listen "127.0.0.1:$pod_port" 2>/dev/null &
pids+=($!)
wait_port "$pod_port"

# The lab's Service in front of 3 pods; no rollout during the measurement.
svc_port=$(free_port)
$rg lab --serve "127.0.0.1:$svc_port" --scenario complete --rollouts 1 --interval 1h \
  >/dev/null 2>&1 &
pids+=($!)
wait_port "$svc_port"
# The Service answers once its endpoint table has been filled.
for _ in $(seq 1 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$svc_port/" 2>/dev/null && break
  sleep 0.1
done

wrk_rps() { wrk -t2 -c$conns -d${secs}s "$1" | awk '/^Requests\/sec:/ { print $2 }'; }
echo "wrk -c$conns, ${secs}s each, keep-alive, $(nproc) cores" >&2
direct=$(wrk_rps "http://127.0.0.1:$pod_port/")
hop=$(wrk_rps "http://127.0.0.1:$svc_port/")

printf '\n%-28s %12s\n' path req/s
printf '%-28s %12.0f\n' "straight to one pod" "$direct"
printf '%-28s %12.0f\n' "through the lab's Service" "$hop"
printf '%-28s %12s\n' "Service hop / direct" "$(ratio "$hop" "$direct")"
echo "goal: the Service hop sustains >= 5000 req/s"

if [ -z "${SKIP_MATRIX:-}" ]; then
  echo >&2
  echo "running the default matrix (rollguard lab)..." >&2
  start=$(date +%s.%N)
  $rg lab >"$work/matrix.txt" 2>/dev/null
  end=$(date +%s.%N)
  cat "$work/matrix.txt"
  awk -v s="$start" -v e="$end" 'BEGIN { printf "\ndefault matrix wall time: %.0f s (goal: under 180 s)\n", e - s }'
fi
