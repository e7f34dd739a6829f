# Shared pieces of the bench scripts: installing peers, a static nginx, parsing numbers.
# Sourced, not run.

# Installs the Debian packages given as "command:package" pairs whose command is missing.
need_debs() {
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Installs oha from crates.io if it is missing.
need_oha() {
  command -v oha >/dev/null 2>&1 || export PATH="$HOME/.cargo/bin:$PATH"
  command -v oha >/dev/null 2>&1 || cargo install oha --locked --quiet
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts nginx serving a small static file on 127.0.0.1:$1 from scratch dir $2; sets NGINX_PID.
start_nginx() {
  local port=$1 dir=$2
  mkdir -p "$dir/www"
  printf 'hello from nginx, a small static file for load tests\n' >"$dir/www/index.html"
  chmod -R a+rX "$dir"
  cat >"$dir/nginx.conf" <<CONF
worker_processes auto;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port;
    root $dir/www;
  }
}
CONF
  nginx -c "$dir/nginx.conf" &
  NGINX_PID=$!
  wait_port "$port"
}

# Waits until something accepts connections on 127.0.0.1:$1 (at most 10 s).
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

# ratio A B: A/B with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
