//! TLS: the HTTPS listener over HTTP/1.1 and HTTP/2 chosen by ALPN, certificate rotation by
//! reload, and `https://` upstreams verified against a `ca_file`.

#[path = "support/harness.rs"]
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A test CA and a server certificate for 127.0.0.1 / localhost signed by it.
struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
}

fn pki(name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        key_pem: key.serialize_pem(),
    }
}

fn write_pki(dir: &Path, prefix: &str, p: &Pki) {
    std::fs::write(dir.join(format!("{prefix}ca.pem")), &p.ca_pem).unwrap();
    std::fs::write(dir.join(format!("{prefix}cert.pem")), &p.cert_pem).unwrap();
    std::fs::write(dir.join(format!("{prefix}key.pem")), &p.key_pem).unwrap();
}

fn tls_config(upstream: &str) -> String {
    format!(
        r#"
{GATEWAY_WITH_ISSUER_A}
tls: {{cert: cert.pem, key: key.pem}}
routes:
  - id: orders
    path: /api/orders
    upstream: {upstream}
    scopes: [orders:read]
    claims_to_headers: {{sub: X-User-Id}}
"#
    )
}

/// Connects with TLS trusting `ca`, offering `alpn`; returns the stream, the negotiated
/// protocol and the server's leaf certificate.
async fn connect(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    Option<Vec<u8>>,
    CertificateDer<'static>,
) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (_, conn) = stream.get_ref();
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let leaf = conn.peer_certificates().unwrap()[0].clone().into_owned();
    (stream, alpn, leaf)
}

fn request(token: &str) -> Request<Full<Bytes>> {
    Request::get("https://localhost/api/orders/1")
        .header("authorization", format!("Bearer {token}"))
        .header("x-user-id", "admin")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn https_listener_speaks_http1_and_http2_by_alpn() {
    let up = Upstream::start("orders").await;
    let (dir, file) = write_config(&tls_config(&up.url()), &up).await;
    let p = pki("gateway");
    write_pki(dir.path(), "", &p);
    let gw = tollgate::start_from_file(&file, false).await.unwrap();
    let t = token(|_| {});

    let (stream, alpn, leaf) = connect(gw.addr, &p.ca_der, &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(leaf, p.cert_der);
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = request(&t);
    *req.uri_mut() = "https://localhost/api/orders/1".parse().unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let seen = up.last();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-user-id"], "user-1");

    let (stream, alpn, _) = connect(gw.addr, &p.ca_der, &[b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = request(&t);
    *req.uri_mut() = "/api/orders/2".parse().unwrap();
    req.headers_mut()
        .insert("host", "localhost".parse().unwrap());
    let resp = h1.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "orders /api/orders/2");

    // Plain HTTP on the TLS port gets no answer a client could mistake for success.
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"GET /api/orders/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tcp.read_to_end(&mut answer),
    )
    .await;
    assert!(!answer.starts_with(b"HTTP/1.1 200"));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_reload_rotates_the_certificate_without_a_restart() {
    let up = Upstream::start("orders").await;
    let (dir, file) = write_config(&tls_config(&up.url()), &up).await;
    let old = pki("old");
    write_pki(dir.path(), "", &old);
    let gw = tollgate::start_from_file(&file, false).await.unwrap();
    let (_, _, leaf) = connect(gw.addr, &old.ca_der, &[b"http/1.1"]).await;
    assert_eq!(leaf, old.cert_der);

    let new = pki("new");
    write_pki(dir.path(), "", &new);
    let admin = gw.admin_addr.unwrap();
    let a = send(
        Request::post(format!("http://{admin}/-/reload"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (_, _, leaf) = connect(gw.addr, &new.ca_der, &[b"http/1.1"]).await;
    assert_eq!(leaf, new.cert_der);

    // A key that does not match the certificate is refused; the new pair keeps serving.
    std::fs::write(
        dir.path().join("key.pem"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let a = send(
        Request::post(format!("http://{admin}/-/reload"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 422);
    assert!(
        a.body
            .contains("tls: the certificate and key do not form a usable pair"),
        "{}",
        a.body
    );
    assert!(
        !a.body.contains("PRIVATE KEY"),
        "key material must never be echoed"
    );
    let (_, _, leaf) = connect(gw.addr, &new.ca_der, &[b"http/1.1"]).await;
    assert_eq!(leaf, new.cert_der);
    gw.shutdown().await;
}

/// A real HTTPS upstream with `p`'s certificate.
async fn https_upstream(p: &Pki) -> SocketAddr {
    let certs = vec![p.cert_der.clone()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(p.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let body = format!("secure {}", req.uri().path());
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn https_upstreams_are_verified_against_their_ca_file() {
    let p = pki("upstream");
    let addr = https_upstream(&p).await;
    let up = Upstream::start("unused").await;
    let yaml = format!(
        r#"
listen: 127.0.0.1:0
routes:
  - id: pinned
    path: /pinned
    upstream: https://127.0.0.1:{port}
    ca_file: upstream-ca.pem
    auth: none
  - id: wrong-ca
    path: /wrong
    upstream: https://127.0.0.1:{port}
    ca_file: other-ca.pem
    auth: none
  - id: system-roots
    path: /system
    upstream: https://127.0.0.1:{port}
    auth: none
"#,
        port = addr.port()
    );
    let (dir, file) = write_config(&yaml, &up).await;
    std::fs::write(dir.path().join("upstream-ca.pem"), &p.ca_pem).unwrap();
    std::fs::write(dir.path().join("other-ca.pem"), pki("other").ca_pem).unwrap();
    let gw = tollgate::start_from_file(&file, false).await.unwrap();
    let a = get(&format!("http://{}/pinned/x", gw.addr), None).await;
    assert_eq!(
        (a.status.as_u16(), a.body.as_str()),
        (200, "secure /pinned/x")
    );
    // An upstream whose certificate the configured CA did not sign is never trusted.
    assert_eq!(
        get(&format!("http://{}/wrong/x", gw.addr), None)
            .await
            .status,
        502
    );
    assert_eq!(
        get(&format!("http://{}/system/x", gw.addr), None)
            .await
            .status,
        502
    );
    gw.shutdown().await;
}
