//! Reading `routes.yaml`: parse the YAML into raw structs, then compile them into a validated
//! [`Snapshot`](crate::state::Snapshot). Every error names its place as `file:line:col` and a
//! field path, and never echoes secrets from the file.

pub mod compile;
pub mod defaults;
mod lint;
pub mod positions;
pub mod raw;
pub mod schema;

use std::fmt;
use std::path::{Path, PathBuf};

use self::positions::{Position, PositionIndex};
use self::raw::RawConfig;
use crate::auth::remote::RemoteRegistry;
use crate::state::Snapshot;

/// Largest `routes.yaml` accepted; a larger file is a mistake (or an attack on the parser).
pub const MAX_CONFIG_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// One problem in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub position: Option<Position>,
    /// Field path such as `routes[2].upstream`; empty for file-level problems.
    pub path: String,
    pub message: String,
}

/// A rejected configuration: every problem found, in file order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(p) = d.position {
                write!(f, ":{}:{}", p.line, p.col)?;
            }
            f.write_str(": ")?;
            if !d.path.is_empty() {
                write!(f, "{}: ", d.path)?;
            }
            f.write_str(&d.message)?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn single(file: &Path, message: String) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            diagnostics: vec![Diagnostic {
                position: None,
                path: String::new(),
                message,
            }],
        }
    }
}

/// Collects diagnostics during parsing and compilation, resolving field paths to positions.
pub struct Diagnostics<'a> {
    index: &'a PositionIndex,
    list: Vec<Diagnostic>,
    /// Likely mistakes in a valid file (`config::lint`); they never reject it.
    warnings: Vec<Diagnostic>,
}

impl<'a> Diagnostics<'a> {
    pub fn new(index: &'a PositionIndex) -> Self {
        Diagnostics {
            index,
            list: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// An error about the value at `path`.
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let position = self.index.value(&path);
        self.list.push(Diagnostic {
            position,
            path,
            message: message.into(),
        });
    }

    /// An error about the key at `path` itself (unknown or misplaced keys).
    pub fn key_error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let position = self.index.key(&path);
        self.list.push(Diagnostic {
            position,
            path,
            message: message.into(),
        });
    }

    /// A warning about the value at `path`.
    pub fn warning(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let position = self.index.value(&path);
        self.warnings.push(Diagnostic {
            position,
            path,
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The warnings as `file:line:col: warning: path: sentence` lines, in file order.
    pub fn warning_lines(&mut self, file: &Path) -> Vec<String> {
        let mut list = std::mem::take(&mut self.warnings);
        list.sort_by_key(|d| d.position.map_or((usize::MAX, 0), |p| (p.line, p.col)));
        list.into_iter()
            .map(|d| {
                let at = d
                    .position
                    .map_or(String::new(), |p| format!(":{}:{}", p.line, p.col));
                let path = if d.path.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", d.path)
                };
                format!("{}{at}: warning: {path}{}", file.display(), d.message)
            })
            .collect()
    }

    /// Sorted by position so the output reads top to bottom like the file.
    pub fn into_error(mut self, file: &Path) -> ConfigError {
        self.list.sort_by_key(|d| {
            d.position
                .map(|p| (p.line, p.col))
                .unwrap_or((usize::MAX, 0))
        });
        ConfigError {
            file: file.to_path_buf(),
            diagnostics: self.list,
        }
    }
}

/// Reads, parses and compiles a config file. Relative paths inside it (key files) resolve
/// against the file's directory.
pub fn load(file: &Path) -> Result<Snapshot, ConfigError> {
    load_with(file, &RemoteRegistry::default())
}

/// Like [`load`], reusing the remote key stores in `remote` for issuers whose definition
/// did not change (the reloader passes the running gateway's registry).
pub fn load_with(file: &Path, remote: &RemoteRegistry) -> Result<Snapshot, ConfigError> {
    let source = read_source(file)?;
    let base_dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    load_inner(&source, file, &base_dir, |_| {}, remote)
}

/// Parses and compiles config text; `file` only labels errors, `base_dir` anchors key files.
pub fn load_str(source: &str, file: &Path, base_dir: &Path) -> Result<Snapshot, ConfigError> {
    load_patched(source, file, base_dir, |_| {})
}

/// Like [`load_str`], with a chance to adjust the parsed file before it is compiled (the
/// demo points upstreams at its echo servers and issuers at its in-memory key this way).
pub fn load_patched(
    source: &str,
    file: &Path,
    base_dir: &Path,
    patch: impl FnOnce(&mut RawConfig),
) -> Result<Snapshot, ConfigError> {
    load_inner(source, file, base_dir, patch, &RemoteRegistry::default())
}

fn load_inner(
    source: &str,
    file: &Path,
    base_dir: &Path,
    patch: impl FnOnce(&mut RawConfig),
    remote: &RemoteRegistry,
) -> Result<Snapshot, ConfigError> {
    let index = PositionIndex::build(source);
    let mut diags = Diagnostics::new(&index);
    let mut raw = parse(source, file, &mut diags)?;
    patch(&mut raw);
    let snapshot = compile::compile(raw, base_dir, remote, &mut diags);
    match snapshot {
        Some(mut s) if diags.is_empty() => {
            s.warnings = diags.warning_lines(file);
            Ok(s.with_source_digest(source))
        }
        _ => Err(diags.into_error(file)),
    }
}

pub fn read_source(file: &Path) -> Result<String, ConfigError> {
    let meta = std::fs::metadata(file)
        .map_err(|e| ConfigError::single(file, format!("cannot read the file: {e}")))?;
    if meta.len() > MAX_CONFIG_FILE_BYTES {
        return Err(ConfigError::single(
            file,
            format!(
                "the file is {} bytes; the limit is {MAX_CONFIG_FILE_BYTES}",
                meta.len()
            ),
        ));
    }
    std::fs::read_to_string(file)
        .map_err(|e| ConfigError::single(file, format!("cannot read the file: {e}")))
}

/// YAML → raw structs. Type and syntax errors stop here (serde cannot go on after one);
/// unknown keys are collected, all of them, and parsing continues so that `compile` can add
/// the semantic errors of the same file.
fn parse(source: &str, file: &Path, diags: &mut Diagnostics) -> Result<RawConfig, ConfigError> {
    let mut unknown = Vec::new();
    // Duplicate keys are errors (serde-saphyr's default): a second `scopes:` silently
    // overriding the first would be a security bug in an auth config.
    let result = serde_saphyr::with_deserializer_from_str(source, |de| {
        serde_ignored::deserialize(de, |path| unknown.push(ignored_path(&path)))
    });
    for path in unknown {
        let name = path.rsplit(['.', ']']).next().unwrap_or(&path).to_string();
        diags.key_error(path, format!("unknown key `{name}`"));
    }
    match result {
        Ok(raw) => Ok(raw),
        Err(e) => {
            let position = e.location().map(|l| Position {
                line: l.line() as usize,
                col: l.column() as usize,
            });
            let path = position
                .and_then(|p| diags.index.path_at(p))
                .unwrap_or_default()
                .to_string();
            diags.list.push(Diagnostic {
                position,
                path,
                message: yaml_message(&e),
            });
            let list = std::mem::take(&mut diags.list);
            Err(Diagnostics {
                index: diags.index,
                list,
                warnings: Vec::new(),
            }
            .into_error(file))
        }
    }
}

/// serde-saphyr's message without location or source snippet: the position is already in
/// front of the sentence, and the file may hold secrets that must not be echoed.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::MessageFormatter;
    let text = serde_saphyr::DefaultMessageFormatter.format_message(e.without_snippet());
    // The library's hint names its own API, which means nothing to someone editing YAML.
    text.replace(", set DuplicateKeyPolicy in Options if acceptable", "")
        .replace("duplicate mapping key", "duplicate key")
}

/// serde_ignored's path (`routes.2.scopez`) in our notation (`routes[2].scopez`).
fn ignored_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => positions::join_key(&ignored_path(parent), key),
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}
