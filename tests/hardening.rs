//! Hostile input end to end: the real binary, real TLS, real clients, and raw bytes written the
//! way an attacker would write them. Each test fails without the protection it names.

use crate::support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BILLING_KEY: &str = "key-billing-7d1c";
const CRM_KEY: &str = "key-crm-93aa";

fn sha256_hex(key: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, key.as_bytes()))
}

/// The environment for a gateway in front of `upstream`, plus `extra`.
fn env_with(ca: &TestCa, upstream: &Upstream, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = env_for(ca, upstream);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// A config file in `ca`'s directory.
fn config_file(ca: &TestCa, name: &str, text: &str) -> String {
    let path: PathBuf = ca.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn clients_config(ca: &TestCa, extra: &str) -> String {
    config_file(
        ca,
        "clients.toml",
        &format!(
            r#"[[clients]]
name = "billing"
key_sha256 = "{}"
allow = ["create-connection"]
{extra}

[[clients]]
name = "reporting"
key_sha256 = "{}"
allow = []
"#,
            sha256_hex(BILLING_KEY),
            sha256_hex(CRM_KEY)
        ),
    )
}

/// Writes `bytes` as they are and reads until the gateway closes (bounded at 20 s).
async fn send_raw(gw: &Gateway, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn create(gw: &Gateway, key: Option<&str>) -> reqwest::Response {
    let mut request = client()
        .post(gw.url("/api/3/connections"))
        .header("content-type", "application/json")
        .body(VALID_CREATE);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

async fn problem_type(response: reqwest::Response) -> String {
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    body["type"]
        .as_str()
        .unwrap()
        .trim_start_matches("urn:specgate:problem:")
        .to_owned()
}

#[tokio::test]
async fn with_clients_a_request_needs_a_known_key_and_an_allowed_operation() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let config = clients_config(&ca, "");
    let gw = Gateway::start(&env_with(&ca, &upstream, &[("SPECGATE_CONFIG", &config)]));

    // No key, an unknown key, a key in the wrong scheme: 401, even for paths not in the spec.
    let response = create(&gw, None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"specgate\""
    );
    assert_eq!(problem_type(response).await, "unauthenticated");
    assert_eq!(
        create(&gw, Some("key-guessed")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let basic = client()
        .post(gw.url("/api/3/connections"))
        .basic_auth("billing", Some(BILLING_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    let probe = client()
        .get(gw.url("/api/3/contacts"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        probe.status(),
        StatusCode::UNAUTHORIZED,
        "an unauthenticated caller learns nothing about the spec"
    );

    // A known client outside its allow list: 403.
    let response = create(&gw, Some(CRM_KEY)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem_type(response).await, "forbidden");
    assert!(upstream.requests().is_empty(), "nothing was forwarded");

    // The right client, by either header: forwarded without its key, audited under its name.
    assert_eq!(
        create(&gw, Some(BILLING_KEY)).await.status(),
        StatusCode::CREATED
    );
    let response = client()
        .post(gw.url("/api/3/connections"))
        .header("content-type", "application/json")
        .header("x-specgate-key", BILLING_KEY)
        .body(VALID_CREATE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert!(!request.headers.contains_key("authorization"));
        assert!(!request.headers.contains_key("x-specgate-key"));
        assert_eq!(request.headers["api-token"], CANARY_TOKEN);
    }
    let access: Vec<Value> = gw
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["message"] == "request" && e["status"] == 201)
        .collect();
    assert!(
        !access.is_empty() && access.iter().all(|e| e["client"] == "billing"),
        "the access log names the client: {access:?}"
    );
    let audit = gw.audit_lines();
    assert_eq!(
        audit.len(),
        4,
        "two creates, each an attempt and an outcome"
    );
    assert!(
        audit.iter().all(|line| line["client"] == "billing"),
        "{audit:?}"
    );
    gw.wait_for_log_text(
        "client keys required: billing, reporting",
        1,
        Duration::from_secs(10),
    );
}

#[tokio::test]
async fn a_client_over_its_rate_is_429_with_retry_after() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let config = clients_config(&ca, "rate_limit_per_sec = 0.5\nrate_limit_burst = 2");
    let gw = Gateway::start(&env_with(&ca, &upstream, &[("SPECGATE_CONFIG", &config)]));
    for _ in 0..2 {
        assert_eq!(
            create(&gw, Some(BILLING_KEY)).await.status(),
            StatusCode::CREATED
        );
    }
    let response = create(&gw, Some(BILLING_KEY)).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(problem_type(response).await, "rate-limited");
    assert_eq!(upstream.requests().len(), 2, "the third was not forwarded");
}

#[tokio::test]
async fn past_the_concurrency_limit_requests_are_shed_with_503() {
    let ca = TestCa::new();
    let upstream = Upstream::start(&ca, |_| Reply::Hang).await;
    let gw = Gateway::start(&env_with(
        &ca,
        &upstream,
        &[("SPECGATE_MAX_CONCURRENT_REQUESTS", "2")],
    ));
    let url = gw.url("/api/3/connections");
    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                client()
                    .post(url)
                    .header("content-type", "application/json")
                    .body(VALID_CREATE)
                    .send()
                    .await
            })
        })
        .collect();
    upstream.wait_for_requests(2).await;
    let started = Instant::now();
    let response = create(&gw, None).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(problem_type(response).await, "overloaded");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shed at once, not queued"
    );
    assert_eq!(upstream.requests().len(), 2);
    for task in in_flight {
        task.abort();
    }
}

#[tokio::test]
async fn a_request_whose_body_never_finishes_is_408() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_with(
        &ca,
        &upstream,
        &[("SPECGATE_REQUEST_TIMEOUT_MS", "500")],
    ));
    // Promises 100 bytes, sends 10, and waits.
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"POST /api/3/connections HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"connecti")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .expect("the gateway answers and closes")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert_eq!(status_of(&response), 408, "{response}");
    assert!(response.contains("urn:specgate:problem:request-timeout"));
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn slow_and_silent_connections_are_closed_at_the_header_deadline() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_with(
        &ca,
        &upstream,
        &[("SPECGATE_HEADER_READ_TIMEOUT_MS", "300")],
    ));
    for opening in [
        &b""[..],                                       // connects and says nothing
        b"PRI * HTTP/2.0\r\n",                          // half an HTTP/2 preface
        b"POST /api/3/connections HTTP/1.1\r\nhost: x", // a head that never ends
    ] {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        stream.write_all(opening).await.unwrap();
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "{:?}: the connection was left open",
            String::from_utf8_lossy(opening)
        );
    }
    // The gateway still serves.
    assert_eq!(create(&gw, None).await.status(), StatusCode::CREATED);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_thousand_slow_clients_at_once_leave_memory_bounded_and_service_up() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_with(
        &ca,
        &upstream,
        &[
            ("SPECGATE_HEADER_READ_TIMEOUT_MS", "60000"),
            ("SPECGATE_MAX_CONNECTIONS", "1200"),
            ("RUST_LOG", "info"),
        ],
    ));
    assert_eq!(create(&gw, None).await.status(), StatusCode::CREATED);
    let before = rss_kib(gw.pid());

    // Each opens a request head, writes 100 KiB of header fields into it and never finishes:
    // without a bound on a head's buffer, each would hold all of it until the deadline.
    let filler = format!("x-filler: {}\r\n", "a".repeat(1000)).repeat(100);
    let head = format!("GET /api/3/connections HTTP/1.1\r\nhost: x\r\n{filler}");
    let mut slow = Vec::new();
    for _ in 0..1000 {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        let _ = stream.write_all(head.as_bytes()).await;
        slow.push(stream);
    }
    // Every one of them is answered (431, from the head's bounded buffer) and closed.
    let mut answered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for stream in &mut slow {
        let mut response = Vec::new();
        let _ = tokio::time::timeout_at(deadline, stream.read_to_end(&mut response)).await;
        if status_of(&String::from_utf8_lossy(&response)) == 431 {
            answered += 1;
        }
    }
    let during = rss_kib(gw.pid());
    let grown_mib = during.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 100,
        "1,000 slow clients grew the gateway by {grown_mib} MiB"
    );
    assert!(answered > 900, "only {answered} of 1,000 were answered 431");
    drop(slow);
    assert_eq!(create(&gw, None).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn past_the_connection_limit_new_connections_are_closed() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_with(
        &ca,
        &upstream,
        &[("SPECGATE_MAX_CONNECTIONS", "3")],
    ));
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        stream
            .write_all(b"GET /api/3/connections HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    let response = send_raw(
        &gw,
        b"GET /api/3/connections HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(response, "", "the fourth connection is closed unanswered");
    drop(held);
}

#[tokio::test]
async fn targets_and_methods_that_could_route_around_the_spec_are_400() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_for(&ca, &upstream));
    for target in [
        "/api/3/%2E%2E/3/connections",
        "/api/3/.%2e/3/connections",
        "/api/3/./connections",
        "/api/3/..;/3/connections",
        "/api/3/%252e%252e/connections",
        "/api%5C3/connections",
        "/api%2F3/connections",
        "/api/3//connections",
        "//api/3/connections",
        "/api/3/connections//",
        "/api/3/conn%00ections",
        "/api/3/%c0%ae%c0%ae/connections",
        "/api/3/%ef%bc%8e%ef%bc%8e/connections",
        "http://evil.example/api/3/connections",
        "*",
    ] {
        let head =
            format!("POST {target} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json");
        let (status, body) = raw_request(gw.addr, &head, VALID_CREATE.as_bytes()).await;
        assert_eq!(status, 400, "{target}: {body}");
        assert!(
            body.contains("urn:specgate:problem:bad-target"),
            "{target}: {body}"
        );
    }
    for head in [
        "CONNECT evil.example:443 HTTP/1.1\r\nhost: evil.example:443",
        "TRACE /api/3/connections HTTP/1.1\r\nhost: x",
        "POST /api/3/connections HTTP/1.1\r\nhost: a\r\nhost: b\r\ncontent-type: application/json",
    ] {
        let (status, body) = raw_request(gw.addr, head, b"").await;
        assert_eq!(status, 400, "{head}: {body}");
    }
    // Content-Length and Transfer-Encoding together, with a request smuggled after the chunked
    // body: hyper frames by Transfer-Encoding (RFC 9112) and closes the connection after the
    // answer, so the smuggled request is never read, let alone forwarded.
    let before = upstream.requests().len();
    let smuggled = "GET /api/3/connections HTTP/1.1\r\nhost: x\r\n\r\n";
    let response = send_raw(
        &gw,
        format!(
            "POST /api/3/connections HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{VALID_CREATE}\r\n0\r\n\r\n{smuggled}",
            VALID_CREATE.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&response), 201, "{response}");
    assert_eq!(
        response.matches("HTTP/1.1").count(),
        1,
        "one answer: {response}"
    );
    assert!(!response.contains("405"), "the smuggled GET was not served");
    assert_eq!(upstream.requests().len(), before + 1);
    // JSON labelled in a charset the upstream might decode differently.
    let (status, body) = raw_request(
        gw.addr,
        "POST /api/3/connections HTTP/1.1\r\nhost: x\r\ncontent-type: application/json; charset=utf-16",
        VALID_CREATE.as_bytes(),
    )
    .await;
    assert_eq!(status, 415, "{body}");
    assert_eq!(upstream.requests().len(), 1, "only the framed create");
}

#[tokio::test]
async fn oversized_targets_and_header_sections_are_414_and_431() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_for(&ca, &upstream));
    let long = format!("/api/3/connections?q={}", "a".repeat(9000));
    let (status, body) =
        raw_request(gw.addr, &format!("POST {long} HTTP/1.1\r\nhost: x"), b"").await;
    assert_eq!(status, 414, "{body}");
    assert!(body.contains("uri-too-long"), "{body}");

    let many: String = (0..70).map(|i| format!("\r\nx-h{i}: 1")).collect();
    let (status, body) = raw_request(
        gw.addr,
        &format!("POST /api/3/connections HTTP/1.1\r\nhost: x{many}"),
        b"",
    )
    .await;
    assert_eq!(status, 431, "{body}");
    assert!(body.contains("headers-too-large"), "{body}");

    let big = format!("\r\nx-big: {}", "b".repeat(20_000));
    let (status, body) = raw_request(
        gw.addr,
        &format!("POST /api/3/connections HTTP/1.1\r\nhost: x{big}"),
        b"",
    )
    .await;
    assert_eq!(status, 431, "{body}");

    // Far past the limits, hyper's own backstop answers before any buffer grows further.
    let huge = format!("\r\nx-huge: {}", "c".repeat(200_000));
    let response = send_raw(
        &gw,
        format!("POST /api/3/connections HTTP/1.1\r\nhost: x{huge}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&response), 431, "{response}");
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn requests_go_to_the_configured_upstream_whatever_host_says() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_for(&ca, &upstream));
    let (status, body) = raw_request(
        gw.addr,
        "POST /api/3/connections HTTP/1.1\r\nhost: evil.example\r\nx-forwarded-host: evil.example\r\ncontent-type: application/json",
        VALID_CREATE.as_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let seen = &upstream.requests()[0];
    assert_eq!(
        seen.uri.authority().map(|a| a.as_str()),
        Some(format!("localhost:{}", upstream.addr.port()).as_str()),
        "the upstream was asked for itself"
    );
    assert_ne!(
        seen.headers.get("host").map(|h| h.to_str().unwrap()),
        Some("evil.example")
    );
}

#[tokio::test]
async fn ambiguous_or_deep_json_is_400_and_not_forwarded() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_for(&ca, &upstream));
    let deep = format!(
        r#"{{"connection":{{"service":"s","externalid":"e","name":{}1{},"logoUrl":"u","linkUrl":"l","listId":"1"}}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    for (body, kind) in [
        (
            r#"{"connection":{"service":"fooCommerce","externalid":"toystore123","name":"Toystore, Inc.","name":"Other","logoUrl":"http://example.com/i/foo.png","linkUrl":"http://example.com/foo/","listId":"1"}}"#.to_owned(),
            "duplicate-key",
        ),
        (
            format!(r#"{VALID_CREATE_WITHOUT_END},"conn\u0065ction":{{}}}}"#),
            "duplicate-key",
        ),
        (deep, "json-too-deep"),
    ] {
        let response = client()
            .post(gw.url("/api/3/connections"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body:.80}");
        assert_eq!(problem_type(response).await, kind);
    }
    assert!(upstream.requests().is_empty());
}

/// The seed's create without its final `}`, to append another top-level key.
const VALID_CREATE_WITHOUT_END: &str = r#"{"connection":{"service":"fooCommerce","externalid":"toystore123","name":"Toystore, Inc.","logoUrl":"http://example.com/i/foo.png","linkUrl":"http://example.com/foo/","listId":"1"}"#;

#[tokio::test]
async fn unknown_routes_forward_when_configured_still_checked_and_authorized() {
    let ca = TestCa::new();
    let upstream = Upstream::start(&ca, |_| Reply::json(200, r#"{"contacts":[]}"#)).await;
    let config = clients_config(&ca, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("allow = []", "allow = [\"*\"]");
    let config = config_file(
        &ca,
        "forward.toml",
        &format!("[routes]\nunknown = \"forward\"\n\n{text}"),
    );
    let gw = Gateway::start(&env_with(&ca, &upstream, &[("SPECGATE_CONFIG", &config)]));

    let response = client()
        .get(gw.url("/api/3/contacts?limit=1"))
        .bearer_auth(CRM_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = &upstream.requests()[0];
    assert_eq!(seen.uri.path(), "/api/3/contacts");
    assert_eq!(seen.uri.query(), Some("limit=1"));
    assert_eq!(seen.headers["api-token"], CANARY_TOKEN);
    assert!(!seen.headers.contains_key("authorization"));

    // billing may only create connections: not reach the rest of the API.
    let response = client()
        .get(gw.url("/api/3/contacts"))
        .bearer_auth(BILLING_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Unauthenticated: still 401.
    let response = client()
        .get(gw.url("/api/3/contacts"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Path checks still apply.
    let (status, _) = raw_request(
        gw.addr,
        &format!("GET /api/3/contacts/../users HTTP/1.1\r\nhost: x\r\nx-specgate-key: {CRM_KEY}"),
        b"",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn tls_and_mutual_tls_identify_the_client_by_its_certificate() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let (cert, key) = ca.server_files();
    let config = config_file(
        &ca,
        "mtls.toml",
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\n[[clients]]\nname = \"billing\"\nallow = [\"create-connection\"]\n\n[[clients]]\nname = \"reporting\"\nallow = []\n",
            cert.display(),
            key.display(),
            ca.ca_pem.display()
        ),
    );
    let gw = Gateway::start(&env_with(&ca, &upstream, &[("SPECGATE_CONFIG", &config)]));
    let url = format!("https://localhost:{}/api/3/connections", gw.addr.port());
    let post = |client: reqwest::Client| {
        let url = url.clone();
        async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .body(VALID_CREATE)
                .send()
                .await
        }
    };

    let billing = ca.client_cert("billing");
    let response = post(ca.https_client(Some(&billing))).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(gw.audit_lines()[0]["client"], "billing");

    let reporting = ca.client_cert("reporting");
    let response = post(ca.https_client(Some(&reporting))).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let stranger = ca.client_cert("stranger");
    let response = post(ca.https_client(Some(&stranger))).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // No certificate, or one from another CA: the handshake fails.
    assert!(post(ca.https_client(None)).await.is_err());
    let other_ca = TestCa::new();
    let forged = other_ca.client_cert("billing");
    assert!(post(ca.https_client(Some(&forged))).await.is_err());
    // Plain HTTP to the TLS port gets nothing served.
    assert!(
        client()
            .post(gw.url("/api/3/connections"))
            .body(VALID_CREATE)
            .send()
            .await
            .map(|r| r.status() != StatusCode::CREATED)
            .unwrap_or(true)
    );
    assert_eq!(upstream.requests().len(), 1);
}

#[test]
fn a_non_loopback_listener_without_client_auth_does_not_start() {
    let (status, stderr) = run_to_exit(
        &["serve"],
        &[
            ("SPECGATE_LISTEN", "0.0.0.0:0"),
            ("SPECGATE_UPSTREAM", "https://a.example/api/3"),
            ("SPECGATE_API_TOKEN", CANARY_TOKEN),
        ],
    );
    assert_eq!(status.code(), Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("0.0.0.0:0 is not a loopback address"),
        "{stderr}"
    );
    assert!(stderr.contains("allow_unauthenticated = true"), "{stderr}");
    assert!(
        stderr.contains("SPECGATE_ALLOW_UNAUTHENTICATED=true"),
        "{stderr}"
    );
    assert!(!stderr.contains(CANARY_TOKEN));
}

#[tokio::test]
async fn mock_mode_serves_on_any_address_and_says_so() {
    // As deploy/README's `docker run -e SPECGATE_LISTEN=0.0.0.0:8080 … serve --mock`.
    let gw = Gateway::start_with(
        &["serve", "--mock"],
        None,
        &[("SPECGATE_LISTEN".into(), "0.0.0.0:0".into())],
    );
    let logs = gw.logs();
    assert!(logs.contains(r#""specgate ready""#), "{logs}");
    assert!(
        logs.contains("mock mode on a non-loopback address"),
        "{logs}"
    );
    let answer = client()
        .post(format!(
            "http://127.0.0.1:{}/api/3/connections",
            gw.addr.port()
        ))
        .header("content-type", "application/json")
        .body(VALID_CREATE)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
}

#[tokio::test]
async fn without_clients_start_up_says_it_is_loopback_only() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_for(&ca, &upstream));
    gw.wait_for_log_text("specgate ready", 1, Duration::from_secs(10));
    let logs = gw.logs();
    assert!(logs.contains("no clients configured"), "{logs}");
    assert!(logs.contains("listening on loopback only"), "{logs}");
    assert!(logs.contains(r#""client_auth":"none""#), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_is_used_without_a_restart_or_a_failed_request() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_with(
        &ca,
        &upstream,
        &[("SPECGATE_API_TOKEN_POLL_MS", "50")],
    ));
    let token_file = ca.dir.path().join("token");

    // Requests keep flowing while the token changes under them.
    let url = gw.url("/api/3/connections");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let traffic = tokio::spawn(async move {
        let mut statuses = Vec::new();
        while !*stopped.borrow() {
            let status = client()
                .post(&url)
                .header("content-type", "application/json")
                .body(VALID_CREATE)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            statuses.push(status);
        }
        statuses
    });

    // Written the way a person would: a trailing newline, surrounding spaces.
    let wait = |needle: &str| {
        tokio::task::block_in_place(|| gw.wait_for_log_text(needle, 1, Duration::from_secs(30)))
    };
    std::fs::write(&token_file, "  tok-second-rotation-1\n").unwrap();
    wait("API token reloaded");
    // An empty file (a half-written one, say) keeps the current token, and says so.
    std::fs::write(&token_file, "").unwrap();
    wait("the token is empty");
    // Inner whitespace is refused the same way.
    std::fs::write(&token_file, "tok third\n").unwrap();
    wait("whitespace or control characters");
    let before = upstream.requests().len();
    upstream.wait_for_requests(before + 1).await;
    stop.send(true).unwrap();
    let statuses = traffic.await.unwrap();

    assert!(statuses.len() > 1);
    assert!(
        statuses.iter().all(|s| *s == 201),
        "a request failed during rotation: {statuses:?}"
    );
    let seen = upstream.requests();
    let tokens: Vec<_> = seen
        .iter()
        .map(|r| r.headers["api-token"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(tokens.last().unwrap(), "tok-second-rotation-1", "trimmed");
    assert!(
        tokens
            .iter()
            .all(|t| t == CANARY_TOKEN || t == "tok-second-rotation-1")
    );
    let logs = gw.logs();
    assert!(logs.contains("the token is empty"), "{logs}");
    assert!(logs.contains("whitespace or control characters"), "{logs}");
    assert!(!logs.contains("tok-second-rotation-1") && !logs.contains("tok third"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_appears_in_nothing_the_gateway_writes_on_any_path() {
    let ca = TestCa::new();
    let upstream = Upstream::start(&ca, |seen| match seen.uri.path() {
        // An upstream that echoes what it got, the worst case for a leak.
        "/api/3/echo" => Reply::With(
            StatusCode::OK,
            "text/plain",
            bytes::Bytes::from(format!("{:?}", seen.headers)),
        ),
        "/api/3/slow" => Reply::Hang,
        _ => Reply::json(201, CREATED),
    })
    .await;
    let config = clients_config(&ca, "rate_limit_per_sec = 0.01\nrate_limit_burst = 8");
    let config_text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("allow = []", "allow = [\"*\"]");
    let config = config_file(
        &ca,
        "all.toml",
        &format!("[routes]\nunknown = \"forward\"\n\n{config_text}"),
    );
    let gw = Gateway::start(&env_with(
        &ca,
        &upstream,
        &[
            ("SPECGATE_CONFIG", &config),
            ("SPECGATE_UPSTREAM_TIMEOUT_MS", "300"),
            ("SPECGATE_API_TOKEN_POLL_MS", "50"),
            ("SPECGATE_MAX_BODY_BYTES", "2048"),
            ("SPECGATE_MAX_CONCURRENT_REQUESTS", "1"),
        ],
    ));
    let mut written = Vec::new();
    let mut record = |response: String| written.push(response);

    // Every refusal the gateway makes, over raw connections so every response byte is kept.
    let key = format!("x-specgate-key: {CRM_KEY}");
    let billing = format!("x-specgate-key: {BILLING_KEY}");
    let cases = [
        format!(
            "POST /api/3/connections HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{billing}\r\ncontent-length: {}\r\n\r\n{VALID_CREATE}",
            VALID_CREATE.len()
        ),
        "POST /api/3/connections HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}".to_owned(),
        format!("GET /api/3/echo HTTP/1.1\r\nhost: x\r\n{billing}\r\n\r\n"),
        format!(
            "POST /api/3/connections HTTP/1.1\r\nhost: x\r\n{billing}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
        ),
        format!(
            "POST /api/3/connections HTTP/1.1\r\nhost: x\r\n{billing}\r\ncontent-type: application/json\r\ncontent-length: 1\r\n\r\n{{"
        ),
        format!(
            "POST /api/3/connections HTTP/1.1\r\nhost: x\r\n{billing}\r\ncontent-type: text/plain\r\ncontent-length: 1\r\n\r\nx"
        ),
        format!(
            "POST /api/3/connections HTTP/1.1\r\nhost: x\r\n{billing}\r\ncontent-type: application/json\r\ncontent-length: 19\r\n\r\n{{\"a\":1,\"a\":2,\"b\":3}}"
        ),
        format!(
            "POST /api/3/connections HTTP/1.1\r\nhost: x\r\n{billing}\r\ncontent-type: application/json\r\ncontent-length: 99999\r\n\r\n"
        ),
        format!("GET /api/3/../echo HTTP/1.1\r\nhost: x\r\n{key}\r\n\r\n"),
        format!("GET http://evil.example/api/3/echo HTTP/1.1\r\nhost: x\r\n{key}\r\n\r\n"),
        format!("TRACE /api/3/echo HTTP/1.1\r\nhost: x\r\n{key}\r\n\r\n"),
        format!("CONNECT evil.example:443 HTTP/1.1\r\nhost: evil.example:443\r\n{key}\r\n\r\n"),
        format!(
            "GET /api/3/echo?{} HTTP/1.1\r\nhost: x\r\n{key}\r\n\r\n",
            "q".repeat(9000)
        ),
        format!(
            "GET /api/3/echo HTTP/1.1\r\nhost: x\r\n{key}\r\nx-big: {}\r\n\r\n",
            "b".repeat(20_000)
        ),
        format!("GET /api/3/slow HTTP/1.1\r\nhost: x\r\n{key}\r\n\r\n"),
        format!("GET /api/3/echo HTTP/1.1\r\nhost: x\r\n{key}\r\n\r\n"),
        format!("GET /api/3/echo HTTP/1.1\r\nhost: x\r\n{key}\r\n\r\n"),
        "GET /api/3/echo HTTP/1.1\r\nhost: x\r\nauthorization: Bearer nope\r\n\r\n".to_owned(),
        "GET /api/3/echo HTTP/1.1\r\nhost: x\r\nauthorization: Basic Zm9vOmJhcg==\r\n\r\n"
            .to_owned(),
        // The eighth and ninth of billing's burst of eight: 201, then 429.
        format!(
            "POST /api/3/connections HTTP/1.1\r\nhost: x\r\n{billing}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{VALID_CREATE}",
            VALID_CREATE.len()
        ),
        format!(
            "POST /api/3/connections HTTP/1.1\r\nhost: x\r\n{billing}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{VALID_CREATE}",
            VALID_CREATE.len()
        ),
    ];
    for case in &cases {
        let case = case.replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n");
        record(send_raw(&gw, case.as_bytes()).await);
    }
    // Shed: one request holds the only slot while another arrives.
    let slow = format!("GET /api/3/slow HTTP/1.1\r\nhost: x\r\n{key}\r\nconnection: close\r\n\r\n");
    // Counted before the request is sent: it can reach the upstream before this task runs on.
    let slow_seen = upstream.requests().len() + 1;
    let held = {
        let addr = gw.addr;
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(slow.as_bytes()).await.unwrap();
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response).await;
            String::from_utf8_lossy(&response).into_owned()
        })
    };
    upstream.wait_for_requests(slow_seen).await;
    record(
        send_raw(
            &gw,
            format!("GET /api/3/echo HTTP/1.1\r\nhost: x\r\n{key}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await,
    );
    record(held.await.unwrap());
    // A rotation to a bad file, which is logged.
    std::fs::write(ca.dir.path().join("token"), "bad token\n").unwrap();
    tokio::task::block_in_place(|| {
        gw.wait_for_log_text("keeping the current token", 1, Duration::from_secs(30))
    });

    let statuses: Vec<u16> = written.iter().map(|r| status_of(r)).collect();
    for expected in [
        201, 401, 403, 422, 400, 415, 413, 414, 431, 503, 504, 200, 429,
    ] {
        assert!(
            statuses.contains(&expected),
            "no {expected} among {statuses:?}"
        );
    }
    assert!(
        upstream
            .requests()
            .iter()
            .any(|r| r.headers["api-token"] == CANARY_TOKEN),
        "the token did reach the upstream"
    );
    // The echo endpoint returns the upstream's view of the headers (the token included, as
    // the upstream's own answer): that is the upstream speaking, not specgate; everything else
    // is specgate's own bytes.
    for response in &written {
        if response.contains("x-upstream: stand-in") && response.contains("HTTP/1.1 200") {
            continue;
        }
        assert!(
            !response.contains(CANARY_TOKEN),
            "a response carried the token: {response}"
        );
    }
    let mut files = Vec::new();
    for dir in [gw.dir.path().to_path_buf()] {
        for entry in walk(&dir) {
            files.push(std::fs::read(entry).unwrap());
        }
    }
    assert!(!files.is_empty(), "the audit log was written");
    for bytes in files
        .iter()
        .chain([gw.logs().into_bytes(), gw.stdout.lock().unwrap().clone()].iter())
    {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(CANARY_TOKEN),
            "the gateway wrote the token: {text}"
        );
        assert!(
            !text.contains(BILLING_KEY) && !text.contains(CRM_KEY),
            "a client key leaked"
        );
    }
    assert!(
        gw.logs().contains("request refused"),
        "debug logs were captured"
    );
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
