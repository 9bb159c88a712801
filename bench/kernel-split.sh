#!/usr/bin/env bash
# What a verified token costs the kernel: two tollgate instances (one worker thread each) in
# front of one nginx upstream, the same token, the token cache on in one and off in the
# other, as in bench/run.sh (every server on CPU 1, wrk -t1 -c50 on CPU 0). Each round
# measures both, one after the other; for each, `perf record -e cpu-clock` on the gateway's
# pid over one wrk run, and its utime + stime from /proc/PID/stat over the same run. A
# symbol's µs per request is its share of the samples times the CPU per request. Prints, per
# round, the totals, and at the end the kernel symbols whose time changed most (means of the
# rounds) and how many symbols it takes to cover half of the change: one symbol means one new
# operation, many mean the same operations running slower.
#
#   bash bench/kernel-split.sh                    # ES256, ROUNDS=3 DURATION=5
#   ALG=RS256 ROUNDS=4 bash bench/kernel-split.sh
#
# No hardware counters in this VM, so these are time samples; perf is Debian's linux-perf.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${BIN:-target/release/tollgate}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-50}
ALG=${ALG:-ES256}
# Samples per second of gateway CPU; more makes perf itself a load on the server core.
FREQ=${FREQ:-5000}
TOP=${TOP:-15}

# shellcheck source=bench/lib.sh
. bench/lib.sh
install_missing wrk:wrk nginx:nginx-light perf:linux-perf
[ -x "$BIN" ] || cargo build --release --locked
TCK=$(getconf CLK_TCK)
scratch_dir kernel-split

UP=$(free_port)
nginx_conf up "server { listen 127.0.0.1:$UP; location / { return 200 'ok\n'; } }"
ISS=https://idp.kernel-split.test
"$BIN" keygen --alg "$ALG" --kid k --out "$W/keys" >/dev/null
TOKEN=$("$BIN" token --key "$W/keys/k.pem" --kid k --iss "$ISS" --aud orders-api --scope orders:read --ttl 2h)
declare -A PORT PID
for cache in true false; do
    PORT[$cache]=$(free_port)
    gateway_config "${PORT[$cache]}" "$UP" "$ISS" "$W/keys/k.jwks.json" "$cache" > "$W/gw-$cache.yaml"
    start_pinned_gateway "$BIN" "$W/gw-$cache.yaml" "${PORT[$cache]}" "$TOKEN"
    PID[$cache]=$GW_PID
done

# $1 cache, $2 round: writes $W/split-$1-$2.txt, lines "k|u µs symbol" after a totals line.
# perf once wrote a recording with no samples on this VM: such a run is measured again.
measure() {
    local try
    for try in 1 2 3; do
        measure_once "$@"
        [ "$(wc -l < "$W/split-$1-$2.txt")" -gt 1 ] && break
        echo "round $2 cache $1: perf recorded no samples (try $try)" >&2
    done
    [ "$(wc -l < "$W/split-$1-$2.txt")" -gt 1 ] || { echo "perf recorded nothing, giving up" >&2; exit 1; }
    printf 'round %s  cache %-5s  %s\n' "$2" "$1" "$(head -1 "$W/split-$1-$2.txt")"
}

measure_once() {
    local url="http://127.0.0.1:${PORT[$1]}/api/orders/1" p=${PID[$1]} t0 t1 out n perf_pid
    taskset -c 0 wrk -t1 -c"$CONNS" -d2s -H "Authorization: Bearer $TOKEN" "$url" >/dev/null
    rm -f "$W/perf.data"
    perf record -q -e cpu-clock -F "$FREQ" -p "$p" -o "$W/perf.data" -- sleep "$((DURATION + 1))" 2>"$W/perf.err" &
    perf_pid=$!
    sleep 0.2
    t0=$(cpu_ticks "$p")
    out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Authorization: Bearer $TOKEN" "$url")
    t1=$(cpu_ticks "$p")
    wait "$perf_pid" || true
    if grep -q "Non-2xx" <<<"$out"; then echo "non-2xx responses (cache $1): $out" >&2; exit 1; fi
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    perf report -i "$W/perf.data" --no-children --sort sym -q --percent-limit 0 2>/dev/null |
        awk -v us="$(awk -v t=$((t1 - t0)) -v k="$TCK" -v n="$n" 'BEGIN {print t * 1e6 / k / n}')" -v n="$n" -v d="$DURATION" '
        match($0, /^ *[0-9.]+%/) {
            pct = substr($0, RSTART, RLENGTH); gsub(/[ %]/, "", pct)
            rest = substr($0, RSTART + RLENGTH); sub(/^ +/, "", rest)
            kind = substr(rest, 2, 1); sym = substr(rest, 5)
            v = pct / 100 * us; tot[kind] += v
            lines = lines sprintf("%s %.4f %s\n", kind == "k" ? "k" : "u", v, sym)
        }
        END {
            printf "req/s %.0f  CPU %.2f us/req  kernel %.2f  user %.2f\n", n / d, us, tot["k"], tot["."]
            printf "%s", lines
        }' > "$W/split-$1-$2.txt"
}

for r in $(seq "$ROUNDS"); do
    measure true "$r"
    measure false "$r"
done

python3 - "$W" "$ROUNDS" "$TOP" <<'PY'
import collections, sys
w, rounds, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def kernel(cache):
    d = collections.defaultdict(float)
    for r in range(1, rounds + 1):
        for line in open(f"{w}/split-{cache}-{r}.txt").readlines()[1:]:
            kind, us, sym = line.rstrip("\n").split(" ", 2)
            if kind == "k":
                d[sym] += float(us) / rounds
    return d
on, off = kernel("true"), kernel("false")
diff = {s: off.get(s, 0) - on.get(s, 0) for s in set(on) | set(off)}
total = sum(diff.values())
print(f"\nkernel us/req, means of {rounds} rounds: cache on {sum(on.values()):.2f}, "
      f"cache off {sum(off.values()):.2f}, difference {total:+.2f}")
print(f"{'cache on':>9} {'cache off':>9} {'diff':>7}  symbol")
for s in sorted(diff, key=lambda s: -diff[s])[:top]:
    print(f"{on.get(s, 0):9.3f} {off.get(s, 0):9.3f} {diff[s]:+7.3f}  {s}")
grew = sorted((v for v in diff.values() if v > 0), reverse=True)
acc, k = 0.0, 0
for v in grew:
    acc += v
    k += 1
    if acc >= sum(grew) / 2:
        break
print(f"{len(grew)} kernel symbols grew, by {sum(grew):.2f} us/req in all; "
      f"the {k} largest make half of that")
PY
