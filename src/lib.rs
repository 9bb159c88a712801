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
pub mod routes;
pub mod sanitize;
pub mod server;
pub mod state;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::proxy::{Connection, Gateway};
use crate::state::{SharedState, Snapshot};

/// How long in-flight requests may run after a shutdown signal.
pub const SHUTDOWN_GRACE_SECS: u64 = 30;

impl server::Handler for Gateway {
    async fn call(
        self: Arc<Self>,
        req: http::Request<hyper::body::Incoming>,
        conn: Connection,
    ) -> http::Response<body::Body> {
        self.handle(req, conn).await
    }
}

/// A gateway running in this process (the `serve` command, the demo, and tests).
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub state: Arc<SharedState>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to the grace), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds the listeners of `snapshot` and starts serving.
pub async fn start(snapshot: Snapshot) -> std::io::Result<Running> {
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
    let state = SharedState::new(snapshot);
    let gateway = Arc::new(Gateway::new(Arc::clone(&state)));
    let (tx, rx) = watch::channel(false);
    let grace = Duration::from_secs(SHUTDOWN_GRACE_SECS);
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
            ready: AtomicBool::new(false),
        });
        admin.ready.store(true, Ordering::Release);
        tasks.push(tokio::spawn(server::serve(
            l,
            admin,
            limits,
            stopped(rx),
            grace,
        )));
    }
    Ok(Running {
        addr,
        admin_addr,
        state,
        shutdown: tx,
        tasks,
    })
}
