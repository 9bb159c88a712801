//! tollgate: an API gateway that validates OAuth2 JWT access tokens once, at the edge.
//!
//! The library takes a validated [`state::Snapshot`] and serves it; the binary owns the CLI
//! and the config file.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod demo;
pub mod devkeys;
pub mod error;
pub mod forward;
pub mod proxy;
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
use crate::proxy::{Connection, Gateway};
use crate::reload::Reloader;
use crate::state::{SharedState, Snapshot};

impl server::Handler for Gateway {
    async fn call(
        self: Arc<Self>,
        req: http::Request<hyper::body::Incoming>,
        conn: Connection,
    ) -> http::Response<body::Body> {
        self.handle(req, conn).await
    }

    fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.state.snapshot().tls.clone()
    }
}

/// A gateway running in this process (the `serve` command, the demo, and tests).
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub state: Arc<SharedState>,
    /// Present when started from a file: the one path every reload trigger goes through.
    pub reloader: Option<Arc<Reloader>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    watcher: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to the config's
    /// `shutdown_grace_secs`), and returns.
    pub async fn shutdown(self) {
        // Not ready any more: load balancers stop sending while requests drain.
        self.state.set_ready(false);
        if let Some(w) = &self.watcher {
            w.abort();
        }
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Loads `path`, serves it, and reloads it on change when `watch` is set (SIGHUP is the
/// binary's business: signals are process-wide).
pub async fn start_from_file(path: &Path, watch: bool) -> anyhow::Result<Running> {
    let snapshot = config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut running = start_inner(snapshot, Some(path.to_path_buf())).await?;
    if watch {
        if let Some(r) = &running.reloader {
            running.watcher = Some(reload::watch(Arc::clone(r)).map_err(anyhow::Error::msg)?);
        }
    }
    Ok(running)
}

/// Binds the listeners of an in-memory `snapshot` and starts serving (no reloads).
pub async fn start(snapshot: Snapshot) -> std::io::Result<Running> {
    start_inner(snapshot, None).await
}

async fn start_inner(snapshot: Snapshot, file: Option<PathBuf>) -> std::io::Result<Running> {
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
    let state = SharedState::new(snapshot);
    let reloader = file.map(|f| Reloader::new(f, Arc::clone(&state)));
    let gateway = Arc::new(Gateway::new(Arc::clone(&state)));
    let (tx, rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut tasks = vec![tokio::spawn(server::serve(
        listener,
        gateway,
        limits.clone(),
        stopped(rx.clone()),
        grace,
    ))];
    if let Some(l) = admin_listener {
        let admin = Arc::new(Admin {
            state: Arc::clone(&state),
            reloader: reloader.clone(),
        });
        tasks.push(tokio::spawn(server::serve(
            l,
            admin,
            limits,
            stopped(rx),
            grace,
        )));
    }
    // Both listeners are bound and a valid config is active.
    state.set_ready(true);
    Ok(Running {
        addr,
        admin_addr,
        state,
        reloader,
        shutdown: tx,
        tasks,
        watcher: None,
    })
}
