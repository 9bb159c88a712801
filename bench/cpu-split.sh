#!/usr/bin/env bash
# Where the CPU per request goes: a plain nginx proxy and tollgate (RS256, cache on, one worker
# thread) in front of the same nginx upstream, wrk on CPU 0, every server on CPU 1, as in
# bench/run.sh. For each, from /proc/PID/stat and /proc/PID/status over one wrk run:
# user and system µs per request of the proxy and of the upstream, and the proxy's context
# switches per request (involuntary ones are the proxy preempted by the upstream it woke).
# With perf installed, also system calls per request.
#
#   bash bench/cpu-split.sh                 # ROUNDS=3 DURATION=5
#   BIN=/tmp/other-tollgate bash bench/cpu-split.sh
#   ALG=ES256 CACHE=false bash bench/cpu-split.sh     # the token and the cache of the tollgate row
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${BIN:-target/release/tollgate}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-50}
ALG=${ALG:-RS256}
CACHE=${CACHE:-true}

# shellcheck source=bench/lib.sh
. bench/lib.sh
install_missing wrk:wrk nginx:nginx-light
[ -x "$BIN" ] || cargo build --release --locked
# The ceiling row (examples/ceiling.rs, see bench/ceiling.sh): the same request path with
# no HTTP library, for where its CPU goes.
CEIL=target/release/examples/ceiling
[ -x "$CEIL" ] || cargo build --release --locked --example ceiling
TCK=$(getconf CLK_TCK)
scratch_dir split

UP=$(free_port)
PX=$(free_port)
GP=$(free_port)
CP=$(free_port)
nginx_conf up "server { listen 127.0.0.1:$UP; location / { return 200 'ok\n'; } }"
nginx_conf proxy "upstream u { server 127.0.0.1:$UP; keepalive 64; }
    server { listen 127.0.0.1:$PX; location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
worker() { pgrep -P "$(cat "$W/$1.pid")" | head -1; }

ISS=https://idp.split.test
"$BIN" keygen --alg "$ALG" --kid k --out "$W/keys" >/dev/null
TOKEN=$("$BIN" token --key "$W/keys/k.pem" --kid k --iss "$ISS" --aud orders-api --scope orders:read --ttl 2h)
gateway_config "$GP" "$UP" "$ISS" "$W/keys/k.jwks.json" "$CACHE" > "$W/gw.yaml"
start_pinned_gateway "$BIN" "$W/gw.yaml" "$GP" "$TOKEN"
GW=$GW_PID
taskset -c 1 "$CEIL" "127.0.0.1:$CP" "127.0.0.1:$UP" "$TOKEN" >/dev/null &
CE=$!
started "$CE"
wait_http "$CP" || true

# utime stime voluntary involuntary
sample() { echo "$(awk '{print $14, $15}' "/proc/$1/stat") $(awk '/^voluntary_ctxt/ {v=$2} /^nonvoluntary_ctxt/ {n=$2} END {print v, n}' "/proc/$1/status")"; }

measure() { # $1 label, $2 port, $3 proxy pid
    local url="http://127.0.0.1:$2/api/orders/1" up pb ub pa ua out reqs sc=""
    up=$(worker up)
    taskset -c 0 wrk -t1 -c"$CONNS" -d2s -H "Authorization: Bearer $TOKEN" "$url" >/dev/null
    pb=$(sample "$3"); ub=$(sample "$up")
    if need perf; then
        perf stat -e raw_syscalls:sys_enter -p "$3" -o "$W/perf.txt" -- sleep "$((DURATION + 1))" 2>/dev/null &
        local perf_pid=$!
    fi
    out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Authorization: Bearer $TOKEN" "$url")
    pa=$(sample "$3"); ua=$(sample "$up")
    if need perf; then
        wait "$perf_pid" || true
        sc=$(awk '/sys_enter/ {gsub(",", "", $1); print $1}' "$W/perf.txt")
    fi
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    if grep -q "Non-2xx" <<<"$out"; then echo "non-2xx responses in $1: $out" >&2; exit 1; fi
    awk -v l="$1" -v n="$reqs" -v t="$DURATION" -v k="$TCK" -v sc="${sc:-0}" -v pb="$pb" -v pa="$pa" -v ub="$ub" -v ua="$ua" 'BEGIN {
        split(pb, b); split(pa, a); split(ub, c); split(ua, d); f = 1e6 / k / n
        printf "%-9s %8.0f %9.2f %9.2f %9.2f %9.2f %9.2f %8.3f %8.3f %8s\n", l, n / t,
            (a[1] - b[1]) * f, (a[2] - b[2]) * f, (d[1] - c[1]) * f, (d[2] - c[2]) * f,
            (a[1] + a[2] - b[1] - b[2] + d[1] + d[2] - c[1] - c[2]) * f,
            (a[3] - b[3]) / n, (a[4] - b[4]) / n, (sc > 0 ? sprintf("%.2f", sc / n) : "-") }'
}

printf '%-9s %8s %9s %9s %9s %9s %9s %8s %8s %8s\n' proxy "req/s" "user us" "sys us" "up user" "up sys" "total us" "vol cs" "invol cs" "syscalls"
for _ in $(seq "$ROUNDS"); do
    measure nginx "$PX" "$(worker proxy)"
    measure tollgate "$GP" "$GW"
    measure ceiling "$CP" "$CE"
done
