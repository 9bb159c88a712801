//! Hot reload: every trigger (a file change, SIGHUP, `POST /-/reload`) goes through
//! [`Reloader::reload`], which parses, validates and builds a whole new snapshot off to the
//! side (re-reading key files and certificates), then swaps it in at once. On any error the
//! running snapshot stays and the error is kept for `/-/config`. Listeners stay bound, and
//! requests in flight finish on the snapshot they started with.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::state::{SharedState, Snapshot};

/// Delay between the first file event of a burst and the reload: editors and the kubelet
/// write in bursts (temp file, rename, chmod) and one reload per burst is enough. A fixed
/// delay rather than "wait for quiet": a file rewritten continuously must still reload.
pub const RELOAD_DEBOUNCE_MS: u64 = 100;

/// What asked for a reload, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    File,
    Signal,
    Admin,
}

/// Reloads one config file into one shared state.
pub struct Reloader {
    path: PathBuf,
    state: Arc<SharedState>,
    /// Reloads run one at a time: two racing reloads could otherwise swap in the older file.
    serial: tokio::sync::Mutex<()>,
    /// Signalled after every successful reload, whatever its trigger, so the file watcher
    /// can start watching directories the new config added.
    changed: tokio::sync::Notify,
}

impl Reloader {
    pub fn new(path: PathBuf, state: Arc<SharedState>) -> Arc<Self> {
        Arc::new(Reloader {
            path,
            state,
            serial: tokio::sync::Mutex::new(()),
            changed: tokio::sync::Notify::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the file and swaps it in; on error keeps the running config and returns the
    /// error text (`file:line:col: sentence` lines).
    pub async fn reload(&self, trigger: Trigger) -> Result<Arc<Snapshot>, String> {
        let _one_at_a_time = self.serial.lock().await;
        let path = self.path.clone();
        let registry = self.state.remote_registry().clone();
        let loaded =
            tokio::task::spawn_blocking(move || crate::config::load_with(&path, &registry)).await;
        let result = match loaded {
            Ok(Ok(snapshot)) => Ok(snapshot),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the reload task failed: {e}")),
        };
        match result {
            Ok(new) => {
                let old = self.state.snapshot();
                warn_about_restart_only_changes(&old, &new);
                for w in &new.warnings {
                    tracing::warn!(?trigger, "{w}");
                }
                // New remote issuers start fetching now; requests that need their keys
                // first wait for that fetch (single flight) instead of failing.
                new.start_remote_keys();
                let new = self.state.replace(new);
                self.state.metrics().reloaded(true);
                self.state.set_last_error(None);
                self.changed.notify_one();
                tracing::info!(?trigger, sha256 = %new.sha256, routes = new.routes.len(), "config reloaded");
                Ok(new)
            }
            Err(e) => {
                for line in e.lines() {
                    tracing::error!(
                        ?trigger,
                        "config rejected, the running config stays: {line}"
                    );
                }
                self.state.metrics().reloaded(false);
                self.state.set_last_error(Some(e.clone()));
                Err(e)
            }
        }
    }
}

/// Listeners and connection-level settings are fixed at start: say so instead of silently
/// ignoring a change.
fn warn_about_restart_only_changes(old: &Snapshot, new: &Snapshot) {
    if old.listen != new.listen || old.admin != new.admin {
        tracing::warn!(
            "`listen`/`admin` changed: the listeners stay where they are until a restart"
        );
    }
    if old.shutdown_grace != new.shutdown_grace {
        tracing::warn!("`shutdown_grace_secs` changed: it applies from the next start");
    }
    // The body cap is read per request; every other limit is wired into the listeners and
    // the upstream pools at start.
    let mut old_limits = old.limits.clone();
    old_limits.max_request_body_bytes = new.limits.max_request_body_bytes;
    if old_limits != new.limits {
        tracing::warn!(
            "`limits` changed: all but max_request_body_bytes apply from the next start"
        );
    }
    if old.tls.is_some() != new.tls.is_some() {
        tracing::warn!(
            "`tls` was added or removed: new connections switch between HTTPS and plaintext now"
        );
    }
}

/// Directories to watch: the config's own, and every directory a referenced file lives in.
/// Watching directories (not files) sees editors' write-then-rename and Kubernetes
/// ConfigMap `..data` symlink swaps, which replace the file rather than write to it.
fn watched_dirs(config: &Path, snapshot: &Snapshot) -> HashSet<PathBuf> {
    std::iter::once(config)
        .chain(snapshot.inputs.iter().map(PathBuf::as_path))
        .filter_map(|p| p.parent())
        .map(|d| {
            if d.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                d.to_path_buf()
            }
        })
        .collect()
}

/// File names whose change matters: the config, every referenced file, and `..data`.
fn watched_names(config: &Path, snapshot: &Snapshot) -> HashSet<std::ffi::OsString> {
    std::iter::once(config)
        .chain(snapshot.inputs.iter().map(PathBuf::as_path))
        .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
        .chain(std::iter::once(std::ffi::OsString::from("..data")))
        .collect()
}

/// The directories being watched and the file names that matter in them.
#[derive(Default)]
struct WatchSet {
    dirs: HashSet<PathBuf>,
    names: HashSet<std::ffi::OsString>,
}

impl WatchSet {
    /// Starts watching directories new to this snapshot (a reload may add key files).
    fn update(
        &mut self,
        watcher: &mut notify::RecommendedWatcher,
        config: &Path,
        snapshot: &Snapshot,
    ) {
        self.names = watched_names(config, snapshot);
        for dir in watched_dirs(config, snapshot) {
            if self.dirs.contains(&dir) {
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.dirs.insert(dir);
                }
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot watch"),
            }
        }
    }
}

/// Watches the files behind the running config and reloads on change, until the returned
/// task is aborted.
pub fn watch(reloader: Arc<Reloader>) -> Result<tokio::task::JoinHandle<()>, String> {
    let (tx, mut rx) = mpsc::unbounded_channel::<notify::Event>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let _ = tx.send(event);
        }
    })
    .map_err(|e| format!("cannot watch the config directory: {e}"))?;
    let mut set = WatchSet::default();
    set.update(&mut watcher, reloader.path(), &reloader.state.snapshot());
    if set.dirs.is_empty() {
        return Err("cannot watch the config directory".into());
    }
    Ok(tokio::spawn(async move {
        // The watcher lives as long as this task.
        let mut watcher = watcher;
        loop {
            let event = tokio::select! {
                e = rx.recv() => match e {
                    Some(e) => e,
                    None => return,
                },
                () = reloader.changed.notified() => {
                    // A reload by SIGHUP or the admin API may name new files.
                    set.update(&mut watcher, reloader.path(), &reloader.state.snapshot());
                    continue;
                }
            };
            if !is_relevant(&event, &set.names) {
                continue;
            }
            // Debounce: let the burst finish, then drop what arrived meanwhile.
            tokio::time::sleep(Duration::from_millis(RELOAD_DEBOUNCE_MS)).await;
            while rx.try_recv().is_ok() {}
            let _ = reloader.reload(Trigger::File).await;
        }
    }))
}

fn is_relevant(event: &notify::Event, names: &HashSet<std::ffi::OsString>) -> bool {
    use notify::event::{AccessKind, AccessMode};
    let kind_matters = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    kind_matters
        && event
            .paths
            .iter()
            .filter_map(|p| p.file_name())
            .any(|n| names.contains(n) || n.to_string_lossy().starts_with("..data"))
}
