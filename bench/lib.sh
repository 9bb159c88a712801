# shellcheck shell=bash
# Shared by the bench scripts (sourced after they `cd` to the repo root; not run on its own).

need() { command -v "$1" >/dev/null 2>&1; }

# Installs, from Debian's packages, what provides the commands that are missing:
# `install_missing wrk:wrk nginx:nginx-light` (command:package).
install_missing() {
    local missing=() c
    for c in "$@"; do
        need "${c%%:*}" || missing+=("${c#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# A free loopback TCP port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits up to 5 s for any HTTP answer on 127.0.0.1:$1; returns non-zero if none came.
wait_http() {
    local _
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
        sleep 0.05
    done
    return 1
}

# Sum of utime+stime, in clock ticks, of the given pids (those gone are skipped).
cpu_ticks() {
    local t=0 p
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$t"
}

# The gateway every throughput script measures: one route that requires a scope and forwards
# `sub` as a header. $1 listen port, $2 upstream port, $3 issuer, $4 JWKS file,
# $5 token cache (true|false).
gateway_config() {
    cat <<CONF
listen: 127.0.0.1:$1
shutdown_grace_secs: 1
token_cache: {enabled: $5}
issuers:
  - id: bench
    issuer: $3
    audiences: [orders-api]
    jwks_file: $4
routes:
  - id: orders
    path: /api/orders
    methods: [GET]
    upstream: http://127.0.0.1:$2
    scopes: [orders:read]
    claims_to_headers: {sub: X-User-Id}
CONF
}

# Starts gateway binary $1 with config $2 (written by gateway_config) on CPU ${SERVER_CPU:-1},
# one worker thread, its log next to the config; sets GW_PID (stopped on exit: `started`),
# waits for port $3 and checks that token $4 gets a 200 on the route, so a row that would
# measure refusals fails instead.
start_pinned_gateway() {
    RUST_LOG=warn taskset -c "${SERVER_CPU:-1}" "$1" serve --config "$2" --no-watch --worker-threads 1 2>"${2%.yaml}.log" &
    GW_PID=$!
    started "$GW_PID"
    wait_http "$3" || true
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $4" "http://127.0.0.1:$3/api/orders/1")
    [ "$code" = 200 ] || { echo "tollgate ($2) auth check failed: $code" >&2; exit 1; }
}

# Writes and starts a one-worker nginx named $1 (config, pid and log in $W, pinned to
# $SERVER_CPU, default 1) whose http block holds $2, with $3 worker connections (default
# 4096); waits for its pid file $W/$1.pid.
nginx_conf() {
    cat > "$W/$1.conf" <<CONF
worker_processes 1;
pid $W/$1.pid;
error_log $W/$1.error.log warn;
events { worker_connections ${3:-4096}; }
http {
    access_log off;
    keepalive_requests 10000000;
    $2
}
CONF
    taskset -c "${SERVER_CPU:-1}" nginx -c "$W/$1.conf" -p "$W"
    for _ in $(seq 50); do [ -s "$W/$1.pid" ] && break; sleep 0.05; done
}

# A scratch directory $W for this run, and an exit trap that stops what the run started (every
# nginx by its pid file in $W, and the processes named with `started`) and removes $W.
STARTED=()
scratch_dir() {
    W=$(mktemp -d "/tmp/tollgate-$1.XXXXXX")
    trap stop_started EXIT
}
started() { STARTED+=("$@"); }
stop_started() {
    local p f
    for p in "${STARTED[@]}"; do kill "$p" 2>/dev/null || true; done
    for f in "$W"/*.pid; do
        if [ -s "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; fi
    done
    rm -rf "$W"
}
