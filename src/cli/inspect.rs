//! The commands that look at a config without serving it: `check` and `explain`.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::Method;

/// How long `explain` waits for the key sets of remote issuers.
const EXPLAIN_KEY_FETCH_TIMEOUT_SECS: u64 = 10;

/// `tollgate check FILE [--deny-warnings]`.
pub(super) fn check(file: &Path, deny_warnings: bool) -> ExitCode {
    match crate::config::load(file) {
        Ok(s) => {
            // Remote key sets are fetched by `serve`, not by `check`.
            let keys: usize = s
                .issuers
                .iter()
                .map(|i| i.keys.current().0.keys.len())
                .sum();
            let remote = s
                .issuers
                .iter()
                .filter(|i| i.keys.remote().is_some())
                .count();
            let remote = if remote > 0 {
                format!(
                    " (+ {remote} remote key set{}, fetched by serve)",
                    if remote == 1 { "" } else { "s" }
                )
            } else {
                String::new()
            };
            println!(
                "{}: ok: {} routes, {} issuers, {} keys{remote}",
                file.display(),
                s.routes.len(),
                s.issuers.iter().count(),
                keys
            );
            for w in &s.warnings {
                eprintln!("{w}");
            }
            let n = s.warnings.len();
            if n > 0 {
                eprintln!(
                    "{}: {n} warning{}",
                    file.display(),
                    if n == 1 { "" } else { "s" }
                );
            }
            if n > 0 && deny_warnings {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            let n = e.diagnostics.len();
            eprintln!(
                "{}: {n} error{}",
                file.display(),
                if n == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
    }
}

/// `tollgate explain [--config FILE] METHOD PATH [--token TOKEN]`: exit 0 allow, 1 deny,
/// 2 when it cannot tell (bad config, bad method, keys unavailable).
pub(super) fn explain(config: &Path, method: &str, path: &str, token: Option<&str>) -> ExitCode {
    let cannot = ExitCode::from(2);
    let snapshot = match crate::config::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return cannot;
        }
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        eprintln!("tollgate: `{method}` is not an HTTP method");
        return cannot;
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("tollgate: cannot start the runtime");
        return cannot;
    };
    let explanation = rt.block_on(async {
        if token.is_some() {
            // Remote issuers: fetch their keys first, as `serve` does at start.
            snapshot.start_remote_keys();
            let deadline = Instant::now() + Duration::from_secs(EXPLAIN_KEY_FETCH_TIMEOUT_SECS);
            while !snapshot.keys_ready() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if !snapshot.keys_ready() {
                eprintln!("tollgate: warning: some remote key sets could not be fetched");
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        crate::explain::explain(&snapshot, &method, path, token, now).await
    });
    print!("{}", explanation.text);
    if explanation.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
