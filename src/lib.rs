//! tollgate: an API gateway that validates OAuth2 JWT access tokens once, at the edge.
//!
//! The library takes a validated [`state::Snapshot`] and serves it; the binary owns the CLI
//! and the config file.
// Audited exceptions: `heap::release` calls glibc's malloc_trim, `parsed_value` (see there),
// `upstream::batched_write::uring` hands buffers to io_uring, and `auth::ecdsa` calls aws-lc's
// ECDSA verification directly (see there).
#![deny(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod correlation;
pub mod demo;
pub mod devkeys;
pub mod error;
pub mod explain;
pub mod forward;
pub mod headers;
mod heap;
pub mod metrics;
mod parsed_value;
mod prehashed;
pub mod proxy;
mod readiness;
mod recycle;
pub mod reload;
pub mod routes;
pub mod sanitize;
pub mod server;
pub mod state;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::auth::remote::RemoteRegistry;
use crate::proxy::{Connection, Gateway};
use crate::reload::Reloader;
use crate::state::{SharedState, Snapshot};

impl server::Handler for Gateway {
    fn call(
        self: Arc<Self>,
        req: http::Request<body::RequestBody>,
        conn: Connection,
    ) -> impl std::future::Future<Output = http::Response<body::Body>> + Send {
        // The request path's own future, not one wrapped around it: it is kilobytes, and
        // each wrapper is one more copy of it per request. It answers in hyper's type.
        self.handle(headers::Inbound::from(req), conn)
    }

    fn call_lane(
        self: Arc<Self>,
        req: headers::Inbound<headers::RawHeaders>,
        conn: Connection,
    ) -> impl std::future::Future<Output = headers::Reply<headers::RawHeaders>> + Send {
        // The request path's own future, not one wrapped around it: it is kilobytes, and
        // each wrapper is one more copy of it per request.
        self.handle(req, conn)
    }

    fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.state.snapshot().tls.clone()
    }

    fn connection_opened(&self) -> Option<metrics::ConnectionGuard> {
        Some(self.state.metrics().connection_opened())
    }

    fn connection_parked(&self, parked: bool) {
        self.state.metrics().connection_parked(parked);
    }
}

/// A gateway running in this process (the `serve` command, the demo, and tests).
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub state: Arc<SharedState>,
    /// Present when started from a file: the one path every reload trigger goes through.
    pub reloader: Option<Arc<Reloader>>,
    /// Shutdown stage: 0 serving, 1 data plane stops, 2 admin stops.
    shutdown: watch::Sender<u8>,
    data_plane: JoinHandle<()>,
    admin: Option<JoinHandle<()>>,
    watcher: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to the config's
    /// `shutdown_grace_secs`), and returns. The admin listener outlives the drain, so probes
    /// see `/-/ready` answer 503 while requests finish, rather than a refused connection.
    pub async fn shutdown(self) {
        self.state.set_ready(false);
        if let Some(w) = &self.watcher {
            w.abort();
        }
        let _ = self.shutdown.send(1);
        let _ = self.data_plane.await;
        let _ = self.shutdown.send(2);
        if let Some(admin) = self.admin {
            let _ = admin.await;
        }
    }
}

/// Loads `path`, serves it, and reloads it on change when `watch` is set (SIGHUP is the
/// binary's business: signals are process-wide).
pub async fn start_from_file(path: &Path, watch: bool) -> anyhow::Result<Running> {
    let registry = RemoteRegistry::default();
    let snapshot = config::load_with(path, &registry).map_err(|e| anyhow::anyhow!("{e}"))?;
    for w in &snapshot.warnings {
        tracing::warn!("{w}");
    }
    let mut running = start_inner(snapshot, Some(path.to_path_buf()), registry).await?;
    if watch {
        if let Some(r) = &running.reloader {
            running.watcher = Some(reload::watch(Arc::clone(r)).map_err(anyhow::Error::msg)?);
        }
    }
    Ok(running)
}

/// Binds the listeners of an in-memory `snapshot` and starts serving (no reloads).
pub async fn start(snapshot: Snapshot) -> std::io::Result<Running> {
    start_inner(snapshot, None, RemoteRegistry::default()).await
}

async fn start_inner(
    snapshot: Snapshot,
    file: Option<PathBuf>,
    registry: RemoteRegistry,
) -> std::io::Result<Running> {
    let listener = server::bind(snapshot.listen, "listen").await?;
    let admin_listener = match snapshot.admin {
        Some(a) => Some(server::bind(a, "admin").await?),
        None => None,
    };
    let addr = listener.local_addr()?;
    let admin_addr = admin_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let limits = snapshot.limits.clone();
    // The grace is read at start: a reload that changes it applies to the next start.
    let grace = snapshot.shutdown_grace;
    // Remote key sets start fetching now; `/-/ready` waits for them.
    snapshot.start_remote_keys();
    let state = SharedState::new(snapshot, registry);
    let reloader = file.map(|f| Reloader::new(f, Arc::clone(&state)));
    let gateway = Arc::new(Gateway::new(Arc::clone(&state)));
    let (tx, rx) = watch::channel(0u8);
    let stage = |mut rx: watch::Receiver<u8>, at: u8| async move {
        let _ = rx.wait_for(|s| *s >= at).await;
    };
    let data_plane = tokio::spawn(server::serve(
        listener,
        gateway,
        limits.clone(),
        stage(rx.clone(), 1),
        grace,
    ));
    let admin = admin_listener.map(|l| {
        let admin = Arc::new(Admin {
            state: Arc::clone(&state),
            reloader: reloader.clone(),
        });
        tokio::spawn(server::serve(l, admin, limits, stage(rx, 2), grace))
    });
    // Both listeners are bound and a valid config is active.
    state.set_ready(true);
    Ok(Running {
        addr,
        admin_addr,
        state,
        reloader,
        shutdown: tx,
        data_plane,
        admin,
        watcher: None,
    })
}
