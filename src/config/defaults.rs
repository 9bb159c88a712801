//! Named defaults, each with its unit and the reason for its value.

/// Address of the data plane when `listen` is absent.
pub const LISTEN_ADDR: &str = "127.0.0.1:8080";
/// `realm` in `WWW-Authenticate` challenges (RFC 6750 §3).
pub const REALM: &str = "tollgate";
/// Clock-skew allowance for `exp`, `nbf` and `iat`; small, because a longer one extends the
/// life of every stolen token (RFC 8725 §3.10 leaves it to the deployment).
pub const LEEWAY_SECS: u64 = 30;
/// Upper bound accepted for `leeway_secs`: more than five minutes hides a broken clock.
pub const MAX_LEEWAY_SECS: u64 = 300;
/// Time a client has to send the full request head; stops slowloris-style connection hoarding.
pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Largest request head (request line + headers) over HTTP/1.1; hyper answers 431 above it.
pub const MAX_REQUEST_HEADER_BYTES: usize = 64 * 1024;
/// Smallest accepted value for the above: hyper's own read buffer cannot be smaller.
pub const MIN_REQUEST_HEADER_BYTES: usize = 8 * 1024;
/// Largest request body forwarded upstream; 413 above it.
pub const MAX_REQUEST_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Open client connections at most; further connections wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 25_000;
/// HTTP/2 streams a client may open at once on one connection (RFC 9113 §5.1.2).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Largest HTTP/2 header list (RFC 9113 §6.5.2, SETTINGS_MAX_HEADER_LIST_SIZE).
pub const H2_MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// Per-route upstream deadline for the response head; 504 after it.
pub const ROUTE_TIMEOUT_MS: u64 = 30_000;
/// TCP connect deadline to an upstream; a dead host must fail fast with 502.
pub const UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long an idle pooled upstream connection is kept; below common upstream keep-alive
/// timeouts (nginx: 75 s) so we close first and never write into a closing socket.
pub const UPSTREAM_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Largest bearer token accepted (issue contract: 8 KiB); bigger tokens are rejected before
/// any base64 or JSON work.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Upper bound of the remote JWKS refresh interval (`Cache-Control: max-age` is honoured
/// below it).
pub const JWKS_REFRESH_SECS: u64 = 300;
/// Lower bound of the refresh interval: an IdP sending `max-age=0` must not be polled in a
/// loop (lowered to `jwks_refresh_secs` when that is smaller).
pub const JWKS_MIN_REFRESH_SECS: u64 = 30;
/// At most one fetch per this many seconds per issuer for unknown `kid`s.
pub const JWKS_COOLDOWN_SECS: u64 = 30;
/// How long the last good key set keeps serving while the IdP fails.
pub const JWKS_MAX_STALE_SECS: u64 = 86_400;
/// Default size of the verified-token cache.
pub const TOKEN_CACHE_MAX_ENTRIES: usize = 100_000;
/// Largest JWK Set file accepted.
pub const MAX_JWKS_FILE_BYTES: u64 = 1024 * 1024;
/// Smallest RSA modulus accepted (RFC 8725 §3.5 / NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;
/// Time in-flight requests get to finish after SIGTERM/SIGINT before the process exits;
/// below Kubernetes' default terminationGracePeriodSeconds (30 s) minus a margin is the
/// operator's call, so the default matches the issue contract.
pub const SHUTDOWN_GRACE_SECS: u64 = 30;
/// Longest accepted shutdown grace.
pub const MAX_SHUTDOWN_GRACE_SECS: u64 = 3600;
/// Largest certificate, key or CA file read.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;
