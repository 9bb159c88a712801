//! Every rejection of issue 2's list: exact status, WWW-Authenticate, JSON body, and the
//! upstream received nothing.

#[path = "support/harness.rs"]
mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use jsonwebtoken::EncodingKey;
use serde_json::{json, Value};
use support::*;

const REALM: &str = "Bearer realm=\"tollgate\"";

/// Asserts a 401 invalid_token with `description`, and that nothing reached the upstream.
async fn assert_invalid_token(env: &Env, token: &str, description: &str) {
    let before = env.upstream.seen().len();
    let a = get(&env.url("/api/orders/1"), Some(token)).await;
    assert_eq!(a.status, 401, "{description}: {}", a.body);
    assert_eq!(
        a.header("www-authenticate").unwrap(),
        format!("{REALM}, error=\"invalid_token\", error_description=\"{description}\"")
    );
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(
        a.json(),
        json!({"error": "invalid_token", "error_description": description})
    );
    assert!(!a.body.contains(token), "the token must never be echoed");
    assert_eq!(
        env.upstream.seen().len(),
        before,
        "{description}: the upstream must receive nothing"
    );
}

#[tokio::test]
async fn missing_token_gets_a_bare_challenge() {
    let env = start().await;
    let a = get(&env.url("/api/orders/1"), None).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.header("www-authenticate"), Some(REALM));
    assert_eq!(a.json()["error"], "unauthorized");
    assert!(env.upstream.seen().is_empty());
}

#[tokio::test]
async fn another_scheme_is_treated_as_no_token() {
    let env = start().await;
    let req = Request::get(env.url("/api/orders/1"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let a = send(req).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.header("www-authenticate"), Some(REALM));
    assert!(env.upstream.seen().is_empty());
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let env = start().await;
    let req = Request::get(env.url("/api/orders/1"))
        .header("authorization", format!("bearer {}", token(|_| {})))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(req).await.status, 200);
}

#[tokio::test]
async fn malformed_authorization_is_invalid_request() {
    let env = start().await;
    let t = token(|_| {});
    // Verified, so in the token cache: the gateway asks the cache before the full syntax
    // checks, and the malformed headers below must be refused even around a cached token.
    let ok = |value: String| {
        Request::get(env.url("/api/orders/1"))
            .header("authorization", value)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    assert_eq!(send(ok(format!("Bearer {t}"))).await.status, 200);
    // Whitespace the full checks trim still finds the token.
    assert_eq!(send(ok(format!("Bearer  {t} "))).await.status, 200);
    let before = env.upstream.seen().len();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["Bearer".into()], "the bearer token is empty"),
        (vec!["Bearer    ".into()], "the bearer token is empty"),
        (
            vec![format!("Bearer {t} junk")],
            "the bearer token is not a single b64token",
        ),
        (
            vec![format!("Bearer {t}"), format!("Bearer {t}")],
            "more than one Authorization header",
        ),
        (
            vec![format!("Bearer {t}"), "Basic dXNlcjpwYXNz".into()],
            "more than one Authorization header",
        ),
    ];
    for (values, description) in cases {
        let mut b = Request::get(env.url("/api/orders/1"));
        for v in &values {
            b = b.header("authorization", v.as_str());
        }
        let a = send(b.body(Full::new(Bytes::new())).unwrap()).await;
        assert_eq!(a.status, 400, "{values:?}");
        assert_eq!(
            a.header("www-authenticate").unwrap(),
            format!("{REALM}, error=\"invalid_request\", error_description=\"{description}\"")
        );
        assert_eq!(
            a.json(),
            json!({"error": "invalid_request", "error_description": description})
        );
    }
    assert_eq!(env.upstream.seen().len(), before);
}

#[tokio::test]
async fn signature_and_algorithm_attacks_are_rejected() {
    let env = start().await;
    let k = keys();
    let c = claims();

    // Bad signature: the signature of another token, spliced both ways. Both tokens are in
    // the cache first, which finds entries by the signature's digest: the claims it is
    // spliced onto must still be the ones that were verified with it.
    let good = token_with(&k.rsa, &c);
    let other = token(|c| c["sub"] = json!("someone-else"));
    for t in [&good, &other] {
        assert_eq!(get(&env.url("/api/orders/1"), Some(t)).await.status, 200);
    }
    let (good_signed, good_sig) = good.rsplit_once('.').unwrap();
    let (other_signed, other_sig) = other.rsplit_once('.').unwrap();
    for forged in [
        format!("{good_signed}.{other_sig}"),
        format!("{other_signed}.{good_sig}"),
    ] {
        assert_invalid_token(&env, &forged, "token signature is invalid").await;
    }
    // The cached tokens still pass: a splice that missed evicted nothing.
    for t in [&good, &other] {
        assert_eq!(get(&env.url("/api/orders/1"), Some(t)).await.status, 200);
    }

    // alg none, with and without a signature part.
    let h = support_b64(&json!({"alg": "none", "typ": "at+jwt"}));
    let p = support_b64(&c);
    assert_invalid_token(
        &env,
        &format!("{h}.{p}.AAAA"),
        "unsigned tokens (alg none) are not accepted",
    )
    .await;
    assert_invalid_token(
        &env,
        &format!("{h}.{p}."),
        "token is not a signed JWT of three base64url parts",
    )
    .await;

    // HS256 "signed" with the issuer's public key as the HMAC secret.
    let public_as_secret = EncodingKey::from_secret(k.rsa.public_jwk.to_string().as_bytes());
    let input = format!(
        "{}.{p}",
        support_b64(&json!({"alg": "HS256", "kid": "a-rsa"}))
    );
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &public_as_secret,
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    assert_invalid_token(
        &env,
        &format!("{input}.{sig}"),
        "symmetric algorithms are not accepted",
    )
    .await;

    // The EC key's kid with an RS256 header: the key's own alg wins.
    let mut hdr = header(&k.rsa);
    hdr["kid"] = json!("a-ec");
    assert_invalid_token(
        &env,
        &sign_raw(&k.rsa, &hdr, &c),
        "token algorithm does not match its key",
    )
    .await;

    // An allowed family but not in the issuer's allow-list (PS256 with the RSA key).
    let mut hdr = header(&k.rsa);
    hdr["alg"] = json!("PS256");
    assert_invalid_token(
        &env,
        &sign_raw(&k.rsa, &hdr, &c),
        "token algorithm is not allowed for its issuer",
    )
    .await;
}

fn support_b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn issuer_and_key_mixups_are_rejected() {
    let env = start().await;
    let k = keys();
    assert_invalid_token(
        &env,
        &token(|c| c["iss"] = json!("https://evil.example.test")),
        "token issuer is not trusted",
    )
    .await;
    assert_invalid_token(
        &env,
        &token(|c| c["iss"] = json!("HTTPS://A.EXAMPLE.TEST")),
        "token issuer is not trusted",
    )
    .await;
    assert_invalid_token(
        &env,
        &token(|c| {
            c.as_object_mut().unwrap().remove("iss");
        }),
        "token has no iss claim",
    )
    .await;

    // A key of issuer A never validates a token claiming issuer B: A's kid is unknown to B...
    let mut c = claims();
    c["iss"] = json!(ISS_B);
    let mut hdr = header(&k.rsa);
    hdr["typ"] = json!("at+jwt");
    let a = get(&env.url("/b"), Some(&sign_raw(&k.rsa, &hdr, &c))).await;
    assert_eq!(a.json()["error_description"], "token key id is unknown");
    // ...and without a kid, B's only key is chosen and A's signature fails on it.
    let hdr = json!({"alg": "RS256", "typ": "at+jwt"});
    let a = get(&env.url("/b"), Some(&sign_raw(&k.rsa, &hdr, &c))).await;
    assert_eq!(
        (a.status.as_u16(), a.json()["error_description"].clone()),
        (401, json!("token signature is invalid"))
    );

    // A valid issuer-B token on a route that only lists issuer A.
    let b_token = sign_raw(&k.b_rsa, &header(&k.b_rsa), &c);
    assert_eq!(get(&env.url("/b"), Some(&b_token)).await.status, 200);
    assert_invalid_token(&env, &b_token, "token issuer is not accepted on this route").await;

    // Unknown kid; no kid while the issuer has several keys.
    let mut hdr = header(&k.rsa);
    hdr["kid"] = json!("nope");
    assert_invalid_token(
        &env,
        &sign_raw(&k.rsa, &hdr, &claims()),
        "token key id is unknown",
    )
    .await;
    let mut hdr = header(&k.rsa);
    hdr.as_object_mut().unwrap().remove("kid");
    let a = get(
        &env.url("/api/orders/1"),
        Some(&sign_raw(&k.rsa, &hdr, &claims())),
    )
    .await;
    assert_eq!(
        a.status, 200,
        "issuer A has exactly one RS256 key, so no kid is fine: {}",
        a.body
    );
}

#[tokio::test]
async fn time_and_audience_claims_are_enforced() {
    let env = start().await;
    let t = now();
    assert_invalid_token(&env, &token(|c| c["exp"] = json!(t - 60)), "token expired").await;
    assert_invalid_token(
        &env,
        &token(|c| c["nbf"] = json!(t + 120)),
        "token is not valid yet",
    )
    .await;
    assert_invalid_token(
        &env,
        &token(|c| c["iat"] = json!(t + 120)),
        "token was issued in the future",
    )
    .await;
    assert_invalid_token(
        &env,
        &token(|c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
        "token has no exp claim",
    )
    .await;
    assert_invalid_token(
        &env,
        &token(|c| c["exp"] = json!((t + 600).to_string())),
        "exp claim is not a number",
    )
    .await;
    assert_invalid_token(
        &env,
        &token(|c| c["nbf"] = json!("0")),
        "nbf claim is not a number",
    )
    .await;
    assert_invalid_token(
        &env,
        &token(|c| c["iat"] = json!([1])),
        "iat claim is not a number",
    )
    .await;
    assert_invalid_token(
        &env,
        &token(|c| c["aud"] = json!("billing-api")),
        "token audience is not accepted",
    )
    .await;
    assert_invalid_token(
        &env,
        &token(|c| {
            c.as_object_mut().unwrap().remove("aud");
        }),
        "token has no aud claim",
    )
    .await;
    // Within the 5 s leeway, and an audience array naming us among others.
    assert_eq!(
        get(
            &env.url("/api/orders/1"),
            Some(&token(|c| c["exp"] = json!(t - 2)))
        )
        .await
        .status,
        200
    );
    assert_eq!(
        get(
            &env.url("/api/orders/1"),
            Some(&token(|c| c["aud"] = json!(["x", "other-api"])))
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn dangerous_header_parameters_are_rejected() {
    let env = start().await;
    let k = keys();
    let cases = [
        (
            "crit",
            json!(["exp"]),
            "the crit header parameter is not supported",
        ),
        (
            "jku",
            json!("https://evil.example.test/jwks"),
            "the jku header parameter is not accepted",
        ),
        (
            "x5u",
            json!("https://evil.example.test/cert"),
            "the x5u header parameter is not accepted",
        ),
        (
            "jwk",
            k.rsa.public_jwk.clone(),
            "the jwk header parameter is not accepted",
        ),
        (
            "x5c",
            json!(["MIIB"]),
            "the x5c header parameter is not accepted",
        ),
    ];
    for (name, value, description) in cases {
        let mut hdr = header(&k.rsa);
        hdr[name] = value;
        assert_invalid_token(&env, &sign_raw(&k.rsa, &hdr, &claims()), description).await;
    }
}

/// RFC 7515 §4 and RFC 7519 §4 let a verifier refuse a name given twice. tollgate does, so it
/// can never act on one copy while an upstream reads the other. The tokens are signed: only
/// the duplicate can be the reason.
#[tokio::test]
async fn a_name_given_twice_is_refused_and_escapes_are_read() {
    let env = start().await;
    let k = keys();
    let hdr = header(&k.rsa).to_string();
    let c = claims().to_string();
    let (h_rest, c_rest) = (&hdr[1..], &c[1..]);
    for twice in [
        format!(r#"{{"sub":"admin",{c_rest}"#),
        format!(r#"{{"\u0073ub":"admin",{c_rest}"#),
    ] {
        assert_invalid_token(
            &env,
            &sign_text(&k.rsa, &hdr, &twice),
            "token payload has a claim twice",
        )
        .await;
    }
    assert_invalid_token(
        &env,
        &sign_text(&k.rsa, &format!(r#"{{"alg":"none",{h_rest}"#), &c),
        "token header is not a base64url JSON object",
    )
    .await;
    // Escapes in names and values are decoded before anything reads them.
    let escaped = format!(r#"{{"s\u0075b":"us\u0065r-\u00e9",{}"#, {
        let mut rest = claims();
        rest.as_object_mut().unwrap().remove("sub");
        rest.to_string()[1..].to_string()
    });
    let a = get(
        &env.url("/api/orders/1"),
        Some(&sign_text(&k.rsa, &hdr, &escaped)),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        env.upstream.last().headers["x-user-id"].as_bytes(),
        "user-é".as_bytes()
    );
}

#[tokio::test]
async fn typ_is_enforced_where_required() {
    let env = start().await;
    let k = keys();
    let mut c = claims();
    c["iss"] = json!(ISS_B);
    for ok_typ in ["at+jwt", "application/at+jwt", "AT+JWT"] {
        let mut hdr = header(&k.b_rsa);
        hdr["typ"] = json!(ok_typ);
        assert_eq!(
            get(&env.url("/b"), Some(&sign_raw(&k.b_rsa, &hdr, &c)))
                .await
                .status,
            200,
            "{ok_typ}"
        );
    }
    for bad in [Some("JWT"), None] {
        let mut hdr = header(&k.b_rsa);
        match bad {
            Some(t) => hdr["typ"] = json!(t),
            None => {
                hdr.as_object_mut().unwrap().remove("typ");
            }
        }
        let a = get(&env.url("/b"), Some(&sign_raw(&k.b_rsa, &hdr, &c))).await;
        assert_eq!(a.status, 401);
        assert_eq!(
            a.json()["error_description"],
            "token typ is not the required type"
        );
    }
}

#[tokio::test]
async fn structurally_broken_tokens_are_rejected() {
    let env = start().await;
    let big = format!(
        "{}.{}.{}",
        "a".repeat(4000),
        "b".repeat(4000),
        "c".repeat(200)
    );
    assert_invalid_token(&env, &big, "token exceeds 8192 bytes").await;
    assert_invalid_token(
        &env,
        "abc.def",
        "token is not a signed JWT of three base64url parts",
    )
    .await;
    assert_invalid_token(
        &env,
        "a.b.c.d.e",
        "token is not a signed JWT of three base64url parts",
    )
    .await;
    // `!` is not b64token syntax (RFC 6750 §2.1): a malformed request, not a bad token.
    let a = get(
        &env.url("/api/orders/1"),
        Some("eyJhbGciOiJSUzI1NiJ9.!!!.abc"),
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"], "invalid_request");
    assert!(env.upstream.seen().is_empty());
}

#[tokio::test]
async fn invalid_base64_and_json_parts_are_invalid_tokens() {
    let env = start().await;
    assert_invalid_token(&env, "e30.e30.AAAA", "token header has no alg").await;
    assert_invalid_token(
        &env,
        "bm90anNvbg.e30.AAAA",
        "token header is not a base64url JSON object",
    )
    .await;
    let h = support_b64(&json!({"alg": "RS256", "kid": "a-rsa"}));
    assert_invalid_token(
        &env,
        &format!("{h}.WzFd.AAAA"),
        "token payload is not a base64url JSON object",
    )
    .await;
    // A signature that is not base64url at all.
    let t = token(|_| {});
    let (input, _) = t.rsplit_once('.').unwrap();
    assert_invalid_token(&env, &format!("{input}.A"), "token signature is malformed").await;
}

#[tokio::test]
async fn a_bad_token_never_passes_on_optional_routes() {
    let env = start().await;
    let a = get(&env.url("/feed"), Some(&token(|c| c["exp"] = json!(1)))).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["error"], "invalid_token");
    assert!(env.upstream.seen().is_empty());
}

#[tokio::test]
async fn missing_scope_is_403_with_the_required_scopes() {
    let env = start().await;
    let t = token(|_| {});
    let req = Request::post(env.url("/api/orders")).header("authorization", format!("Bearer {t}"));
    let a = send(req.body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(a.status, 403);
    assert_eq!(
        a.header("www-authenticate").unwrap(),
        format!("{REALM}, error=\"insufficient_scope\", error_description=\"the token does not grant the scopes this route requires\", scope=\"orders:write\"")
    );
    assert_eq!(a.json()["error"], "insufficient_scope");
    // any_of lists the options.
    let a = get(&env.url("/reports/q1"), Some(&t)).await;
    assert_eq!(a.status, 403);
    assert!(a
        .header("www-authenticate")
        .unwrap()
        .ends_with("scope=\"reports:read auditor\""));
    assert!(env.upstream.seen().is_empty());
}
