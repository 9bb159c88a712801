#!/usr/bin/env bash
# Reload under load (issue 3): wrk drives a valid token through tollgate while routes.yaml is
# rewritten 300 times at 5 per second between two valid configs (whose upstreams name
# themselves in the body), with 30 invalid files interleaved. The same run without reloads is
# the p99 baseline. Everything listens on 127.0.0.1; every phase is bounded in time.
#
#   bash bench/reload-under-load.sh            # DURATION=60 (seconds per phase)
#   DURATION=20 bash bench/reload-under-load.sh
#
# Pass criteria (printed at the end): 0 socket errors and 0 non-2xx in every phase; all 30
# invalid files rejected (each names itself in the error); p99 with reloads <= 2x p99 without;
# RSS after the reload phase within 10% of before it; SIGTERM under load: every request the
# gateway accepted was answered, and the process exits 0 within the grace.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${DURATION:-60}
WRITES=330            # 300 valid + 30 invalid
INTERVAL=0.2          # 5 writes per second
CONNS=${CONNS:-50}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi
# BIN: another build to run (e.g. an older one, to compare); the release build otherwise.
if [ -z "${BIN:-}" ]; then
    cargo build --release --locked -q
    BIN=$PWD/target/release/tollgate
fi

W=$(mktemp -d /tmp/tollgate-reload.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$W/nginx.pid" ] && kill "$(cat "$W/nginx.pid")" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
. bench/lib.sh
UP1=$(free_port); UP2=$(free_port); GW=$(free_port); ADMIN=$(free_port)

# Two upstreams that identify themselves: nginx, one worker, no access log.
cat > "$W/nginx.conf" <<EOF
worker_processes 1;
pid $W/nginx.pid;
error_log $W/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$UP1; location / { return 200 "one\n"; } }
    server { listen 127.0.0.1:$UP2; location / { return 200 "two\n"; } }
}
EOF
nginx -c "$W/nginx.conf" -p "$W"

"$BIN" keygen --alg RS256 --kid bench --out "$W/keys" >/dev/null
config() { # $1 upstream port, $2 extra top-level line (an invalid key, or nothing)
    cat <<EOF
listen: 127.0.0.1:$GW
admin: 127.0.0.1:$ADMIN
shutdown_grace_secs: 10
$2
issuers:
  - id: bench
    issuer: https://idp.bench.test
    audiences: [orders-api]
    jwks_file: keys/bench.jwks.json
routes:
  - id: orders
    path: /api/orders
    methods: [GET]
    upstream: http://127.0.0.1:$1
    scopes: [orders:read]
    claims_to_headers: {sub: X-User-Id}
EOF
}
config "$UP1" "" > "$W/a.yaml"
config "$UP2" "" > "$W/b.yaml"
cp "$W/a.yaml" "$W/routes.yaml"
TOKEN=$("$BIN" token --key "$W/keys/bench.pem" --kid bench --iss https://idp.bench.test --aud orders-api --scope orders:read --ttl 1h)

cat > "$W/count.lua" <<'EOF'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) one = 0; two = 0; other = 0 end
function response(status, headers, body)
  if body:sub(1, 3) == "one" then one = one + 1
  elseif body:sub(1, 3) == "two" then two = two + 1
  else other = other + 1 end
end
function done(summary, latency, requests)
  local o, t, x = 0, 0, 0
  for _, th in ipairs(threads) do o = o + th:get("one"); t = t + th:get("two"); x = x + th:get("other") end
  io.write(string.format("bodies: one=%d two=%d other=%d\n", o, t, x))
end
EOF

start_gateway() { # $1 log file, $2 RUST_LOG
    RUST_LOG=$2 "$BIN" serve --config "$W/routes.yaml" 2>"$1" &
    GW_PID=$!
    PIDS+=("$GW_PID")
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$ADMIN/-/ready" >/dev/null 2>&1 && return; sleep 0.1; done
    echo "gateway did not become ready" >&2; cat "$1" >&2; exit 1
}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
ms() { # wrk latency ("812.00us", "1.20ms", "1.01s") -> milliseconds
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}
field() { grep -E "$2" "$1" | head -1; }

run_wrk() { # $1 out file, $2 duration, $3... extra wrk args
    local out=$1 dur=$2; shift 2
    wrk -t1 -c"$CONNS" -d"${dur}s" --latency -s "$W/count.lua" -H "Authorization: Bearer $TOKEN" "$@" \
        "http://127.0.0.1:$GW/api/orders/1" > "$out"
}

SUMMARY=$W/summary.txt
: > "$SUMMARY"
FAIL=0
check() { # $1 description, $2 condition result (0 ok)
    if [ "$2" -eq 0 ]; then echo "PASS  $1" | tee -a "$SUMMARY"; else echo "FAIL  $1" | tee -a "$SUMMARY"; FAIL=1; fi
}

phase() { # $1 name, $2 reloads (yes|no), $3... extra wrk args
    local name=$1 reloads=$2; shift 2
    cp "$W/a.yaml" "$W/routes.yaml"
    start_gateway "$W/$name.log" "warn,tollgate::reload=info"
    # Warm-up, with one switch to the other upstream and back, so that both upstream pools
    # and the allocator's arenas exist before the "before" RSS is taken: what the reload
    # phase may not do is keep growing.
    run_wrk "$W/$name-warmup.txt" 5 "$@" &
    local warm_pid=$!
    sleep 1; cp "$W/b.yaml" "$W/next.yaml"; mv "$W/next.yaml" "$W/routes.yaml"
    sleep 2; cp "$W/a.yaml" "$W/next.yaml"; mv "$W/next.yaml" "$W/routes.yaml"
    wait "$warm_pid"
    local rss_before; rss_before=$(rss_kib "$GW_PID")
    run_wrk "$W/$name.txt" "$DURATION" "$@" &
    local wrk_pid=$!
    if [ "$reloads" = yes ]; then
        for i in $(seq 1 "$WRITES"); do
            if [ $((i % 11)) -eq 0 ]; then
                config "$UP1" "invalid_$((i / 11)): true" > "$W/next.yaml"
            elif [ $((i % 2)) -eq 0 ]; then
                cp "$W/b.yaml" "$W/next.yaml"
            else
                cp "$W/a.yaml" "$W/next.yaml"
            fi
            mv "$W/next.yaml" "$W/routes.yaml"   # write-then-rename, as editors and the kubelet do
            sleep "$INTERVAL"
        done
        cp "$W/a.yaml" "$W/next.yaml"; mv "$W/next.yaml" "$W/routes.yaml"
    fi
    wait "$wrk_pid"
    local rss_after; rss_after=$(rss_kib "$GW_PID")
    kill -TERM "$GW_PID"; wait "$GW_PID" || true
    local reqs errs non2xx p99 bodies
    reqs=$(awk '/requests in/ {print $1}' "$W/$name.txt")
    errs=$(field "$W/$name.txt" 'Socket errors' || true)
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$W/$name.txt"); non2xx=${non2xx:-0}
    p99=$(awk '$1 == "99%" {print $2}' "$W/$name.txt")
    bodies=$(field "$W/$name.txt" '^bodies:')
    local reloaded rejected
    reloaded=$(grep -c 'config reloaded' "$W/$name.log" || true)
    rejected=$(grep -c 'config rejected' "$W/$name.log" || true)
    printf '%-16s requests=%-8s p99=%-9s non2xx=%-4s %s | reloads ok=%s rejected-lines=%s | rss %s -> %s KiB | %s\n' \
        "$name" "$reqs" "$p99" "$non2xx" "${bodies:-}" "$reloaded" "$rejected" "$rss_before" "$rss_after" "${errs:-no socket errors}" | tee -a "$SUMMARY"
    eval "P99_$name=$(ms "$p99")"
    check "$name: 0 socket errors" "$([ -z "$errs" ]; echo $?)"
    check "$name: 0 non-2xx responses" "$([ "$non2xx" -eq 0 ]; echo $?)"
    if [ "$reloads" = yes ]; then
        local missing=0
        for n in $(seq 1 30); do grep -q "unknown key \`invalid_$n\`" "$W/$name.log" || missing=$((missing + 1)); done
        check "$name: all 30 invalid files rejected ($missing not seen)" "$([ "$missing" -eq 0 ]; echo $?)"
        local one two; one=$(sed -E 's/.*one=([0-9]+).*/\1/' <<<"$bodies"); two=$(sed -E 's/.*two=([0-9]+).*/\1/' <<<"$bodies")
        check "$name: both upstreams served (one=$one two=$two)" "$([ "$one" -gt 0 ] && [ "$two" -gt 0 ]; echo $?)"
        local limit=$((rss_before + rss_before / 10))
        check "$name: RSS after ($rss_after KiB) within 10% of before ($rss_before KiB)" "$([ "$rss_after" -le "$limit" ]; echo $?)"
    fi
}

echo "tollgate reload under load: ${DURATION}s per phase, $CONNS connections, $WRITES writes at 5/s"
phase keepalive_base no
phase keepalive_reload yes
phase close_base no -H "Connection: close"
phase close_reload yes -H "Connection: close"
for kind in keepalive close; do
    base=$(eval echo "\$P99_${kind}_base"); loaded=$(eval echo "\$P99_${kind}_reload")
    r=$(awk -v a="$loaded" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
    check "$kind: p99 with reloads ${loaded}ms = ${r}x the ${base}ms without (limit 2x)" \
        "$(awk -v r="$r" 'BEGIN { exit !(r <= 2.0) }'; echo $?)"
done

# SIGTERM under load: the access log (one line per answered request) against what wrk received.
cp "$W/a.yaml" "$W/routes.yaml"
start_gateway "$W/sigterm.log" "warn,tollgate::access=info"
run_wrk "$W/sigterm.txt" 10 &
wrk_pid=$!
sleep 3
t0=$(date +%s.%N)
kill -TERM "$GW_PID"
code=0; wait "$GW_PID" || code=$?
t1=$(date +%s.%N)
wait "$wrk_pid" || true
answered=$(grep -c 'status=200' "$W/sigterm.log" || true)
received=$(awk '/requests in/ {print $1}' "$W/sigterm.txt")
errs=$(field "$W/sigterm.txt" 'Socket errors' || true)
took=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
printf '%-16s gateway answered=%s wrk received=%s exit=%s after %ss | %s\n' sigterm "$answered" "$received" "$code" "$took" "${errs:-no socket errors}" | tee -a "$SUMMARY"
check "sigterm: exit code 0" "$([ "$code" -eq 0 ]; echo $?)"
check "sigterm: exited within the 10 s grace (${took}s)" "$(awk -v t="$took" 'BEGIN { exit !(t < 10) }'; echo $?)"
# The gateway logs each request as it answers it; wrk counts each response it receives, and
# the gateway is gone long before wrk stops, so nothing is in flight at wrk's end: the two
# counts are equal exactly when no accepted request was dropped by the shutdown.
check "sigterm: every request the gateway answered reached the client ($answered vs $received)" \
    "$([ "$answered" -eq "$received" ]; echo $?)"

echo
echo "== summary"
cat "$SUMMARY"
exit "$FAIL"
