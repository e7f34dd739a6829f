#!/usr/bin/env bash
# rollguard measure beside wrk, hey, ab and oha, against nginx serving a small static file
# on loopback: closed loop, 64 kept-alive connections, the same duration each, one run.
# Prints req/s per tool and rollguard's ratio to each. Usage: bench/measure.sh [SECONDS]
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
echo "target: $url (nginx, 1 worker), $conns connections, ${secs}s each, $(nproc) cores"

declare -A rps
run() { echo "  running $1..." >&2; }

run wrk
rps[wrk]=$(wrk -t2 -c$conns -d${secs}s "$url" | awk '/^Requests\/sec:/ { print $2 }')
run hey
rps[hey]=$(hey -z ${secs}s -c $conns "$url" | awk '/Requests\/sec:/ { print $2 }')
run ab
rps[ab]=$(ab -k -c $conns -t "$secs" -n 100000000 "$url" 2>/dev/null | awk '/^Requests per second:/ { print $4 }')
run oha
rps[oha]=$(oha -z ${secs}s -c $conns --no-tui --output-format json "$url" 2>/dev/null \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["requestsPerSec"])')
run rollguard
$rg measure "$url" --concurrency $conns --connections keepalive --duration ${secs}s \
  --json "$work/rg.json" >/dev/null
rps[rollguard]=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["total"]/(r["elapsed_ms"]/1000))' "$work/rg.json")

printf '\n%-10s %12s %22s\n' tool req/s "rollguard / tool"
for tool in wrk ab oha hey rollguard; do
  printf '%-10s %12.0f %22s\n' "$tool" "${rps[$tool]}" "$(ratio "${rps[rollguard]}" "${rps[$tool]}")"
done
echo
echo "goal: rollguard >= 1.0x hey and oha, >= 0.7x wrk"
