//! Issue 6, routes.yaml for platform teams: `tollgate explain`, `tollgate schema` and the
//! warnings of `tollgate check`, each through the real binary.

#[path = "support/harness.rs"]
mod support;

use std::path::Path;

use support::*;

fn explain(file: &Path, method: &str, path: &str, token: Option<&str>) -> (i32, String) {
    let mut args = vec!["explain", "--config", file.to_str().unwrap(), method, path];
    if let Some(t) = token {
        args.extend(["--token", t]);
    }
    let (code, out, err) = run(&args);
    (code, format!("{out}{err}"))
}

#[tokio::test]
async fn explain_gives_the_route_the_upstream_url_and_the_exact_decision() {
    let up = Upstream::start("orders").await;
    let (_dir, file) = write_config(ROUTES, &up).await;
    let ok = token(|_| {});

    let (code, out) = explain(&file, "GET", "/api/orders/7?x=1", Some(&ok));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("route:    orders-read (path prefix `/api/orders`)"),
        "{out}"
    );
    assert!(out.contains("shorter ones not used: `/api` (api)"), "{out}");
    let upstream = format!("upstream: {}/orders/7?x=1 (strip_prefix `/api`)", up.url());
    assert!(out.contains(&upstream), "{out}");
    assert!(out.contains("scopes: all of orders:read"), "{out}");
    assert!(
        out.contains("token:    valid; issuer a, sub user-1, client_id c1"),
        "{out}"
    );
    assert!(
        out.ends_with("decision: ALLOW, forwarded to the upstream\n"),
        "{out}"
    );

    let expired = token(|c| c["exp"] = (now() - 185).into());
    let (code, out) = explain(&file, "GET", "/api/orders/7", Some(&expired));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("decision: DENY, 401 expired: token expired 3 min ago [issuer a]"),
        "{out}"
    );

    let (code, out) = explain(&file, "GET", "/admin/x", Some(&ok));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("decision: DENY, 403 insufficient_scope: missing scope superadmin"),
        "{out}"
    );

    let unknown_kid = sign_raw(
        &keys().rsa,
        &serde_json::json!({"alg": "RS256", "kid": "nope", "typ": "at+jwt"}),
        &claims(),
    );
    let (code, out) = explain(&file, "GET", "/api/orders/7", Some(&unknown_kid));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("401 unknown_kid: token key id is unknown"),
        "{out}"
    );

    let (code, out) = explain(&file, "GET", "/api/orders/7", None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("401 missing: a bearer token is required"),
        "{out}"
    );

    let (code, out) = explain(&file, "PATCH", "/api/orders/7", None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("405 method_not_allowed: the routes at `/api/orders`"),
        "{out}"
    );
    let (code, out) = explain(&file, "GET", "/elsewhere", None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("404 no_route"), "{out}");
    let (code, out) = explain(&file, "GET", "/public/%2e%2e/admin", None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("400 bad_request_target"), "{out}");

    let (code, out) = explain(&file, "GET", "/public/x", None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("public route"), "{out}");

    std::fs::write(&file, "routes: [").unwrap();
    let (code, out) = explain(&file, "GET", "/public/x", None);
    assert_eq!(code, 2, "a broken config cannot be explained: {out}");
}

#[test]
fn the_shipped_schema_is_generated_from_the_config_types() {
    let (code, out, _) = run(&["schema"]);
    assert_eq!(code, 0);
    let root = env!("CARGO_MANIFEST_DIR");
    let shipped = std::fs::read_to_string(format!("{root}/deploy/routes.schema.json")).unwrap();
    assert!(
        out == shipped,
        "deploy/routes.schema.json is stale: run `cargo run -- schema > deploy/routes.schema.json`"
    );
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    let route = &schema["definitions"]["Route"];
    assert_eq!(route["additionalProperties"], false);
    assert_eq!(
        route["properties"]["auth"]["enum"],
        serde_json::json!(["required", "optional", "none"])
    );
    let routes_yaml = std::fs::read_to_string(format!("{root}/routes.yaml")).unwrap();
    assert_eq!(
        routes_yaml.lines().next(),
        Some("# yaml-language-server: $schema=deploy/routes.schema.json")
    );
}

const LINTED: &str = r#"
listen: 127.0.0.1:0
issuers:
  - id: a
    issuer: https://a.example.test
    audiences: [orders-api]
    jwks_file: a.jwks.json
    scopes: [orders:read, orders:write]
routes:
  - id: api
    path: /api
    upstream: {up}
    auth: none
  - id: orders
    path: /api/orders
    methods: [GET]
    upstream: {up}
    scopes: [orders:read]
  - id: orders-export
    path: /api/orders/export
    methods: [GET]
    upstream: {up}
    auth: none
  - id: admin
    path: /admin
    upstream: {up}
    scopes: [superadmin]
"#;

#[tokio::test]
async fn check_warns_about_shadowed_methods_public_holes_and_ungrantable_scopes() {
    let up = Upstream::start("orders").await;
    let (_dir, file) = write_config(LINTED, &up).await;
    let f = file.to_str().unwrap();
    let (code, out, err) = run(&["check", f]);
    assert_eq!(code, 0, "warnings do not fail check: {err}");
    assert!(out.contains("ok: 4 routes"), "{out}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning:")).collect();
    let expected = [
        format!(
            "{f}:11:11: warning: routes[0].path: route `api` never receives any method \
             except GET below `/api/orders`"
        ),
        format!(
            "{f}:23:11: warning: routes[2].auth: route `orders-export` is public (`auth: none`) \
             at `/api/orders/export`, under `/api/orders` where route `orders` requires a token"
        ),
        format!(
            "{f}:27:13: warning: routes[3].scopes: route `admin` can never be satisfied: no \
             accepted issuer declares superadmin (issuers: a)"
        ),
    ];
    assert_eq!(warnings.len(), expected.len(), "{err}");
    for (line, want) in warnings.iter().zip(&expected) {
        assert!(
            line.starts_with(want.as_str()),
            "\n got: {line}\nwant: {want}"
        );
    }
    assert!(err.contains(": 3 warnings"), "{err}");
    let (code, _, _) = run(&["check", "--deny-warnings", f]);
    assert_eq!(code, 1);

    // The shipped file has none.
    let root = env!("CARGO_MANIFEST_DIR");
    let (code, _, err) = run(&["check", "--deny-warnings", &format!("{root}/routes.yaml")]);
    assert_eq!(code, 0, "{err}");
}
