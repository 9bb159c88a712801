//! `tollgate demo`: the shipped `routes.yaml`, served for real, with nothing external.
//!
//! The file is loaded as it is, then patched before compilation: every upstream points at a
//! built-in echo server on an ephemeral loopback port, every issuer's keys are a fresh
//! in-memory key (its public JWK Set written to a temporary file), and the admin listener
//! moves to an ephemeral port. A development OAuth2 token endpoint signs with the same key.

pub mod echo;
pub mod idp;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jsonwebtoken::Algorithm;
use tokio::sync::watch;

use crate::devkeys::{self, TokenSpec};
use crate::state::Limits;

/// Demo client credentials for the token endpoint.
pub const DEMO_CLIENT_ID: &str = "demo-client";
pub const DEMO_CLIENT_SECRET: &str = "demo-secret";
/// The demo's key id.
const DEMO_KID: &str = "demo-key";
/// Lifetime of the tokens printed in the curl lines.
const PRINTED_TOKEN_TTL_SECS: u64 = 3600;

/// Removes the demo's temporary directory when the demo ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every issuer trusts the demo's in-memory key instead of whatever the file names.
fn use_demo_key(raw: &mut crate::config::raw::RawConfig, jwks_file: &str) {
    for i in &mut raw.issuers {
        i.jwks_file = Some(jwks_file.to_string());
        i.jwks_url = None;
        i.discovery = None;
        i.jwks_refresh_secs = None;
        i.jwks_cooldown_secs = None;
        i.jwks_max_stale_secs = None;
        i.ca_file = None;
        i.ready_without_keys = None;
        i.algorithms = None;
    }
}

/// A listener on an ephemeral loopback port.
async fn loopback_listener(what: &str) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = crate::server::bind(SocketAddr::from(([127, 0, 0, 1], 0)), what).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Serves a helper on `listener` until the demo stops.
fn serve_helper<H: crate::server::Handler>(
    listener: tokio::net::TcpListener,
    handler: H,
    stop: &watch::Receiver<bool>,
) {
    let mut stop = stop.clone();
    tokio::spawn(crate::server::serve(
        listener,
        Arc::new(handler),
        Limits::default(),
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
        Duration::from_secs(1),
    ));
}

/// Runs the demo until Ctrl-C / SIGTERM.
pub async fn run(config: &Path, listen: Option<&str>) -> anyhow::Result<()> {
    let source = crate::config::read_source(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let key = devkeys::generate(Algorithm::RS256, DEMO_KID).map_err(anyhow::Error::msg)?;
    let dir = TempDir(std::env::temp_dir().join(format!("tollgate-demo-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let jwks_path = dir.0.join("demo.jwks.json");
    std::fs::write(&jwks_path, devkeys::jwks_json([&key]))?;

    let jwks_file = jwks_path.to_string_lossy().into_owned();
    // Read the issuer and upstreams the file names, to start matching helpers.
    let base_dir = config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut upstreams: BTreeMap<String, String> = BTreeMap::new();
    let mut issuer = None;
    crate::config::load_patched(&source, config, &base_dir, |raw| {
        use_demo_key(raw, &jwks_file);
        for r in &raw.routes {
            if let Some(u) = &r.upstream {
                upstreams.insert(u.clone(), String::new());
            }
        }
        issuer = raw
            .issuers
            .first()
            .and_then(|i| Some((i.issuer.clone()?, i.audiences.as_ref()?.first()?.clone())));
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (iss, aud) =
        issuer.context("the config has no issuer with an audience to mint tokens for")?;

    let mut echo_by_authority: HashMap<String, SocketAddr> = HashMap::new();
    for (url, local) in upstreams.iter_mut() {
        let uri: http::Uri = url.parse().context("upstream URL")?;
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let addr = match echo_by_authority.get(&authority) {
            Some(a) => *a,
            None => {
                let (listener, a) = loopback_listener("demo upstream").await?;
                let name = authority.clone();
                serve_helper(listener, echo::Echo { name }, &stop_rx);
                echo_by_authority.insert(authority.clone(), a);
                a
            }
        };
        *local = format!("http://{addr}{}", uri.path().trim_end_matches('/'));
    }

    let idp_listener_addr = {
        let clients = HashMap::from([(
            DEMO_CLIENT_ID.to_string(),
            idp::Client {
                secret: DEMO_CLIENT_SECRET.to_string(),
                scopes: vec!["orders:read".into(), "orders:write".into()],
            },
        )]);
        // The IdP needs its own URL for discovery; bind first, then build it.
        let (listener, addr) = loopback_listener("demo idp").await?;
        let idp = idp::Idp {
            key: devkeys::from_pem(key.private_pem.as_bytes(), DEMO_KID, Algorithm::RS256)
                .map_err(anyhow::Error::msg)?,
            issuer: iss.clone(),
            audience: aud.clone(),
            base_url: format!("http://{addr}"),
            clients,
        };
        serve_helper(listener, idp, &stop_rx);
        addr
    };

    let snapshot = crate::config::load_patched(&source, config, &base_dir, |raw| {
        if let Some(l) = listen {
            raw.listen = Some(l.to_string());
        }
        raw.admin = Some("127.0.0.1:0".into());
        use_demo_key(raw, &jwks_file);
        for r in &mut raw.routes {
            if let Some(u) = r.upstream.as_mut().and_then(|u| upstreams.get(u)) {
                r.upstream = Some(u.clone());
            }
        }
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let running = crate::start(snapshot).await?;

    let mint = |scope: &str| {
        devkeys::mint(
            &key,
            &TokenSpec {
                iss: iss.clone(),
                aud: vec![aud.clone()],
                sub: "demo-user".into(),
                scope: Some(scope.into()),
                client_id: DEMO_CLIENT_ID.into(),
                ttl: Duration::from_secs(PRINTED_TOKEN_TTL_SECS),
                extra: Default::default(),
            },
        )
        .map_err(anyhow::Error::msg)
    };
    let read_token = mint("orders:read")?;
    let gw = format!("http://{}", running.addr);
    let admin = running
        .admin_addr
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    let idp = format!("http://{idp_listener_addr}");
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "tollgate demo: gateway on {gw}, admin on {admin}, dev token endpoint on {idp}"
    )?;
    writeln!(
        out,
        "(tokens below are signed by a key that lives only in this process; Ctrl-C stops the demo)"
    )?;
    writeln!(out)?;
    writeln!(out, "# 200: a token with scope orders:read may read orders (see X-User-Id in the echo, and no Authorization)")?;
    writeln!(
        out,
        "curl -i -H 'Authorization: Bearer {read_token}' {gw}/api/orders/42"
    )?;
    writeln!(out, "# 401: no token")?;
    writeln!(out, "curl -i {gw}/api/orders/42")?;
    writeln!(
        out,
        "# 403: the same token may not create orders (orders:write is required)"
    )?;
    writeln!(
        out,
        "curl -i -X POST -H 'Authorization: Bearer {read_token}' {gw}/api/orders"
    )?;
    writeln!(
        out,
        "# get a token yourself, OAuth2 client credentials grant (RFC 6749 §4.4):"
    )?;
    writeln!(out, "curl -s -u {DEMO_CLIENT_ID}:{DEMO_CLIENT_SECRET} -d grant_type=client_credentials -d 'scope=orders:read orders:write' {idp}/oauth2/token")?;
    writeln!(out, "# public, no token needed:")?;
    writeln!(out, "curl -i {gw}/catalog/items")?;
    out.flush()?;
    drop(out);

    crate::cli::shutdown_signal().await;
    let _ = stop_tx.send(true);
    running.shutdown().await;
    drop(dir);
    Ok(())
}
