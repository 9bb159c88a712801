#!/usr/bin/env bash
# Issue 5's ceiling experiment: nginx plain proxy, tollgate (RS256, cache on) and
# examples/ceiling.rs (a tokio proxy with no HTTP library doing the least the cached row does),
# with and without the yield before the upstream write, in interleaved rounds. Same setup as
# bench/run.sh: wrk -t1 -c50 on CPU 0, every server (the nginx upstream included) on CPU 1.
#
#   ROUNDS=4 DURATION=5 bash bench/ceiling.sh
#
# Prints each row's requests/s and server CPU per request (proxy + upstream, /proc/PID/stat),
# and per round the ratio of each row to nginx; then the median ratios.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-5}
CONNS=${CONNS:-50}
LOAD_CPU=${LOAD_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}

# shellcheck source=bench/lib.sh
. bench/lib.sh
install_missing wrk:wrk nginx:nginx-light curl:curl
cargo build --release --locked --quiet --bin tollgate --example ceiling
BIN=$PWD/target/release/tollgate
CEIL=$PWD/target/release/examples/ceiling
TCK=$(getconf CLK_TCK)
W=$(mktemp -d /tmp/tollgate-ceiling.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for f in "$W"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
    rm -rf "$W"
}
trap cleanup EXIT


UP=$(free_port)
nginx_conf up "server { listen 127.0.0.1:$UP; location / { return 200 'ok\n'; } }"
UP_PIDS="$(cat "$W/up.pid") $(pgrep -P "$(cat "$W/up.pid")" | tr '\n' ' ')"

ISS=https://idp.ceiling.test
"$BIN" keygen --alg RS256 --kid k --out "$W/keys" >/dev/null
TOKEN=$("$BIN" token --key "$W/keys/k.pem" --kid k --iss "$ISS" --aud orders-api --scope orders:read --ttl 2h)
URL_PATH=/api/orders/1

start() { # $1 row -> sets PORT, PROXY_PIDS
    PORT=$(free_port)
    case $1 in
    nginx)
        nginx_conf px "upstream u { server 127.0.0.1:$UP; keepalive 64; }
    server { listen 127.0.0.1:$PORT; location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
        PROXY_PIDS="$(cat "$W/px.pid") $(pgrep -P "$(cat "$W/px.pid")" | tr '\n' ' ')" ;;
    tollgate)
        gateway_config "$PORT" "$UP" "$ISS" "$W/keys/k.jwks.json" true > "$W/gw.yaml"
        RUST_LOG=warn taskset -c "$SERVER_CPU" "$BIN" serve --config "$W/gw.yaml" --no-watch --worker-threads 1 2>>"$W/gw.log" &
        PROXY_PIDS=$!; PIDS+=("$!") ;;
    ceiling | ceiling-no-yield)
        local flag=""
        [ "$1" = ceiling-no-yield ] && flag=--no-yield
        # shellcheck disable=SC2086
        taskset -c "$SERVER_CPU" "$CEIL" "127.0.0.1:$PORT" "127.0.0.1:$UP" "$TOKEN" $flag >/dev/null &
        PROXY_PIDS=$!; PIDS+=("$!") ;;
    esac
    wait_http "$PORT" || true
}

stop() { # $1 row
    if [ "$1" = nginx ]; then
        kill "$(cat "$W/px.pid")"; rm -f "$W/px.pid"
    else
        # shellcheck disable=SC2086
        # shellcheck disable=SC2086 # a list of pids, split on purpose
        { kill $PROXY_PIDS; wait $PROXY_PIDS 2>/dev/null; } || true
    fi
}

run_row() { # $1 row -> prints "req/s cpu_us_per_req"
    start "$1"
    local ok no
    ok=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT$URL_PATH")
    [ "$ok" = 200 ] || { echo "$1: valid token got $ok" >&2; exit 1; }
    if [ "$1" != nginx ]; then
        no=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT$URL_PATH")
        [ "$no" = 401 ] || { echo "$1: no token got $no" >&2; exit 1; }
    fi
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT$URL_PATH" >/dev/null
    local before after out rps reqs
    # shellcheck disable=SC2086
    before=$(cpu_ticks $PROXY_PIDS $UP_PIDS)
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT$URL_PATH")
    # shellcheck disable=SC2086
    after=$(cpu_ticks $PROXY_PIDS $UP_PIDS)
    stop "$1"
    if grep -q "Non-2xx" <<<"$out"; then echo "$1: non-2xx responses: $out" >&2; exit 1; fi
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    awk -v r="$rps" -v n="$reqs" -v t=$((after - before)) -v tck="$TCK" \
        'BEGIN { printf "%.0f %.2f\n", r, t / tck * 1e6 / n }'
}

ROWS=(nginx tollgate ceiling ceiling-no-yield)
printf '%-6s %-17s %9s %12s %9s %9s\n' round row "req/s" "cpu us/req" "x nginx" "cpu x"
: > "$W/ratios"
for r in $(seq "$ROUNDS"); do
    declare -A RPS CPU
    for row in "${ROWS[@]}"; do
        read -r "RPS[$row]" "CPU[$row]" < <(run_row "$row")
    done
    for row in "${ROWS[@]}"; do
        read -r x c < <(awk -v a="${RPS[$row]}" -v b="${RPS[nginx]}" -v ac="${CPU[$row]}" -v bc="${CPU[nginx]}" \
            'BEGIN { printf "%.3f %.3f\n", a / b, ac / bc }')
        printf '%-6s %-17s %9s %12s %9s %9s\n' "$r" "$row" "${RPS[$row]}" "${CPU[$row]}" "$x" "$c"
        echo "$row $x $c" >> "$W/ratios"
    done
done
echo "median per row: req/s x nginx, cpu/req x nginx"
for row in "${ROWS[@]}"; do
    x=$(awk -v row="$row" '$1 == row { print $2 }' "$W/ratios" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
    c=$(awk -v row="$row" '$1 == row { print $3 }' "$W/ratios" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
    printf '%-17s %s %s\n' "$row" "$x" "$c"
done
