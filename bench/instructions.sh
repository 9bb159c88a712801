#!/usr/bin/env bash
# User-space instructions per request, counted by valgrind (callgrind) on the RS256 cached row's
# request path: deterministic to about 0.1 %, where wrk A/Bs on this shared machine see
# nothing under 3 to 5 %. For small changes to the request path; the verdict on speed still
# comes from bench/ab.sh and bench/run.sh.
#
#   bash bench/instructions.sh                                  # target/release/tollgate
#   A=/tmp/tollgate-before B=target/release/tollgate bash bench/instructions.sh
#   TOP=25 bash bench/instructions.sh                           # also the costliest functions
#
# Caveats, both from valgrind's emulated CPU: SHA-256 runs its AVX code instead of the SHA
# extensions (about 23,000 of the instructions, several times the real cost), and large
# memset/memcpy count every byte of `rep stosb`/`rep movsb`. Compare builds, not absolutes.
# The gateway runs on loopback against a local nginx; the load is bounded by DURATION.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${DURATION:-5}
CONNS=${CONNS:-20}
CACHE=${CACHE:-true}
TOP=${TOP:-0}

# shellcheck source=bench/lib.sh
. bench/lib.sh
install_missing wrk:wrk nginx:nginx-light valgrind:valgrind
if [ -z "${A:-}" ]; then
    [ -x target/release/tollgate ] || cargo build --release --locked
    A=target/release/tollgate
fi

scratch_dir instructions

UP=$(free_port)
nginx_conf up "server { listen 127.0.0.1:$UP; location / { return 200 'ok\n'; } }"
ISS=https://idp.instructions.test
"$A" keygen --alg RS256 --kid k --out "$W/keys" >/dev/null
TOKEN=$("$A" token --key "$W/keys/k.pem" --kid k --iss "$ISS" --aud orders-api --scope orders:read --ttl 2h)

count() { # $1 binary -> "requests instructions-per-request"
    local port out n GW
    port=$(free_port)
    gateway_config "$port" "$UP" "$ISS" "$W/keys/k.jwks.json" "$CACHE" > "$W/gw.yaml"
    rm -f "$W"/cg.out*
    RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$W/cg.out" \
        "$1" serve --config "$W/gw.yaml" --no-watch --worker-threads 1 >"$W/gw.log" 2>&1 &
    GW=$!
    started "$GW"
    for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
    local url="http://127.0.0.1:$port/api/orders/1"
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$url")" = 200 ] ||
        { echo "auth check failed for $1" >&2; exit 1; }
    # Warm-up (pool, cache, lazily built state) outside the count.
    taskset -c 0 wrk -t1 -c"$CONNS" -d2s -H "Authorization: Bearer $TOKEN" "$url" >/dev/null
    callgrind_control -i on "$GW" >/dev/null 2>&1
    out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Authorization: Bearer $TOKEN" "$url")
    callgrind_control -i off "$GW" >/dev/null 2>&1
    callgrind_control -d "$GW" >/dev/null 2>&1
    kill "$GW"
    wait "$GW" 2>/dev/null || true
    if grep -q Non-2xx <<<"$out"; then echo "non-2xx responses: $out" >&2; exit 1; fi
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    # What was counted between `-i on` and `-i off` is in the dump (cg.out.1); the part
    # written at exit counted nothing, and adds nothing to the sum.
    cat "$W"/cg.out* | awk -v n="$n" '/^summary:/ {s += $2} /^totals:/ {t += $2}
        END {printf "%d %.0f\n", n, (s > 0 ? s : t) / n}'
    if [ "$TOP" -gt 0 ]; then
        # Function by function (inlined code counts for the function it was inlined into).
        callgrind_annotate "$W/cg.out.1" 2>/dev/null | awk -v n="$n" -v top="$TOP" '
            /PROGRAM TOTALS/ {go = 1; next}
            go && /^ *[0-9,]+ \(/ && shown++ < top {
                c = $1; gsub(",", "", c); $1 = ""
                sub(/^ +\( *[0-9.]+%\) +/, ""); sub(/ \[.*$/, "")
                printf "    %8.0f  %s\n", c / n, substr($0, 1, 110) }' > "$W/top.txt"
    fi
}

for label in A B; do
    bin=${!label:-}
    [ -n "$bin" ] || continue
    count "$bin" > "$W/count.txt"
    read -r n per < "$W/count.txt"
    printf '%s  %-40s %8s requests  %8s instructions/request\n' "$label" "$bin" "$n" "$per"
    if [ "$TOP" -gt 0 ]; then cat "$W/top.txt"; fi
done
