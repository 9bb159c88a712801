#!/usr/bin/env bash
# Profile-guided build of tollgate (issue 5: "release profile"). Builds an instrumented binary,
# trains it on loopback traffic like bench/run.sh's rows (RS256 and ES256, cache on and off,
# one worker and the default runtime, plus 401/403/404 answers), merges the profile, and builds
# target/pgo/release/tollgate with it.
#
#   bash bench/pgo.sh                     # prints the path of the PGO binary
#   PGO_RETRAIN=1 bash bench/pgo.sh       # train again even if the code did not change
#
# bench/run.sh runs its tollgate rows on this build (PGO=0 for the plain one). The profile is
# trained on the request mix the benchmark sends, the usual hot path of a gateway (HTTP/1.1
# GET, bearer token, one route); code it never ran (HTTP/2, TLS, request bodies) is laid out
# as cold, which costs those paths little but gains them nothing.
#
# Needs llvm-profdata from the toolchain's LLVM (rustup's llvm-tools component; installed here
# when missing). Separate target directories (target/pgo-gen, target/pgo) keep the ordinary
# release build untouched; a second run with unchanged code reuses everything (under a second).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TRAIN_SECS=${TRAIN_SECS:-4}
CONNS=${CONNS:-50}

# shellcheck source=bench/lib.sh
. bench/lib.sh
install_missing wrk:wrk nginx:nginx-light curl:curl

host=$(rustc -vV | awk '/^host:/ {print $2}')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
    rustup component add llvm-tools >&2
fi

scratch_dir pgo
# Fixed paths: RUSTFLAGS are part of cargo's fingerprint, so a path that changed per run would
# rebuild every crate each time.
RAW=$PWD/target/pgo-gen/profiles
PROFILE=$PWD/target/pgo-gen/merged.profdata
echo "pgo: instrumented build" >&2
RUSTFLAGS="-Cprofile-generate=$RAW" cargo build --release --locked --quiet \
    --target-dir target/pgo-gen --bin tollgate
GEN=$PWD/target/pgo-gen/release/tollgate

UP=$(free_port)
nginx_conf up "server { listen 127.0.0.1:$UP; location / { return 200 'ok\n'; } }"
ISS=https://idp.pgo.test

train() { # $1 alg, $2 cache, $3 serve args
    local port pid token wrong
    rm -rf "$W/keys"
    "$GEN" keygen --alg "$1" --kid k --out "$W/keys" >/dev/null
    token=$("$GEN" token --key "$W/keys/k.pem" --kid k --iss "$ISS" --aud orders-api --scope orders:read --ttl 1h)
    wrong=$("$GEN" token --key "$W/keys/k.pem" --kid k --iss "$ISS" --aud orders-api --scope other --ttl 1h)
    port=$(free_port)
    gateway_config "$port" "$UP" "$ISS" "$W/keys/k.jwks.json" "$2" > "$W/gw.yaml"
    # shellcheck disable=SC2086
    RUST_LOG=warn "$GEN" serve --config "$W/gw.yaml" --no-watch $3 2>>"$W/gw.log" &
    pid=$!
    started "$pid"
    wait_http "$port" || true
    local url=http://127.0.0.1:$port/api/orders/1
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$url")" = 200 ] ||
        { echo "pgo: training gateway does not answer 200" >&2; exit 1; }
    wrk -t1 -c"$CONNS" -d"${TRAIN_SECS}s" -H "Authorization: Bearer $token" "$url" >/dev/null
    # The answers a gateway gives besides 200, so their code is not laid out as cold.
    wrk -t1 -c10 -d1s "$url" >/dev/null
    wrk -t1 -c10 -d1s -H "Authorization: Bearer $wrong" "$url" >/dev/null
    wrk -t1 -c10 -d1s -H "Authorization: Bearer $token" "http://127.0.0.1:$port/nowhere" >/dev/null
    # SIGTERM: a graceful exit runs the exit handlers that write the profile (merged into
    # one file for all processes, keygen and token included).
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
}

# A profile newer than the instrumented binary was trained on this very code: reuse it.
if [ -n "${PGO_RETRAIN:-}" ] || [ ! "$PROFILE" -nt "$GEN" ]; then
    echo "pgo: training" >&2
    rm -rf "$RAW"
    train RS256 true "--worker-threads 1"
    train RS256 false "--worker-threads 1"
    train ES256 true "--worker-threads 1"
    train ES256 false "--worker-threads 1"
    train RS256 true ""
    "$profdata" merge -o "$PROFILE" "$RAW"/*.profraw
    # A gateway that died instead of exiting writes nothing, and a build with a profile of
    # keygen and token alone would quietly optimise for the wrong code. Measured: the hottest
    # function's count is about 20,000 for one keygen and one token, over 100 million with
    # the gateways' traffic; 10 million is the floor.
    hottest=$("$profdata" show "$PROFILE" | awk '/Maximum function count/ {print $NF}')
    if [ "${hottest:-0}" -lt 10000000 ]; then
        rm -f "$PROFILE"
        echo "pgo: the profile has no serving traffic in it (hottest function: ${hottest:-0} calls)" >&2
        exit 1
    fi
fi

echo "pgo: optimised build" >&2
RUSTFLAGS="-Cprofile-use=$PROFILE" \
    cargo build --release --locked --quiet --target-dir target/pgo --bin tollgate
echo "$PWD/target/pgo/release/tollgate"
