#!/usr/bin/env bash
# Memory of tollgate idle and with N open keep-alive connections (issue 5: N = 10,000,
# target <= 64 MiB). Each connection sends one authenticated request through the gateway to
# an nginx upstream, reads the answer, then stays open and idle. Loopback only; bounded.
#
#   bash bench/connections.sh            # N=10000
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${N:-10000}

# shellcheck source=bench/lib.sh
. bench/lib.sh
install_missing nginx:nginx-light
cargo build --release --locked -q
BIN=${BIN:-$PWD/target/release/tollgate}
ulimit -n "$(ulimit -Hn)"  # the client and the gateway each hold N sockets

W=$(mktemp -d /tmp/tollgate-conns.XXXXXX)
GW_PID=
cleanup() {
    [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null || true
    [ -f "$W/nginx.pid" ] && kill "$(cat "$W/nginx.pid")" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
UP=$(free_port); GW=$(free_port)

cat > "$W/nginx.conf" <<EOF
worker_processes 1;
pid $W/nginx.pid;
error_log $W/nginx-error.log warn;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$UP; location / { return 200 "ok\n"; } } }
EOF
nginx -c "$W/nginx.conf" -p "$W"

"$BIN" keygen --alg RS256 --kid c --out "$W/keys" >/dev/null
TOKEN=$("$BIN" token --key "$W/keys/c.pem" --kid c --iss https://idp.bench.test --aud orders-api --scope orders:read)
cat > "$W/routes.yaml" <<EOF
listen: 127.0.0.1:$GW
limits:
  # Idle keep-alive connections are closed after the header read timeout (hyper runs it
  # while waiting for the next request): long enough to hold them while measuring.
  header_read_timeout_ms: 120000
issuers:
  - id: c
    issuer: https://idp.bench.test
    audiences: [orders-api]
    jwks_file: $W/keys/c.jwks.json
routes:
  - id: orders
    path: /api/orders
    upstream: http://127.0.0.1:$UP
    scopes: [orders:read]
    claims_to_headers: {sub: X-User-Id}
EOF
# SERVE_ARGS: extra `serve` flags, e.g. "--worker-threads 1".
RUST_LOG=warn "$BIN" serve --config "$W/routes.yaml" --no-watch ${SERVE_ARGS:-} 2>"$W/gw.log" &
GW_PID=$!
wait_http "$GW" || true
rss() { awk '/VmRSS/ {print $2}' "/proc/$GW_PID/status"; }
sleep 0.5
IDLE=$(rss)

python3 - "$GW" "$N" "$TOKEN" "$GW_PID" <<'EOF'
import asyncio, sys
port, n, token, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
req = (f"GET /api/orders/1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\r\n").encode()

async def one(sem, held):
    async with sem:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(req)
        await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
        await r.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"unexpected answer: {head[:40]!r}")
        held.append(w)

async def main():
    held, sem = [], asyncio.Semaphore(500)
    await asyncio.wait_for(asyncio.gather(*(one(sem, held) for _ in range(n))), timeout=120)
    # tollgate parks HTTP/1 connections idle for 0.5 s (src/server/idle.rs) and returns the
    # freed memory to the OS 2 s after parkings (src/heap.rs): read after 1 s and after 6 s.
    for settle in (1, 5):
        await asyncio.sleep(settle)
        rss = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1]
        print(f"{len(held)} open keep-alive connections, each after one 200, "
              f"{'6' if settle == 5 else '1'} s later: tollgate RSS {rss} KiB")
    for w in held:
        w.close()

asyncio.run(main())
EOF
echo "idle: tollgate RSS $IDLE KiB"
