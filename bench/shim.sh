#!/usr/bin/env bash
# The shim's proxy hop beside haproxy as a sidecar: wrk with keep-alive against one demo-app
# directly, through `rollguard shim` (which runs that app as its child) and through haproxy
# in front of the same app, interleaved, in one run. Prints the median req/s and p99 per
# target, what each hop adds over direct, and the shim's ratios to haproxy.
#
# Layouts (LAYOUT=...):
#   pod     (default) the pod and its client on separate cores, as in a cluster: the app and
#           the proxy share CPU 1, as a sidecar shares its pod's CPU limit; wrk, one thread,
#           runs alone on CPU 0, so its own scheduling stays out of the measurement.
#   shared  everything floats over every core: wrk -t2, the proxy and the app compete, and a
#           second haproxy with its default thread count runs for reference.
# Usage: bench/shim.sh [SECONDS]   (ROUNDS=N, default 5; LAYOUT=pod|shared|both)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh

secs=${1:-10}
conns=64
rounds=${ROUNDS:-5}
layout=${LAYOUT:-pod}
case $layout in
  pod | shared) ;;
  both)
    LAYOUT=pod bench/shim.sh "$secs"
    echo
    exec env LAYOUT=shared bench/shim.sh "$secs"
    ;;
  *)
    echo "LAYOUT must be pod, shared or both, not '$layout'" >&2
    exit 2
    ;;
esac
if [ "$layout" = pod ] && [ "$(nproc)" -lt 2 ]; then
  echo "the pod layout needs 2 cores, this machine has $(nproc): running the shared layout" >&2
  layout=shared
fi
need_debs wrk:wrk haproxy:haproxy curl:curl python3:python3 taskset:util-linux
cargo build --release --quiet
rg=$PWD/target/release/rollguard
if [ "$layout" = pod ]; then
  pod=(taskset -c 1)
  client=(taskset -c 0)
  wrk_threads=1
else
  pod=()
  client=()
  wrk_threads=2
fi

work=$(mktemp -d)
pids=()
cleanup() {
  # Newest first: the haproxys, then the shim (SIGTERM with --drain-delay 0 drains at once
  # and stops its app). A killed process's wait status is non-zero: without set +e the first
  # one would end the trap and leave the rest running.
  set +e
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null && wait "${pids[i]}" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT

# The shim, with the demo app as its child: "direct" and both haproxys use that same app.
app_port=$(free_port)
shim_port=$(free_port)
"${pod[@]}" "$rg" shim --listen "127.0.0.1:$shim_port" --upstream "127.0.0.1:$app_port" --drain-delay 0 \
  -- "$rg" demo-app --listen "127.0.0.1:$app_port" >"$work/shim.log" 2>&1 &
pids+=($!)
shim_pid=$!
wait_port "$app_port"
wait_port "$shim_port"

# haproxy as a sidecar: one thread (a sidecar gets one core, as the shim's default
# --threads 1), kept-alive connections on both sides, and the headers the shim adds
# (X-Forwarded-For appended, X-Forwarded-Proto when absent), so both do the same work.
# maxconn stays below the open-file limit, or haproxy refuses to start.
start_haproxy() {
  local port=$1 threads=$2 cfg="$work/haproxy-$1.cfg"
  {
    echo "global"
    echo "  maxconn 9000"
    [ "$threads" = auto ] || echo "  nbthread $threads"
    cat <<CONF
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  option forwardfor
  http-reuse always
frontend sidecar
  bind 127.0.0.1:$port
  http-request set-header X-Forwarded-Proto http unless { req.hdr(x-forwarded-proto) -m found }
  default_backend app
backend app
  server app 127.0.0.1:$app_port
CONF
  } >"$cfg"
  "${pod[@]}" haproxy -db -f "$cfg" >"$work/haproxy-$port.log" 2>&1 &
  pids+=($!)
  HAPROXY_PID=$!
  wait_port "$port"
}
ha1_port=$(free_port)
start_haproxy "$ha1_port" 1
targets=(direct shim haproxy)
declare -A url label proc
proc[shim]=$shim_pid
proc[haproxy]=$HAPROXY_PID
url[direct]="http://127.0.0.1:$app_port/"
url[shim]="http://127.0.0.1:$shim_port/"
url[haproxy]="http://127.0.0.1:$ha1_port/"
label[direct]="direct (demo-app)"
label[shim]="rollguard shim"
label[haproxy]="haproxy, nbthread 1"
# A pod limited to one core gives haproxy's default thread count one thread too.
if [ "$layout" = shared ]; then
  ha_mt_port=$(free_port)
  start_haproxy "$ha_mt_port" auto
  targets+=(haproxy_mt)
  url[haproxy_mt]="http://127.0.0.1:$ha_mt_port/"
  label[haproxy_mt]="haproxy, default threads"
  proc[haproxy_mt]=$HAPROXY_PID
fi

for t in "${targets[@]}"; do
  if ! curl -sf -o /dev/null "${url[$t]}"; then
    echo "GET ${url[$t]} (${label[$t]}) failed" >&2
    tail -n 20 "$work"/*.log >&2
    exit 1
  fi
done

# One wrk run: prints "req/s p99_ms errors requests", errors being socket errors plus
# non-2xx/3xx answers.
wrk_once() {
  "${client[@]}" wrk -t$wrk_threads -c$conns -d${secs}s --latency "$1" | awk '
    / requests in / { n = $1 }
    /^Requests\/sec:/ { rps = $2 }
    $1 == "99%" {
      v = $2 + 0; u = $2; sub(/^[0-9.]+/, "", u)
      p99 = u == "us" ? v / 1000 : u == "ms" ? v : u == "s" ? v * 1000 : u == "m" ? v * 60000 : -1
    }
    /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { err += $5 }
    END { printf "%s %s %d %d\n", rps, p99, err, n }'
}
# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

if [ "$layout" = pod ]; then
  where="layout pod: wrk on CPU 0, the app and the proxy on CPU 1"
else
  where="layout shared: wrk, the proxy and the app over all $(nproc) cores"
fi
echo "wrk -t$wrk_threads -c$conns --latency, keep-alive, ${secs}s each, $rounds rounds; $where" >&2
# A short warm-up per target, so that pooled upstream connections exist before measuring.
for t in "${targets[@]}"; do "${client[@]}" wrk -t$wrk_threads -c$conns -d1s "${url[$t]}" >/dev/null; done

declare -A rps_runs p99_runs errors ticks reqs
for t in "${targets[@]}"; do errors[$t]=0 ticks[$t]=0 reqs[$t]=0; done
for round in $(seq 1 "$rounds"); do
  for t in "${targets[@]}"; do
    echo "  round $round/$rounds: ${label[$t]}" >&2
    before=$([ -n "${proc[$t]:-}" ] && cpu_ticks "${proc[$t]}" || echo 0)
    read -r r p e n < <(wrk_once "${url[$t]}")
    after=$([ -n "${proc[$t]:-}" ] && cpu_ticks "${proc[$t]}" || echo 0)
    ticks[$t]=$((ticks[$t] + after - before))
    reqs[$t]=$((reqs[$t] + n))
    rps_runs[$t]+="$r "
    p99_runs[$t]+="$p "
    errors[$t]=$((errors[$t] + e))
  done
done

declare -A rps p99 added
for t in "${targets[@]}"; do
  rps[$t]=$(echo "${rps_runs[$t]}" | median)
  p99[$t]=$(echo "${p99_runs[$t]}" | median)
  added[$t]=$(awk -v a="${p99[$t]}" -v b="${p99[direct]}" 'BEGIN { printf "%.2f", a - b }')
done

printf '\n%-26s %10s %9s %16s %14s %7s %17s   %s\n' target "req/s" "p99 ms" "req/s vs direct" \
  "added p99 ms" errors "proxy CPU us/req" "all runs: req/s; p99 ms"
for t in "${targets[@]}"; do
  printf '%-26s %10.0f %9.2f %16s %14s %7s %17s   %s; %s\n' "${label[$t]}" "${rps[$t]}" "${p99[$t]}" \
    "$(ratio "${rps[$t]}" "${rps[direct]}")" \
    "$([ "$t" = direct ] && echo - || printf '%+.2f' "${added[$t]}")" "${errors[$t]}" \
    "$([ "$t" = direct ] && echo - || awk -v c="${ticks[$t]}" -v hz="$hz" -v n="${reqs[$t]}" \
        'BEGIN { if (n > 0) printf "%.1f", c / hz * 1e6 / n; else print "n/a" }')" \
    "$(printf '%.0f ' ${rps_runs[$t]} | sed 's/ $//')" "$(printf '%.2f ' ${p99_runs[$t]} | sed 's/ $//')"
done
# verdict A OP B: "met" or "missed".
verdict() { awk -v a="$1" -v b="$3" -v op="$2" 'BEGIN { ok = op == ">=" ? a >= b : a <= b; print ok ? "met" : "missed" }'; }
echo
printf 'shim req/s / haproxy req/s:          %5s   goal >= 1.0: %s\n' \
  "$(ratio "${rps[shim]}" "${rps[haproxy]}")" "$(verdict "${rps[shim]}" '>=' "${rps[haproxy]}")"
# A ratio of added latencies means little once haproxy adds none (a proxy in between can
# even lower p99 below direct's): the verdict compares the added milliseconds themselves.
printf 'shim added p99 / haproxy added p99:  %5s   goal <= 1.0: %s (shim %+.2f ms, haproxy %+.2f ms)\n' \
  "$(ratio "${added[shim]}" "${added[haproxy]}")" "$(verdict "${added[shim]}" '<=' "${added[haproxy]}")" \
  "${added[shim]}" "${added[haproxy]}"
printf 'shim p99 / haproxy p99:              %5s\n' "$(ratio "${p99[shim]}" "${p99[haproxy]}")"
echo "($where; haproxy = nbthread 1, the sidecar setup; errors = wrk socket errors + non-2xx/3xx answers;"
echo " proxy CPU = the proxy process's user + system CPU time over all its rounds / requests served)"

# Anything the shim logged above info level is worth a look.
if grep -E 'WARN|ERROR' "$work/shim.log" >/dev/null; then
  echo >&2
  echo "the shim logged warnings or errors:" >&2
  grep -E 'WARN|ERROR' "$work/shim.log" | head -n 20 >&2
fi
