#!/usr/bin/env bash
# A/B of two tollgate binaries on the same request path, for changes that claim (or must not
# cost) speed. Same setup as bench/run.sh: nginx upstream and the gateway on CPU 1, wrk on
# CPU 0, one worker thread, RS256 token, a route with a scope and a claim header.
#
#   A=/tmp/tollgate-before B=target/release/tollgate bash bench/ab.sh
#   ROUNDS=5 DURATION=5 CACHE=false SERVE_ARGS="--worker-threads 1" bash bench/ab.sh
#
# Rounds alternate A and B (ABAB...) so drift on a shared machine hits both; the verdict is
# the median of the per-round B/A ratios of requests/s and of server CPU per request.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

A=${A:?set A=path/to/baseline/tollgate}
B=${B:-target/release/tollgate}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
CONNS=${CONNS:-50}
CACHE=${CACHE:-true}
SERVE_ARGS=${SERVE_ARGS:---worker-threads 1}
LOAD_CPU=${LOAD_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}

# shellcheck source=bench/lib.sh
. bench/lib.sh
install_missing wrk:wrk nginx:nginx-light
TCK=$(getconf CLK_TCK)
W=$(mktemp -d /tmp/tollgate-ab.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$W/up.pid" ] && kill "$(cat "$W/up.pid")" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

UP=$(free_port)
cat > "$W/up.conf" <<EOF
worker_processes 1;
pid $W/up.pid;
error_log $W/up.error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    server { listen 127.0.0.1:$UP; location / { return 200 'ok\n'; } }
}
EOF
taskset -c "$SERVER_CPU" nginx -c "$W/up.conf" -p "$W"
for _ in $(seq 50); do [ -s "$W/up.pid" ] && break; sleep 0.05; done
UP_PIDS="$(cat "$W/up.pid") $(pgrep -P "$(cat "$W/up.pid")" | tr '\n' ' ')"

ISS=https://idp.ab.test
"$B" keygen --alg RS256 --kid k --out "$W/keys" >/dev/null
TOKEN=$("$B" token --key "$W/keys/k.pem" --kid k --iss "$ISS" --aud orders-api --scope orders:read --ttl 2h)

run_one() { # $1 binary -> prints "req/s cpu_us_per_req"
    local port pid
    port=$(free_port)
    gateway_config "$port" "$UP" "$ISS" "$W/keys/k.jwks.json" "$CACHE" > "$W/gw.yaml"
    # shellcheck disable=SC2086
    RUST_LOG=warn taskset -c "$SERVER_CPU" "$1" serve --config "$W/gw.yaml" --no-watch $SERVE_ARGS 2>>"$W/gw.log" &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.05; done
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/api/orders/1")
    [ "$code" = 200 ] || { echo "auth check failed: $code" >&2; exit 1; }
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/api/orders/1" >/dev/null
    local before after out rps reqs
    # shellcheck disable=SC2086
    before=$(cpu_ticks "$pid" $UP_PIDS)
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/api/orders/1")
    # shellcheck disable=SC2086
    after=$(cpu_ticks "$pid" $UP_PIDS)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    if grep -q "Non-2xx" <<<"$out"; then echo "non-2xx responses: $out" >&2; exit 1; fi
    awk -v r="$rps" -v n="$reqs" -v t=$((after - before)) -v tck="$TCK" \
        'BEGIN { printf "%.0f %.2f\n", r, t / tck * 1e6 / n }'
}

printf '%-6s %10s %10s %12s %12s\n' round "A req/s" "B req/s" "A cpu us/req" "B cpu us/req"
RATIOS=()
for r in $(seq "$ROUNDS"); do
    read -r a_rps a_cpu < <(run_one "$A")
    read -r b_rps b_cpu < <(run_one "$B")
    printf '%-6s %10s %10s %12s %12s\n' "$r" "$a_rps" "$b_rps" "$a_cpu" "$b_cpu"
    RATIOS+=("$(awk -v a="$a_rps" -v b="$b_rps" -v ac="$a_cpu" -v bc="$b_cpu" 'BEGIN { printf "%.3f %.3f", b / a, bc / ac }')")
done
printf '%s\n' "${RATIOS[@]}" | sort -n -k1 | awk '{ r[NR] = $1 } END { printf "median B/A req/s: %.3f\n", r[int((NR + 1) / 2)] }'
printf '%s\n' "${RATIOS[@]}" | sort -n -k2 | awk '{ c[NR] = $2 } END { printf "median B/A cpu/req: %.3f\n", c[int((NR + 1) / 2)] }'
