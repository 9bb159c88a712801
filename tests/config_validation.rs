//! Semantic validation of routes.yaml: each mistake gets a positioned, plain sentence.

use std::path::Path;

use tollgate::devkeys;

/// Compiles `yaml` against a directory holding `a.jwks.json` (+ any `extra` files) and
/// returns the error text, or "" when the file is valid.
fn errors_with(yaml: &str, extra: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let key = devkeys::generate(jsonwebtoken::Algorithm::ES256, "k").unwrap();
    std::fs::write(dir.path().join("a.jwks.json"), devkeys::jwks_json([&key])).unwrap();
    for (name, text) in extra {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    match tollgate::config::load_str(yaml, Path::new("routes.yaml"), dir.path()) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

fn errors(yaml: &str) -> String {
    errors_with(yaml, &[])
}

const ISSUER: &str = "issuers:\n  - id: a\n    issuer: https://a.test\n    audiences: [api]\n    jwks_file: a.jwks.json\n";

fn with_route(route: &str) -> String {
    format!("{ISSUER}routes:\n  - id: r\n    upstream: http://127.0.0.1:9\n{route}")
}

#[test]
fn a_minimal_valid_file_compiles() {
    assert_eq!(errors(&with_route("    path: /x\n")), "");
}

#[test]
fn route_mistakes_are_explained() {
    let cases = [
        (
            "    path: x\n",
            "routes.yaml:9:11: routes[0].path: `x` must start with `/`",
        ),
        (
            "    path: /x/\n",
            "routes[0].path: `/x/` must not end with `/`",
        ),
        (
            "    path: /a/../b\n",
            "routes[0].path: `/a/../b` may not contain empty, `.` or `..` segments",
        ),
        (
            "    path: /x\n    strip_prefix: /y\n",
            "routes[0].strip_prefix: `/y` is not a leading segment of the route path",
        ),
        (
            "    path: /x\n    auth: maybe\n",
            "routes[0].auth: `maybe` is not one of required, optional, none",
        ),
        (
            "    path: /x\n    methods: [get]\n",
            "routes[0].methods[0]: `get` is not an upper-case method name",
        ),
        (
            "    path: /x\n    issuers: [zz]\n",
            "routes[0].issuers[0]: no issuer has id `zz`",
        ),
        (
            "    path: /x\n    auth: optional\n    scopes: [a]\n",
            "routes[0].scopes: scopes need `auth: required`",
        ),
        (
            "    path: /x\n    scopes: [\"a b\"]\n",
            "routes[0].scopes: `a b` is not a valid scope",
        ),
        (
            "    path: /x\n    claims_to_headers: {sub: Authorization}\n",
            "`Authorization` is managed by the gateway",
        ),
        (
            "    path: /x\n    claims_to_headers: {sub: \"bad header\"}\n",
            "`bad header` is not a valid header name",
        ),
        (
            "    path: /x\n    timeout_ms: 0\n",
            "routes[0].timeout_ms: must be between 1 and 3600000",
        ),
        (
            "    path: /x\n    auth: none\n    claims_to_headers: {sub: X-User}\n",
            "routes[0].claims_to_headers: has no effect with `auth: none`",
        ),
        (
            "    path: /x\n    ca_file: ca.pem\n",
            "routes[0].ca_file: only applies to an https upstream",
        ),
        (
            "    path: /x\n    scopes: {any_of: []}\n",
            "routes[0].scopes: must list at least one scope",
        ),
    ];
    for (route, want) in cases {
        let got = errors(&with_route(route));
        assert!(got.contains(want), "for\n{route}want: {want}\ngot: {got}");
    }
}

#[test]
fn upstream_urls_are_checked() {
    for (url, want) in [
        ("ftp://x", "the scheme must be http or https"),
        (
            "http://user:pw@host",
            "credentials in the URL are not supported",
        ),
        ("http://host/?q=1", "a query or fragment is not allowed"),
        ("127.0.0.1:9", "expected scheme://host:port[/base-path]"),
    ] {
        let yaml = format!("{ISSUER}routes:\n  - id: r\n    path: /x\n    upstream: \"{url}\"\n");
        let got = errors(&yaml);
        assert!(got.contains(want), "{url}: {got}");
        assert!(
            got.starts_with("routes.yaml:9:15: routes[0].upstream:"),
            "{got}"
        );
    }
    // A password in the URL is never echoed.
    let yaml =
        format!("{ISSUER}routes:\n  - id: r\n    path: /x\n    upstream: \"http://u:s3cret@h\"\n");
    let got = errors(&yaml);
    assert!(
        got.contains("`the URL` is not a valid upstream URL"),
        "{got}"
    );
    assert!(!got.contains("s3cret"), "{got}");
}

#[test]
fn issuer_mistakes_are_explained() {
    let cases = [
        ("issuers:\n  - id: a\n    issuer: x\n    jwks_file: a.jwks.json\n", "issuers[0].audiences: is required"),
        ("issuers:\n  - id: a\n    issuer: x\n    audiences: [api]\n    jwks_file: nope.json\n", "issuers[0].jwks_file: cannot read"),
        ("issuers:\n  - id: a\n    issuer: x\n    audiences: [api]\n    jwks_file: a.jwks.json\n    algorithms: [HS256]\n", "issuers[0].algorithms[0]: `HS256` is not supported"),
        ("issuers:\n  - id: a\n    issuer: x\n    audiences: [api]\n    jwks_file: a.jwks.json\n    algorithms: [RS256]\n", "has no key for any allowed algorithm"),
        ("issuers:\n  - id: a\n    issuer: x\n    audiences: [api]\n    jwks_file: a.jwks.json\n    leeway_secs: 3600\n", "issuers[0].leeway_secs: must be at most 300 seconds"),
        ("issuers:\n  - id: a\n    issuer: x\n    audiences: [api]\n    jwks_file: a.jwks.json\n  - id: a\n    issuer: x\n    audiences: [api]\n    jwks_file: a.jwks.json\n", "issuer id `a` is used twice"),
    ];
    for (yaml, want) in cases {
        let yaml =
            format!("{yaml}routes:\n  - id: r\n    path: /x\n    upstream: http://127.0.0.1:9\n");
        let got = errors(&yaml);
        assert!(got.contains(want), "want: {want}\ngot: {got}");
    }
}

#[test]
fn unsafe_keys_in_a_jwks_file_are_refused() {
    let short_rsa = format!(
        r#"{{"keys":[{{"kty":"RSA","kid":"small","n":"{}","e":"AQAB"}}]}}"#,
        "_".repeat(170) + "w" // 128 bytes of 0xff: a 1024-bit modulus
    );
    let enc_key = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","use":"enc","kid":"e","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    let oct = r#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}"#;
    let mismatch = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","alg":"RS256","kid":"m","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    for (doc, want) in [
        (
            short_rsa.as_str(),
            "RSA key has 1024 bits; at least 2048 are required",
        ),
        (enc_key, "key is for encryption (`use: enc`)"),
        (oct, "symmetric (`oct`) keys are not accepted"),
        (mismatch, "alg RS256 does not fit an Ed25519 key"),
        ("{\"nokeys\": 1}", "not a JWK Set"),
        ("<html>", "not valid JSON"),
    ] {
        let yaml = ISSUER.replace("a.jwks.json", "b.jwks.json")
            + "routes:\n  - id: r\n    path: /x\n    upstream: http://127.0.0.1:9\n";
        let got = errors_with(&yaml, &[("b.jwks.json", doc)]);
        assert!(got.contains(want), "want: {want}\ngot: {got}");
        assert!(got.contains("issuers[0].jwks_file"), "{got}");
    }
}

#[test]
fn listener_mistakes_are_explained() {
    let routes =
        "routes:\n  - id: r\n    path: /x\n    upstream: http://127.0.0.1:9\n    auth: none\n";
    let got = errors(&format!(
        "listen: 127.0.0.1:8080\nadmin: 127.0.0.1:8080\n{routes}"
    ));
    assert!(
        got.contains("admin: must not be the same address as `listen`"),
        "{got}"
    );
    let got = errors(&format!("tls: {{}}\n{routes}"));
    assert!(
        got.contains("tls.cert: is required") && got.contains("tls.key: is required"),
        "{got}"
    );
    let got = errors(&format!("tls: {{cert: nope.pem, key: nope.key}}\n{routes}"));
    assert!(got.contains("tls: cannot read"), "{got}");
    let got = errors(&format!("shutdown_grace_secs: 7200\n{routes}"));
    assert!(
        got.contains("shutdown_grace_secs: must be at most 3600"),
        "{got}"
    );
}

#[test]
fn remote_key_sources_are_checked() {
    let routes = "routes:\n  - id: r\n    path: /x\n    upstream: http://127.0.0.1:9\n";
    let issuer = |extra: &str| {
        format!("issuers:\n  - id: a\n    issuer: https://a.test\n    audiences: [api]\n{extra}{routes}")
    };
    for (extra, want) in [
        ("", "issuers[0]: set exactly one of `jwks_file`, `jwks_url` or `discovery: true`"),
        ("    jwks_file: a.jwks.json\n    jwks_url: https://a.test/jwks\n", "set exactly one of"),
        ("    jwks_url: http://idp.example.test/jwks\n", "issuers[0].jwks_url: `http://idp.example.test/jwks`: http:// is only allowed for loopback hosts"),
        ("    jwks_url: https://a.test/jwks\n    jwks_refresh_secs: 0\n", "issuers[0].jwks_refresh_secs: must be at least 1"),
        ("    jwks_file: a.jwks.json\n    jwks_cooldown_secs: 5\n", "issuers[0].jwks_cooldown_secs: only applies to `jwks_url` or `discovery`"),
        ("    jwks_url: https://a.test/jwks\n    ca_file: nope.pem\n", "issuers[0].ca_file: cannot read"),
    ] {
        let got = errors(&issuer(extra));
        assert!(got.contains(want), "want: {want}\ngot: {got}");
    }
    let http_issuer = "issuers:\n  - id: a\n    issuer: http://idp.example.test\n    audiences: [api]\n    discovery: true\n";
    let got = errors(&format!("{http_issuer}{routes}"));
    assert!(got.contains("issuers[0].discovery: the issuer `http://idp.example.test` cannot be used for discovery"), "{got}");
    // Loopback over plain HTTP is fine (development, tests); nothing is fetched by `check`.
    assert_eq!(
        errors(&issuer("    jwks_url: http://127.0.0.1:9/jwks\n")),
        ""
    );
    assert_eq!(
        errors(&issuer(
            "    jwks_url: https://a.test/jwks\n    jwks_refresh_secs: 1\n"
        )),
        ""
    );
}

#[test]
fn a_broken_issuer_is_not_reported_as_missing() {
    let yaml = "issuers:\n  - id: a\n    issuer: https://a.test\n    audiences: [api]\n    jwks_file: missing.json\nroutes:\n  - id: r\n    path: /x\n    upstream: http://127.0.0.1:9\n";
    let got = errors(yaml);
    assert!(got.contains("issuers[0].jwks_file: cannot read"), "{got}");
    assert!(!got.contains("no issuers are configured"), "{got}");
}

#[test]
fn all_errors_are_reported_in_file_order() {
    let yaml = format!(
        "{ISSUER}realm: 'a\"b'\nroutes:\n  - id: r\n    path: nope\n    upstream: http://127.0.0.1:9\n    colour: red\n  - id: r\n    path: /y\n    upstream: http://127.0.0.1:9\n"
    );
    let got = errors(&yaml);
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), 4, "{got}");
    assert!(lines[0].starts_with("routes.yaml:6:8: realm:"), "{got}");
    assert!(lines[1].contains("routes[0].path"), "{got}");
    assert!(lines[2].contains("unknown key `colour`"), "{got}");
    assert!(
        lines[3].contains("route id `r` is already used by routes[0]"),
        "{got}"
    );
}
