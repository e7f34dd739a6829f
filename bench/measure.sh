#!/usr/bin/env bash
# rollguard measure beside wrk, hey, ab and oha, against nginx serving a small static file
# on loopback: closed loop, 64 kept-alive connections, the same duration each, one run.
# Prints the median req/s per tool and rollguard's ratio to each.
# Usage: bench/measure.sh [SECONDS]   (ROUNDS=N for more rounds; default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh

secs=${1:-10}
conns=64
need_debs nginx:nginx wrk:wrk hey:hey ab:apache2-utils python3:python3
need_oha
cargo build --release --quiet
rg=target/release/rollguard

work=$(mktemp -d)
NGINX_PID=
cleanup() {
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
port=$(free_port)
start_nginx "$port" "$work"
url="http://127.0.0.1:$port/index.html"
echo "target: $url (nginx, one worker per core), $conns connections, ${secs}s each, $(nproc) cores"

# Each tool runs $rounds times, interleaved, and its median counts: runs on a 2-core
# machine shared with the server vary by a few percent.
rounds=${ROUNDS:-3}
declare -A runs
measure_once() {
  case $1 in
    wrk) wrk -t2 -c$conns -d${secs}s "$url" | awk '/^Requests\/sec:/ { print $2 }' ;;
    hey) hey -z ${secs}s -c $conns "$url" | awk '/Requests\/sec:/ { print $2 }' ;;
    ab) ab -k -c $conns -t "$secs" -n 100000000 "$url" 2>/dev/null \
          | awk '/^Requests per second:/ { print $4 }' ;;
    oha) oha -z ${secs}s -c $conns --no-tui --output-format json "$url" 2>/dev/null \
          | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["requestsPerSec"])' ;;
    rollguard)
      $rg measure "$url" --concurrency $conns --connections keepalive --duration ${secs}s \
        --json "$work/rg.json" >/dev/null
      python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["total"]/(r["elapsed_ms"]/1000))' "$work/rg.json" ;;
  esac
}
tools=(wrk ab oha hey rollguard)
for round in $(seq 1 "$rounds"); do
  for tool in "${tools[@]}"; do
    echo "  round $round/$rounds: $tool" >&2
    runs[$tool]+="$(measure_once "$tool") "
  done
done
declare -A rps
for tool in "${tools[@]}"; do
  rps[$tool]=$(echo "${runs[$tool]}" | tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
done

printf '\n%-10s %14s %18s   %s\n' tool "median req/s" "rollguard / tool" "all runs"
for tool in "${tools[@]}"; do
  printf '%-10s %14.0f %18s   %s\n' "$tool" "${rps[$tool]}" \
    "$(ratio "${rps[rollguard]}" "${rps[$tool]}")" "${runs[$tool]}"
done
echo
echo "goal: rollguard >= 1.0x hey and oha, >= 0.7x wrk"
