//! The command line: `serve`, `check`, `explain`, `schema`, `keygen`, `token`, `demo`.
//! Exit codes: 0 success, 1 invalid config or failed command, 2 usage error (clap);
//! `explain` has its own (0 allow, 1 deny, 2 cannot evaluate).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::devkeys::{self, TokenSpec};

mod inspect;

#[derive(Parser, Debug)]
#[command(
    name = "tollgate",
    version,
    about = "An API gateway that validates OAuth2 JWT access tokens once, at the edge"
)]
pub struct Cli {
    /// Log format on stderr; the level comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// Do not watch the config for changes (SIGHUP and POST /-/reload still reload).
        #[arg(long)]
        no_watch: bool,
        /// Runtime worker threads (default: one per CPU core). `1` pins the gateway's
        /// request work to one thread, as the one-core benchmark comparison needs.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        worker_threads: Option<u16>,
        /// Write each upstream request head with its own send(2) instead of one io_uring
        /// submission per turn of the event loop (used anyway where io_uring is unavailable).
        #[arg(long)]
        no_io_uring: bool,
    },
    /// Validate a config file (YAML, semantics, key files) and print warnings about likely
    /// mistakes. Exit 0 valid, 1 invalid (or warnings with --deny-warnings).
    Check {
        #[arg(default_value = "routes.yaml")]
        file: PathBuf,
        /// Fail (exit 1) when the file has warnings.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Show which route a request matches and why, the upstream URL it would call, and with
    /// --token the decision and its exact reason. Exit 0 allow, 1 deny, 2 config error.
    Explain {
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// Request method, e.g. GET.
        method: String,
        /// Request path, with an optional query: /api/orders/7?x=1.
        path: String,
        /// A bearer token to verify as the gateway would (keys of remote issuers are fetched).
        #[arg(long)]
        token: Option<String>,
    },
    /// Print the JSON Schema of routes.yaml (shipped as deploy/routes.schema.json).
    Schema,
    /// Write a development key pair: DIR/KID.pem (private) and DIR/KID.jwks.json (public).
    Keygen {
        #[arg(long, value_enum, default_value_t = KeyAlg::RS256)]
        alg: KeyAlg,
        #[arg(long)]
        kid: String,
        #[arg(long)]
        out: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Print a signed access token (RFC 9068 `at+jwt`) for development and load tests.
    Token {
        /// PEM private key (as written by `keygen`).
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        kid: String,
        /// Signing algorithm; default: inferred from the key (RSA → RS256, P-256 → ES256).
        #[arg(long)]
        alg: Option<String>,
        #[arg(long)]
        iss: String,
        /// Audience; repeat for several.
        #[arg(long, required = true)]
        aud: Vec<String>,
        #[arg(long, default_value = "dev-user")]
        sub: String,
        /// Space-delimited scopes.
        #[arg(long)]
        scope: Option<String>,
        #[arg(long, default_value = "tollgate-cli")]
        client_id: String,
        /// Lifetime: 90s, 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Extra claim NAME=VALUE; VALUE is JSON if it parses, else a string. Repeatable.
        #[arg(long = "claim")]
        claims: Vec<String>,
    },
    /// Run the gateway on the shipped routes.yaml with built-in echo upstreams, an in-memory
    /// key and a development OAuth2 token endpoint; prints ready-to-run curl lines.
    Demo {
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// Data-plane address (default: the file's `listen`).
        #[arg(long)]
        listen: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[allow(clippy::upper_case_acronyms)]
pub enum KeyAlg {
    #[value(name = "RS256")]
    RS256,
    #[value(name = "ES256")]
    ES256,
    #[value(name = "EdDSA")]
    EdDSA,
}

impl KeyAlg {
    fn algorithm(self) -> Algorithm {
        match self {
            KeyAlg::RS256 => Algorithm::RS256,
            KeyAlg::ES256 => Algorithm::ES256,
            KeyAlg::EdDSA => Algorithm::EdDSA,
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check {
            file,
            deny_warnings,
        } => return inspect::check(&file, deny_warnings),
        Command::Explain {
            config,
            method,
            path,
            token,
        } => return inspect::explain(&config, &method, &path, token.as_deref()),
        Command::Schema => {
            print!("{}", crate::config::schema::json_schema());
            return ExitCode::SUCCESS;
        }
        Command::Serve {
            config,
            no_watch,
            worker_threads,
            no_io_uring,
        } => {
            init_logging(cli.log_format);
            batched_writes(!no_io_uring);
            runtime(worker_threads).and_then(|rt| rt.block_on(serve(&config, !no_watch)))
        }
        Command::Demo { config, listen } => {
            init_logging(cli.log_format);
            runtime(None).and_then(|rt| rt.block_on(crate::demo::run(&config, listen.as_deref())))
        }
        Command::Keygen {
            alg,
            kid,
            out,
            force,
        } => keygen(alg, &kid, &out, force),
        Command::Token {
            key,
            kid,
            alg,
            iss,
            aud,
            sub,
            scope,
            client_id,
            ttl,
            claims,
        } => token(
            &key,
            &kid,
            alg.as_deref(),
            iss,
            aud,
            sub,
            scope,
            client_id,
            &ttl,
            &claims,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Settles how upstream request heads are written (`upstream::batched_write`); the
/// "serving" line says which way was taken, and this one why io_uring was not.
fn batched_writes(wanted: bool) {
    if let Some(why) = crate::upstream::batched_write::configure(wanted) {
        tracing::info!(reason = %why, "io_uring is unavailable; upstream request heads are written one by one");
    }
}

fn runtime(worker_threads: Option<u16>) -> anyhow::Result<tokio::runtime::Runtime> {
    // One thread: tokio's current-thread scheduler does the same work without the
    // multi-thread scheduler's cross-thread bookkeeping (measured in bench/results).
    // Without --worker-threads: one thread per CPU this process may use. std reads the CPU
    // affinity mask and the cgroup CPU quota, so `taskset -c 1` or a Kubernetes limit of one
    // CPU also gets the current-thread scheduler.
    let threads = worker_threads.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    Ok(builder.enable_all().build()?)
}

/// Logs go to stderr; RUST_LOG sets the level. Tokens, keys and secrets are never logged.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour codes only for a person at a terminal, never in files or log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

async fn serve(config: &Path, watch: bool) -> anyhow::Result<()> {
    // Listen for SIGHUP before anything else: its default action would end the process.
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let running = crate::start_from_file(config, watch).await?;
    let upstream_writes = if crate::upstream::batched_write::enabled() {
        "batched (io_uring)"
    } else {
        "one by one"
    };
    tracing::info!(listen = %running.addr, admin = ?running.admin_addr, config = %config.display(), upstream_writes, "tollgate is serving");
    #[cfg(unix)]
    let reloads = running
        .reloader
        .clone()
        .map(|r| tokio::spawn(reload_on_sighup(r, hup)));
    #[cfg(not(unix))]
    let reloads: Option<tokio::task::JoinHandle<()>> = None;
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections, in-flight requests may finish");
    if let Some(t) = reloads {
        t.abort();
    }
    running.shutdown().await;
    Ok(())
}

/// SIGHUP reloads the config (what systemd's `ExecReload` and `kill -HUP` send).
#[cfg(unix)]
async fn reload_on_sighup(
    reloader: std::sync::Arc<crate::reload::Reloader>,
    mut hup: tokio::signal::unix::Signal,
) {
    while hup.recv().await.is_some() {
        let _ = reloader.reload(crate::reload::Trigger::Signal).await;
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn keygen(alg: KeyAlg, kid: &str, out: &Path, force: bool) -> anyhow::Result<()> {
    if kid.is_empty()
        || !kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        anyhow::bail!("--kid may only use letters, digits, `-`, `_` and `.`");
    }
    let key = devkeys::generate(alg.algorithm(), kid).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(out)?;
    let private = out.join(format!("{kid}.pem"));
    let public = out.join(format!("{kid}.jwks.json"));
    for f in [&private, &public] {
        if f.exists() && !force {
            anyhow::bail!("{} exists; pass --force to overwrite", f.display());
        }
    }
    write_private(&private, key.private_pem.as_bytes())?;
    std::fs::write(&public, devkeys::jwks_json([&key]) + "\n")?;
    println!("wrote {} (private key, keep it secret)", private.display());
    println!("wrote {} (public JWK Set, for jwks_file)", public.display());
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(path)?;
    // `mode` only applies when the file is created; an overwritten key gets it too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)
}

#[allow(clippy::too_many_arguments)]
fn token(
    key: &Path,
    kid: &str,
    alg: Option<&str>,
    iss: String,
    aud: Vec<String>,
    sub: String,
    scope: Option<String>,
    client_id: String,
    ttl: &str,
    claims: &[String],
) -> anyhow::Result<()> {
    let pem =
        std::fs::read(key).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", key.display()))?;
    let alg = match alg {
        Some(name) => crate::auth::jwks::parse_algorithm(name)
            .ok_or_else(|| anyhow::anyhow!("--alg {name} is not supported"))?,
        None => devkeys::infer_algorithm(&pem)
            .ok_or_else(|| anyhow::anyhow!("{} is not a PEM private key", key.display()))?,
    };
    let key = devkeys::from_pem(&pem, kid, alg).map_err(anyhow::Error::msg)?;
    let mut extra = serde_json::Map::new();
    for c in claims {
        let (name, value) = c
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--claim {c}: expected NAME=VALUE"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        extra.insert(name.to_string(), value);
    }
    let spec = TokenSpec {
        iss,
        aud,
        sub,
        scope,
        client_id,
        ttl: devkeys::parse_duration(ttl).map_err(anyhow::Error::msg)?,
        extra,
    };
    println!(
        "{}",
        devkeys::mint(&key, &spec).map_err(anyhow::Error::msg)?
    );
    Ok(())
}
