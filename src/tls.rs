//! TLS with rustls (aws-lc-rs provider): the listener's server config, built from PEM files
//! at every config load so a rotated certificate is picked up by a reload, and the client
//! configs that verify `https://` upstreams.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::defaults::MAX_PEM_FILE_BYTES;

/// ALPN protocols offered to clients, preferred first (RFC 7301).
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_PEM_FILE_BYTES => {
            return Err(format!(
                "`{}` is larger than {MAX_PEM_FILE_BYTES} bytes",
                path.display()
            ))
        }
        Ok(_) => {}
        Err(e) => return Err(format!("cannot read `{}`: {e}", path.display())),
    }
    std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    parse_certificates(&read_pem(path)?, path)
}

fn parse_certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{}` is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The listener's TLS config: certificate chain + private key, ALPN h2 and http/1.1.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = certificates(cert)?;
    let key_pem = read_pem(key)?;
    // The key's contents never appear in errors or logs.
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| format!("`{}` holds no PEM private key", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not form a usable pair: {e}"))?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client config trusting exactly the certificates in `ca_file`.
/// `pem` is the content of `ca_file` (read once by the caller, who also digests it).
pub fn client_config_with_ca(pem: &[u8], ca_file: &Path) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certificates(pem, ca_file)? {
        roots.add(cert).map_err(|e| {
            format!(
                "`{}` holds an unusable CA certificate: {e}",
                ca_file.display()
            )
        })?;
    }
    client_config(roots)
}

/// A client config trusting the operating system's roots.
pub fn client_config_with_system_roots() -> ClientConfig {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "could not load some system root certificates");
    }
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!("no system root certificates found: https upstreams need `ca_file`");
    }
    // Only fails for a provider without safe defaults, which aws-lc-rs is not; fall back to
    // an empty trust store (every https upstream then fails closed with 502).
    client_config(roots).unwrap_or_else(|_| {
        ClientConfig::builder()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth()
    })
}

fn client_config(roots: RootCertStore) -> Result<ClientConfig, String> {
    // No ALPN here: hyper-rustls offers http/1.1 itself (`enable_http1`).
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
