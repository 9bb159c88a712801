#!/usr/bin/env bash
# A/B of two tollgate binaries on the same request path, for changes that claim (or must not
# cost) speed. Same setup as bench/run.sh: nginx upstream and the gateway on CPU 1, wrk on
# CPU 0, one worker thread, an RS256 token (ALG=ES256 for the other), a route with a scope
# and a claim header.
#
#   A=/tmp/tollgate-before B=target/release/tollgate bash bench/ab.sh
#   ROUNDS=5 DURATION=5 CACHE=false SERVE_ARGS="--worker-threads 1" bash bench/ab.sh
#
# Rounds alternate A and B (ABAB...) so drift on a shared machine hits both; the verdict is
# the median of the per-round B/A ratios of requests/s, of server CPU per request and of wrk's
# p99 latency.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

A=${A:?set A=path/to/baseline/tollgate}
B=${B:-target/release/tollgate}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
CONNS=${CONNS:-50}
CACHE=${CACHE:-true}
ALG=${ALG:-RS256}
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
"$B" keygen --alg "$ALG" --kid k --out "$W/keys" >/dev/null
TOKEN=$("$B" token --key "$W/keys/k.pem" --kid k --iss "$ISS" --aud orders-api --scope orders:read --ttl 2h)

run_one() { # $1 binary -> prints "req/s cpu_us_per_req p99_ms"
    local port pid
    port=$(free_port)
    gateway_config "$port" "$UP" "$ISS" "$W/keys/k.jwks.json" "$CACHE" > "$W/gw.yaml"
    # shellcheck disable=SC2086
    RUST_LOG=warn taskset -c "$SERVER_CPU" "$1" serve --config "$W/gw.yaml" --no-watch $SERVE_ARGS 2>>"$W/gw.log" &
    pid=$!
    PIDS+=("$pid")
    wait_http "$port" || true
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/api/orders/1")
    [ "$code" = 200 ] || { echo "auth check failed: $code" >&2; exit 1; }
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/api/orders/1" >/dev/null
    local before after out rps reqs p99
    # shellcheck disable=SC2086
    before=$(cpu_ticks "$pid" $UP_PIDS)
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/api/orders/1")
    # shellcheck disable=SC2086
    after=$(cpu_ticks "$pid" $UP_PIDS)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    if grep -q "Non-2xx" <<<"$out"; then echo "non-2xx responses: $out" >&2; exit 1; fi
    p99=$(awk '$1 == "99%" { v = $2; m = 1
        if (v ~ /us$/) m = 0.001; else if (v ~ /ms$/) m = 1; else if (v ~ /s$/) m = 1000
        sub(/[a-z]+$/, "", v); printf "%.3f", v * m }' <<<"$out")
    awk -v r="$rps" -v n="$reqs" -v t=$((after - before)) -v tck="$TCK" -v p="$p99" \
        'BEGIN { printf "%.0f %.2f %s\n", r, t / tck * 1e6 / n, p }'
}

printf '%-6s %10s %10s %12s %12s %10s %10s\n' round "A req/s" "B req/s" "A cpu us/req" "B cpu us/req" \
    "A p99 ms" "B p99 ms"
RATIOS=()
for r in $(seq "$ROUNDS"); do
    read -r a_rps a_cpu a_p99 < <(run_one "$A")
    read -r b_rps b_cpu b_p99 < <(run_one "$B")
    printf '%-6s %10s %10s %12s %12s %10s %10s\n' "$r" "$a_rps" "$b_rps" "$a_cpu" "$b_cpu" "$a_p99" "$b_p99"
    RATIOS+=("$(awk -v a="$a_rps" -v b="$b_rps" -v ac="$a_cpu" -v bc="$b_cpu" -v ap="$a_p99" -v bp="$b_p99" \
        'BEGIN { printf "%.3f %.3f %.3f", b / a, bc / ac, bp / ap }')")
done
median() { # $1 column of RATIOS, $2 label
    printf '%s\n' "${RATIOS[@]}" | sort -n -k"$1" |
        awk -v k="$1" -v label="$2" '{ v[NR] = $k } END { printf "median B/A %s: %.3f\n", label, v[int((NR + 1) / 2)] }'
}
median 1 req/s
median 2 cpu/req
median 3 p99
