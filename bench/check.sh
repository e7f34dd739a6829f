#!/usr/bin/env bash
# How fast `rollguard check` reads a large set of manifests: 10,000 generated documents
# (Deployments with and without probes and preStop hooks, some under the shim, some with a
# shell entrypoint, Services, PodDisruptionBudgets, HPAs, and ConfigMaps as kinds rollguard
# skips) in 90 files of 100 documents and one stream of 1,000, checked as a directory and
# as one stream on stdin. Prints the best wall time of the rounds and documents per second.
# Usage: bench/check.sh   (ROUNDS=N, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh

rounds=${ROUNDS:-3}
files=90
per_file=100
stream_docs=1000
total=$((files * per_file + stream_docs))
need_debs python3:python3
cargo build --release --quiet
rg=$PWD/target/release/rollguard

work=$(mktemp -d)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
dir=$work/manifests
mkdir "$dir"

# Each file starts with `---`, so that the files concatenated are still one valid stream.
python3 - "$dir" "$files" "$per_file" "$stream_docs" <<'PY'
import random, sys

out, files, per_file, stream_docs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(42)

def deployment(ns, name, variant):
    replicas = 1 if variant == "single" else rnd.choice([2, 3, 4, 6])
    strategy = ("    type: Recreate\n" if variant == "recreate" else
                "    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 0\n")
    min_ready = "" if variant in ("naive", "no-min-ready") else "  minReadySeconds: 5\n"
    command, ports, probes, prestop = "", "", "", ""
    if variant == "shim":
        command = ('          command: ["/rollguard", "shim", "--listen", "8080", "--upstream", "127.0.0.1:8081",\n'
                   '                    "--health-listen", "8082", "--drain-delay", "5s", "--", "/app/server"]\n')
        ports = ("          ports:\n            - name: http\n              containerPort: 8080\n"
                 "            - name: health\n              containerPort: 8082\n")
        probes = ("          readinessProbe:\n            httpGet:\n              path: /ready\n              port: health\n"
                  "            periodSeconds: 1\n            failureThreshold: 2\n"
                  "          livenessProbe:\n            httpGet:\n              path: /live\n              port: health\n")
    else:
        if variant == "shell":
            command = '          command: ["/bin/sh", "-c", "./migrate && ./server"]\n'
        ports = "          ports:\n            - name: http\n              containerPort: 8080\n"
        if variant != "naive":
            probes = ("          readinessProbe:\n            httpGet:\n              path: /ready\n              port: http\n"
                      "            periodSeconds: 2\n")
            if variant == "same-probes":
                probes += probes.replace("readinessProbe", "livenessProbe")
            else:
                probes += ("          livenessProbe:\n            httpGet:\n              path: /live\n              port: http\n"
                           "            periodSeconds: 10\n")
        if variant not in ("naive", "no-prestop"):
            seconds = 25 if variant == "long-prestop" else 5
            prestop = f"          lifecycle:\n            preStop:\n              sleep:\n                seconds: {seconds}\n"
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
  labels:
    app: {name}
spec:
  replicas: {replicas}
{min_ready}  strategy:
{strategy}  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      terminationGracePeriodSeconds: 30
      containers:
        - name: {name}
          image: registry.example.com/{name}:1.{rnd.randrange(20)}.{rnd.randrange(10)}
{command}{ports}{probes}{prestop}          env:
            - name: LOG_LEVEL
              value: info
          resources:
            requests:
              cpu: 100m
              memory: 128Mi
"""

def service(ns, name):
    return f"""apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
spec:
  selector:
    app: {name}
  ports:
    - name: http
      port: 80
      targetPort: http
"""

def pdb(ns, name):
    budget = rnd.choice(["maxUnavailable: 1", "maxUnavailable: 1", "minAvailable: 100%"])
    return f"""apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {name}
  namespace: {ns}
spec:
  {budget}
  selector:
    matchLabels:
      app: {name}
"""

def hpa(ns, name):
    return f"""apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {name}
  namespace: {ns}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {name}
  minReplicas: {rnd.choice([1, 2, 3])}
  maxReplicas: 10
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: 70
"""

def configmap(ns, name):
    lines = "".join(f"  key{i}: value-{rnd.randrange(10**6)}\n" for i in range(5))
    return f"""apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}-config
  namespace: {ns}
data:
{lines}"""

VARIANTS = ["good", "good", "good", "shim", "naive", "no-prestop", "long-prestop",
            "same-probes", "shell", "recreate", "single", "no-min-ready"]

def documents(ns, count):
    """An app at a time: a Deployment, its Service, often a PDB and a ConfigMap, sometimes an HPA."""
    docs, n = [], 0
    while len(docs) < count:
        name = f"app{n:03d}"
        n += 1
        docs.append(deployment(ns, name, rnd.choice(VARIANTS)))
        docs.append(service(ns, name))
        if rnd.random() < 0.7:
            docs.append(pdb(ns, name))
        if rnd.random() < 0.3:
            docs.append(hpa(ns, name))
        if rnd.random() < 0.6:
            docs.append(configmap(ns, name))
    return docs[:count]

def write(path, docs):
    with open(path, "w") as f:
        for d in docs:
            f.write("---\n")
            f.write(d)

for i in range(files):
    write(f"{out}/team-{i:02d}.yaml", documents(f"team-{i:02d}", per_file))
write(f"{out}/stream.yaml", documents("stream", stream_docs))
PY

echo "$total documents in $((files + 1)) files ($(du -sh "$dir" | cut -f1)), $rounds rounds, $(nproc) cores" >&2

# Sanity run: exit 0 or 1 (findings are expected), and every document read.
status=0
"$rg" check "$dir" --format json >"$work/out.json" 2>"$work/stderr" || status=$?
if [ "$status" -gt 1 ]; then
  echo "rollguard check $dir failed with exit code $status" >&2
  head -n 20 "$work/stderr" >&2
  exit 1
fi
python3 - "$work/out.json" "$total" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
s = report["summary"]
print(f"summary: {s['files']} files, {s['documents']} documents, {s['objects']} objects, "
      f"{s['skipped']} skipped; {len(report['findings'])} findings "
      f"({s['errors']} errors, {s['warnings']} warnings, {s['infos']} infos)")
if s["documents"] != int(sys.argv[2]):
    print(f"warning: expected {sys.argv[2]} documents", file=sys.stderr)
PY

# Runs a command once; prints its wall time in seconds. Exit codes 0 and 1 are success.
time_once() {
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>"$work/stderr" || rc=$?
  t1=$(date +%s.%N)
  if [ "$rc" -gt 1 ]; then
    echo "$* failed with exit code $rc" >&2
    head -n 20 "$work/stderr" >&2
    return 1
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}
check_dir() { "$rg" check "$dir" --format json; }
check_stdin() { cat "$dir"/*.yaml | "$rg" check - --format json; }

# Warm the page cache once, so that the first round does not pay for the disk.
cat "$dir"/*.yaml >/dev/null

declare -A runs
forms=(dir stdin)
for round in $(seq 1 "$rounds"); do
  for form in "${forms[@]}"; do
    echo "  round $round/$rounds: $form" >&2
    t=$(time_once "check_$form")
    runs[$form]+="$t "
  done
done

best() { tr ' ' '\n' | sed '/^$/d' | sort -g | head -n 1; }
echo
printf '%-44s %8s %12s   %s\n' form "best s" "docs/s" "all runs (s)"
declare -A label
label[dir]="rollguard check DIR --format json"
label[stdin]="cat FILES | rollguard check - --format json"
for form in "${forms[@]}"; do
  b=$(echo "${runs[$form]}" | best)
  rate=$(awk -v n="$total" -v t="$b" 'BEGIN { if (t > 0) printf "%.0f", n / t; else print "n/a" }')
  verdict=$(awk -v t="$b" 'BEGIN { print t < 2 ? "met" : "missed" }')
  printf '%-44s %8.3f %12s   %s  goal < 2 s: %s\n' "${label[$form]}" "$b" "$rate" \
    "$(echo "${runs[$form]}" | sed 's/ $//')" "$verdict"
done
