//! Hot reload: file changes (plain writes, write-then-rename, Kubernetes `..data` swaps),
//! `POST /-/reload`, SIGHUP; a bad file keeps the old config; in-flight requests finish on
//! the config they started with; SIGTERM drains.

#[path = "support/harness.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use support::*;

/// Reload tests need the watcher's 2 s promise to hold on a busy CI machine too.
const RELOAD_DEADLINE: Duration = Duration::from_secs(2);

fn config(upstream: &str, scope: &str) -> String {
    format!(
        r#"
{GATEWAY_WITH_ISSUER_A}
routes:
  - id: orders
    path: /api/orders
    upstream: {upstream}
    scopes: [{scope}]
  - id: slow
    path: /slow
    upstream: {upstream}
    auth: none
"#
    )
}

/// Polls `check` until it holds or `deadline` passes; returns how long it took.
async fn within<F, Fut>(deadline: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < deadline, "not seen within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn admin_config(admin: std::net::SocketAddr) -> Value {
    get(&format!("http://{admin}/-/config"), None).await.json()
}

async fn post(url: &str) -> Answer {
    send(Request::post(url).body(Full::new(Bytes::new())).unwrap()).await
}

#[tokio::test]
async fn a_changed_file_is_picked_up_and_a_broken_one_is_refused() {
    let up = Upstream::start("one").await;
    let (dir, file) = write_config(&config(&up.url(), "orders:read"), &up).await;
    let gw = tollgate::start_from_file(&file, true).await.unwrap();
    let url = format!("http://{}/api/orders/1", gw.addr);
    let admin = gw.admin_addr.unwrap();
    let read = token(|_| {});
    assert_eq!(get(&url, Some(&read)).await.status, 200);
    let first = admin_config(admin).await;
    assert_eq!(first["routes"], 2);
    assert_eq!(first["last_error"], Value::Null);
    assert_eq!(first["sha256"].as_str().unwrap().len(), 64);

    // The required scope changes: the same token is now refused.
    std::fs::write(&file, config(&up.url(), "orders:admin")).unwrap();
    let took = within(RELOAD_DEADLINE, || async {
        get(&url, Some(&read)).await.status == 403
    })
    .await;
    println!("reload seen after {took:?}");
    assert_ne!(admin_config(admin).await["sha256"], first["sha256"]);

    // A broken file: the running config stays, and /-/config says why, with a position.
    std::fs::write(
        &file,
        config(&up.url(), "orders:admin").replace("scopes:", "scopez:"),
    )
    .unwrap();
    let file_name = file.display().to_string();
    within(RELOAD_DEADLINE, || async {
        admin_config(admin).await["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown key `scopez`"))
    })
    .await;
    let err = admin_config(admin).await["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "{file_name}:13:5: routes[0].scopez: unknown key `scopez`"
        )),
        "{err}"
    );
    assert_eq!(
        get(&url, Some(&read)).await.status,
        403,
        "the last good config must keep serving"
    );
    assert_eq!(
        get(&format!("http://{admin}/-/ready"), None).await.status,
        200
    );

    // Fixed again: the error clears.
    std::fs::write(&file, config(&up.url(), "orders:read")).unwrap();
    within(RELOAD_DEADLINE, || async {
        admin_config(admin).await["last_error"].is_null()
    })
    .await;
    assert_eq!(get(&url, Some(&read)).await.status, 200);
    gw.shutdown().await;
    drop(dir);
}

#[tokio::test]
async fn editor_renames_and_kubernetes_configmap_swaps_are_seen() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let (dir, _) = write_config("", &one).await;
    // Kubernetes layout: routes.yaml -> ..data/routes.yaml, ..data -> ..v1
    let d = dir.path();
    std::fs::create_dir(d.join("..v1")).unwrap();
    std::fs::write(
        d.join("..v1/routes.yaml"),
        config(&one.url(), "orders:read"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/routes.yaml", d.join("cm.yaml")).unwrap();
    // cm.yaml's keys resolve against its own directory, where write_config put them.
    let gw = tollgate::start_from_file(&d.join("cm.yaml"), true)
        .await
        .unwrap();
    let url = format!("http://{}/api/orders/1", gw.addr);
    let t = token(|_| {});
    assert_eq!(get(&url, Some(&t)).await.body, "one /api/orders/1");

    // The kubelet's atomic swap: new dir, new symlink, rename over ..data.
    std::fs::create_dir(d.join("..v2")).unwrap();
    std::fs::write(
        d.join("..v2/routes.yaml"),
        config(&two.url(), "orders:read"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    within(RELOAD_DEADLINE, || async {
        get(&url, Some(&t)).await.body == "two /api/orders/1"
    })
    .await;
    gw.shutdown().await;

    // An editor: write a temp file, rename it over the config.
    let file = d.join("routes.yaml");
    std::fs::write(&file, config(&one.url(), "orders:read")).unwrap();
    let gw = tollgate::start_from_file(&file, true).await.unwrap();
    let url = format!("http://{}/api/orders/1", gw.addr);
    assert_eq!(get(&url, Some(&t)).await.body, "one /api/orders/1");
    std::fs::write(
        d.join(".routes.yaml.swp"),
        config(&two.url(), "orders:read"),
    )
    .unwrap();
    std::fs::rename(d.join(".routes.yaml.swp"), &file).unwrap();
    within(RELOAD_DEADLINE, || async {
        get(&url, Some(&t)).await.body == "two /api/orders/1"
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_reload_applies_or_explains() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let (_dir, file) = write_config(&config(&one.url(), "orders:read"), &one).await;
    // No watcher: only the explicit trigger reloads.
    let gw = tollgate::start_from_file(&file, false).await.unwrap();
    let admin = gw.admin_addr.unwrap();
    let url = format!("http://{}/api/orders/1", gw.addr);
    let t = token(|_| {});
    std::fs::write(&file, config(&two.url(), "orders:read")).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        get(&url, Some(&t)).await.body,
        "one /api/orders/1",
        "nothing watches the file"
    );
    let a = post(&format!("http://{admin}/-/reload")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["result"], "reloaded");
    assert_eq!(get(&url, Some(&t)).await.body, "two /api/orders/1");

    std::fs::write(&file, "routes: [\n").unwrap();
    let a = post(&format!("http://{admin}/-/reload")).await;
    assert_eq!(a.status, 422);
    assert_eq!(a.json()["result"], "rejected");
    assert!(
        a.json()["errors"][0]
            .as_str()
            .unwrap()
            .contains(":1:9: routes: unclosed bracket"),
        "{}",
        a.body
    );
    assert_eq!(get(&url, Some(&t)).await.body, "two /api/orders/1");
    assert_eq!(
        get(&format!("http://{admin}/-/reload"), None).await.status,
        405
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn in_flight_requests_finish_on_the_config_they_started_with() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let (_dir, file) = write_config(&config(&one.url(), "orders:read"), &one).await;
    let gw = tollgate::start_from_file(&file, false).await.unwrap();
    let slow_url = format!("http://{}/slow/report", gw.addr);
    // The upstream answers /slow after two seconds.
    let in_flight = tokio::spawn(async move { get(&slow_url, None).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&file, config(&two.url(), "orders:read")).unwrap();
    let a = post(&format!("http://{}/-/reload", gw.admin_addr.unwrap())).await;
    assert_eq!(a.status, 200);
    let quick = get(
        &format!("http://{}/api/orders/1", gw.addr),
        Some(&token(|_| {})),
    )
    .await;
    assert_eq!(quick.body, "two /api/orders/1");
    let slow = in_flight.await.unwrap();
    assert_eq!(
        (slow.status.as_u16(), slow.body.as_str()),
        (200, "one /slow/report")
    );
}

#[tokio::test]
async fn upstream_connections_are_reused_across_reloads() {
    let one = Upstream::start("one").await;
    let (_dir, file) = write_config(&config(&one.url(), "orders:read"), &one).await;
    let gw = tollgate::start_from_file(&file, false).await.unwrap();
    let url = format!("http://{}/api/orders/1", gw.addr);
    let t = token(|_| {});
    assert_eq!(get(&url, Some(&t)).await.status, 200);
    assert_eq!(one.connections(), 1);
    // A new snapshot (the route gains a method list), same upstream: the pool stays.
    let changed = config(&one.url(), "orders:read").replace(
        "    scopes: [orders:read]",
        "    scopes: [orders:read]\n    methods: [GET]",
    );
    std::fs::write(&file, changed).unwrap();
    let a = post(&format!("http://{}/-/reload", gw.admin_addr.unwrap())).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_ne!(a.json()["sha256"], serde_json::Value::Null);
    for _ in 0..5 {
        assert_eq!(get(&url, Some(&t)).await.status, 200);
    }
    assert_eq!(
        one.connections(),
        1,
        "a reload must not drop the upstream pool"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn readiness_is_503_while_requests_drain() {
    let one = Upstream::start("one").await;
    let (_dir, file) = write_config(&config(&one.url(), "orders:read"), &one).await;
    let gw = tollgate::start_from_file(&file, false).await.unwrap();
    let admin = gw.admin_addr.unwrap();
    let slow_url = format!("http://{}/slow/drain", gw.addr);
    let in_flight = tokio::spawn(async move { get(&slow_url, None).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = tokio::spawn(gw.shutdown());
    within(RELOAD_DEADLINE, || async {
        get(&format!("http://{admin}/-/ready"), None).await.status == 503
    })
    .await;
    assert_eq!(in_flight.await.unwrap().status, 200);
    stopping.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "admin closes after the drain"
    );
}

#[tokio::test]
async fn files_named_by_a_signal_or_admin_reload_are_watched_too() {
    let one = Upstream::start("one").await;
    let (dir, file) = write_config(&config(&one.url(), "orders:read"), &one).await;
    let gw = tollgate::start_from_file(&file, true).await.unwrap();
    let url = format!("http://{}/api/orders/1", gw.addr);
    // Point the issuer at a key file in a directory nobody watched yet, via /-/reload
    // (the file watcher sees the config change too; either way the new directory counts).
    let keys = dir.path().join("rotated");
    std::fs::create_dir(&keys).unwrap();
    let first = tollgate::devkeys::generate(jsonwebtoken::Algorithm::ES256, "r1").unwrap();
    std::fs::write(
        keys.join("set.json"),
        tollgate::devkeys::jwks_json([&first]),
    )
    .unwrap();
    std::fs::write(
        &file,
        config(&one.url(), "orders:read").replace("a.jwks.json", "rotated/set.json"),
    )
    .unwrap();
    post(&format!("http://{}/-/reload", gw.admin_addr.unwrap())).await;
    let with = |k: &tollgate::devkeys::DevKey| token_with(k, &claims());
    within(RELOAD_DEADLINE, || async {
        get(&url, Some(&with(&first))).await.status == 200
    })
    .await;
    // Rotating the key inside the new directory is picked up by the watcher alone.
    let second = tollgate::devkeys::generate(jsonwebtoken::Algorithm::ES256, "r2").unwrap();
    std::fs::write(
        keys.join("set.json.tmp"),
        tollgate::devkeys::jwks_json([&second]),
    )
    .unwrap();
    std::fs::rename(keys.join("set.json.tmp"), keys.join("set.json")).unwrap();
    within(RELOAD_DEADLINE, || async {
        get(&url, Some(&with(&second))).await.status == 200
    })
    .await;
    assert_eq!(
        get(&url, Some(&with(&first))).await.status,
        401,
        "the removed key no longer validates"
    );
    gw.shutdown().await;
}

/// `tollgate serve --config FILE EXTRA...`, started.
fn serve(file: &Path, extra: &[&str]) -> Served {
    let mut args = vec!["serve", "--config", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    Served::start(&args)
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let (_dir, file) = write_config(&config(&one.url(), "orders:read"), &one).await;
    let served = serve(&file, &["--no-watch", "--worker-threads", "1"]);
    let url = format!("http://{}/api/orders/1", served.addr);
    let t = token(|_| {});
    assert_eq!(get(&url, Some(&t)).await.body, "one /api/orders/1");
    // Started with --no-watch (and the one-thread runtime): only the signal can make the
    // binary notice.
    std::fs::write(&file, config(&two.url(), "orders:read")).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        get(&url, Some(&t)).await.body,
        "one /api/orders/1",
        "--no-watch"
    );
    signal(&served.child, "HUP");
    within(RELOAD_DEADLINE, || async {
        get(&url, Some(&t)).await.body == "two /api/orders/1"
    })
    .await;
    // Still alive after the signal (its default action would have ended the process).
    assert_eq!(
        get(&format!("http://{}/-/healthz", served.admin), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let one = Upstream::start("one").await;
    let (_dir, file) = write_config(&config(&one.url(), "orders:read"), &one).await;
    std::fs::write(
        &file,
        format!(
            "shutdown_grace_secs: 10\n{}",
            config(&one.url(), "orders:read")
        ),
    )
    .unwrap();
    let mut served = serve(&file, &[]);
    let slow_url = format!("http://{}/slow/x", served.addr);
    let in_flight = tokio::spawn(async move { get(&slow_url, None).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    signal(&served.child, "TERM");
    let answer = in_flight.await.unwrap();
    assert_eq!(
        (answer.status.as_u16(), answer.body.as_str()),
        (200, "one /slow/x")
    );
    let status = loop {
        if let Some(s) = served.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not exit within the grace"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
    // New connections are refused once it is gone.
    assert!(tokio::net::TcpStream::connect(&served.addr).await.is_err());
}
