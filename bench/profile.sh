#!/usr/bin/env bash
# Where tollgate's CPU goes on the benchmarked path: a flamegraph and a per-function table of
# the gateway under wrk load, in the setup of bench/run.sh (nginx upstream and the gateway
# on CPU 1, wrk on CPU 0, one worker thread, RS256 token, a route with a scope and a claim
# header). Every server listens on 127.0.0.1; load and recording are bounded in time.
#
#   bash bench/profile.sh                  # cache on; writes bench/results/flamegraph-cache.svg
#   CACHE=false bash bench/profile.sh      # every request verifies its signature
#   DURATION=8 OUT=/tmp/prof bash bench/profile.sh
#
# The binary is built with line tables (so inlined frames get names) into target/profile,
# apart from the normal release build. Needs perf (Debian's linux-perf) and inferno (from
# crates.io, installed under target/tools); both are installed when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE=${CACHE:-true}
DURATION=${DURATION:-6}
CONNS=${CONNS:-50}
# Samples per second; with DWARF stacks, more makes perf itself a noticeable load.
FREQ=${FREQ:-1000}
OUT=${OUT:-bench/results}
NAME=flamegraph-$([ "$CACHE" = true ] && echo cache || echo nocache)

# shellcheck source=bench/lib.sh
. bench/lib.sh
install_missing wrk:wrk nginx:nginx-light perf:linux-perf
TOOLS=target/tools
if [ ! -x "$TOOLS/bin/inferno-flamegraph" ]; then
    cargo install inferno --locked --version 0.12.8 --root "$TOOLS"
fi
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --locked --target-dir target/profile
BIN=target/profile/release/tollgate

scratch_dir profile

UP=$(free_port)
GP=$(free_port)
nginx_conf up "server { listen 127.0.0.1:$UP; location / { return 200 'ok\n'; } }"
ISS=https://idp.profile.test
"$BIN" keygen --alg RS256 --kid k --out "$W/keys" >/dev/null
TOKEN=$("$BIN" token --key "$W/keys/k.pem" --kid k --iss "$ISS" --aud orders-api --scope orders:read --ttl 2h)
gateway_config "$GP" "$UP" "$ISS" "$W/keys/k.jwks.json" "$CACHE" > "$W/gw.yaml"
start_pinned_gateway "$BIN" "$W/gw.yaml" "$GP" "$TOKEN"
GW=$GW_PID
URL="http://127.0.0.1:$GP/api/orders/1"

# Warm-up, then a run with perf attached to the gateway for all but its first and last second.
taskset -c 0 wrk -t1 -c"$CONNS" -d2s -H "Authorization: Bearer $TOKEN" "$URL" >/dev/null
taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Authorization: Bearer $TOKEN" "$URL" > "$W/wrk.txt" &
WRK=$!
sleep 1
perf record -F "$FREQ" --call-graph dwarf,32768 -p "$GW" -o "$W/perf.data" -- sleep "$((DURATION - 2))" \
    >/dev/null 2>&1
wait "$WRK"
grep -q "Non-2xx" "$W/wrk.txt" && { echo "non-2xx responses under load" >&2; cat "$W/wrk.txt" >&2; exit 1; }
rps=$(awk '/Requests\/sec/ {print $2}' "$W/wrk.txt")

mkdir -p "$OUT"
perf script -i "$W/perf.data" 2>/dev/null | "$TOOLS/bin/inferno-collapse-perf" > "$W/folded.txt"
"$TOOLS/bin/inferno-flamegraph" --title "tollgate, RS256, cache $CACHE, $rps req/s (bench/profile.sh)" \
    < "$W/folded.txt" > "$OUT/$NAME.svg"
{
    echo "# $NAME: tollgate $(git rev-parse --short HEAD), cache $CACHE, $rps req/s under wrk -c$CONNS"
    echo "# share of the gateway's samples by object (kernel = system calls, TCP, scheduling)"
    # awk rather than head: head leaving early would fail the pipeline (pipefail).
    perf report -i "$W/perf.data" --no-children --sort dso --stdio 2>/dev/null |
        awk '/^ +[0-9]/ && n++ < 6'
    echo "# user-space functions by own samples (inlined callees count for their caller)"
    perf report -i "$W/perf.data" --no-children --sort dso,symbol --stdio --no-call-graph 2>/dev/null |
        awk '/^ +[0-9]/ && !/\[k\]/ && n++ < 30 { gsub(/  +/, " "); print substr($0, 1, 140) }'
} > "$OUT/$NAME.txt"
echo "wrote $OUT/$NAME.svg and $OUT/$NAME.txt ($rps req/s while recording)"
