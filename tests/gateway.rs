//! The gateway end to end: the real binary, a real HTTP client, a real HTTPS upstream.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;

async fn post(
    gw: &Gateway,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    client()
        .post(gw.url(path))
        .header("content-type", content_type)
        .header("Api-Token", "client-supplied-token")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn problem(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("x-request-id"));
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_valid_create_is_forwarded_with_the_stored_token_under_both_paths() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_for(&ca, &upstream));

    for path in ["/api/3/connections", "/connections"] {
        let response = client()
            .post(gw.url(&format!("{path}?trace=1")))
            .header("content-type", "application/json")
            .header("Api-Token", "client-supplied-token")
            .header("API-TOKEN", "second-client-copy")
            .header("x-request-id", "app-req-1")
            .body(VALID_CREATE)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()["x-request-id"], "app-req-1");
        assert_eq!(response.headers()["x-upstream"], "stand-in");
        assert_eq!(
            response.text().await.unwrap(),
            CREATED,
            "the upstream's body, byte for byte"
        );
    }

    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.method, "POST");
        assert_eq!(request.uri.path(), "/api/3/connections");
        assert_eq!(request.uri.query(), Some("trace=1"));
        let tokens: Vec<_> = request.headers.get_all("api-token").iter().collect();
        assert_eq!(
            tokens,
            [CANARY_TOKEN],
            "only the stored token reaches the upstream"
        );
        assert_eq!(request.headers["x-request-id"], "app-req-1");
        assert_eq!(&request.body[..], VALID_CREATE.as_bytes());
        assert_eq!(request.version, http::Version::HTTP_2, "h2 by ALPN");
    }
}

#[tokio::test]
async fn each_missing_required_field_is_named() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_for(&ca, &upstream));
    for field in ["service", "externalid", "name", "logoUrl", "linkUrl"] {
        let mut body: Value = serde_json::from_str(VALID_CREATE).unwrap();
        body["connection"].as_object_mut().unwrap().remove(field);
        let (status, problem) = problem(
            post(
                &gw,
                "/api/3/connections",
                "application/json",
                body.to_string(),
            )
            .await,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert_eq!(problem["type"], "urn:specgate:problem:schema-violation");
        assert_eq!(
            problem["errors"],
            json!([{
                "title": format!("/connection: missing required property '{field}'"),
                "code": "required",
                "source": {"pointer": format!("/connection/{field}")}
            }])
        );
        assert!(problem["request_id"].is_string());
    }
    assert!(
        upstream.requests().is_empty(),
        "nothing invalid was forwarded"
    );
}

#[tokio::test]
async fn each_field_of_the_wrong_type_is_named() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_for(&ca, &upstream));
    for field in [
        "service",
        "externalid",
        "name",
        "logoUrl",
        "linkUrl",
        "listId",
    ] {
        for wrong in [
            json!(1),
            json!(true),
            json!(["x"]),
            json!({"x": 1}),
            json!(null),
        ] {
            let mut body: Value = serde_json::from_str(VALID_CREATE).unwrap();
            body["connection"][field] = wrong.clone();
            let (status, problem) =
                problem(post(&gw, "/connections", "application/json", body.to_string()).await)
                    .await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{field} = {wrong}"
            );
            let error = &problem["errors"][0];
            assert_eq!(error["source"]["pointer"], format!("/connection/{field}"));
            assert_eq!(error["code"], "type");
            assert!(
                error["title"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("/connection/{field}: expected string, got "))
            );
        }
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn bad_bodies_get_their_status_and_are_not_forwarded() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let mut env = env_for(&ca, &upstream);
    env.push(("SPECGATE_MAX_BODY_BYTES".into(), "1024".into()));
    let gw = Gateway::start(&env);

    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "{} (the overlay requires connection)",
            "application/json",
            "{}".into(),
            422,
            "schema-violation",
        ),
        (
            "a null connection",
            "application/json",
            r#"{"connection":null}"#.into(),
            422,
            "schema-violation",
        ),
        (
            "an empty body",
            "application/json",
            String::new(),
            422,
            "schema-violation",
        ),
        (
            "malformed JSON",
            "application/json",
            r#"{"connection": {"#.into(),
            400,
            "malformed-json",
        ),
        (
            "trailing garbage",
            "application/json",
            format!("{VALID_CREATE}x"),
            400,
            "malformed-json",
        ),
        (
            "text/plain",
            "text/plain",
            VALID_CREATE.into(),
            415,
            "unsupported-media-type",
        ),
        (
            "form data",
            "application/x-www-form-urlencoded",
            "a=b".into(),
            415,
            "unsupported-media-type",
        ),
        (
            "a body over 1024 bytes",
            "application/json",
            format!(r#"{{"connection":{{"name":"{}"}}}}"#, "x".repeat(2000)),
            413,
            "body-too-large",
        ),
    ];
    for (what, content_type, body, status, kind) in cases {
        let (got, problem) =
            problem(post(&gw, "/api/3/connections", content_type, body).await).await;
        assert_eq!(got.as_u16(), status, "{what}");
        assert_eq!(
            problem["type"],
            format!("urn:specgate:problem:{kind}"),
            "{what}"
        );
        assert_eq!(problem["status"], status, "{what}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}"
        );
    }
    assert!(upstream.requests().is_empty(), "nothing was forwarded");
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let mut env = env_for(&ca, &upstream);
    env.push(("SPECGATE_MAX_BODY_BYTES".into(), "1024".into()));
    let gw = Gateway::start(&env);
    // A chunked body has no Content-Length: the limit is enforced while reading. The whole
    // request goes out in one write so the gateway has read all of it when it answers (an
    // early answer to a client still writing can reach it as a reset instead).
    let head = "POST /connections HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    let chunk = " ".repeat(600);
    let request = format!("{head}258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response)
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 413 "), "{response}");
    assert!(
        response.contains("urn:specgate:problem:body-too-large"),
        "{response}"
    );
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn unknown_paths_and_methods_are_refused_locally() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_for(&ca, &upstream));

    let (status, problem_body) =
        problem(post(&gw, "/api/3/contacts", "application/json", "{}").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem_body["type"], "urn:specgate:problem:route-not-found");

    let response = client()
        .get(gw.url("/api/3/connections"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "POST");
    let (status, _) = problem(response).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    for target in [
        "/api/3/%2e%2e/3/connections",
        "/api/3/../3/connections",
        "/api%2f3/connections",
    ] {
        let head = format!("POST {target} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json");
        let (status, body) = raw_request(gw.addr, &head, VALID_CREATE.as_bytes()).await;
        assert_eq!(status, 400, "{target}: {body}");
        assert!(body.contains("urn:specgate:problem:bad-target"), "{body}");
    }

    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_trailing_slash_is_the_operation_and_goes_upstream_as_sent() {
    // activecampaign3 builds every URL as `/api/3/connections/`.
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_for(&ca, &upstream));
    let response = post(&gw, "/api/3/connections/", "application/json", VALID_CREATE).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let (status, refusal) =
        problem(post(&gw, "/api/3/connections/", "application/json", "{}").await).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validated as the create"
    );
    assert_eq!(refusal["type"], "urn:specgate:problem:schema-violation");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1, "the invalid one was not forwarded");
    assert_eq!(seen[0].uri.path(), "/api/3/connections/");
    assert_eq!(&seen[0].body[..], VALID_CREATE.as_bytes());
    let records: Vec<_> = gw
        .audit_lines()
        .iter()
        .map(|r| (r["outcome"].clone(), r["operation_id"].clone()))
        .collect();
    assert_eq!(
        records,
        [
            (json!("attempted"), json!("create-connection")),
            (json!("created"), json!("create-connection"))
        ]
    );

    let mut env = env_for(&ca, &upstream);
    env.push(("SPECGATE_ROUTES_TRAILING_SLASH".into(), "reject".into()));
    let strict = Gateway::start(&env);
    let (status, refusal) = problem(
        post(
            &strict,
            "/api/3/connections/",
            "application/json",
            VALID_CREATE,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refusal["type"], "urn:specgate:problem:bad-target");
    assert_eq!(upstream.requests().len(), 1);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

async fn post_encoded(gw: &Gateway, encoding: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(gw.url("/api/3/connections"))
        .header("content-type", "application/json")
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn compressed_bodies_are_checked_decoded_and_forwarded_as_sent() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let mut env = env_for(&ca, &upstream);
    env.push(("SPECGATE_MAX_BODY_BYTES".into(), "65536".into()));
    let gw = Gateway::start(&env);

    let body = VALID_CREATE.as_bytes();
    let deflated = {
        use std::io::Write;
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(body).unwrap();
        e.finish().unwrap()
    };
    let brotli = {
        use std::io::Write;
        let mut out = Vec::new();
        brotli::CompressorWriter::new(&mut out, 4096, 5, 22)
            .write_all(body)
            .unwrap();
        out
    };
    for (encoding, sent) in [("gzip", gzip(body)), ("deflate", deflated), ("br", brotli)] {
        let response = post_encoded(&gw, encoding, sent.clone()).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{encoding}");
        let seen = upstream.requests();
        let last = seen.last().unwrap();
        assert_eq!(last.headers["content-encoding"], encoding);
        assert_eq!(&last.body[..], &sent[..], "{encoding}: forwarded as sent");
    }

    let mut body: Value = serde_json::from_str(VALID_CREATE).unwrap();
    body["connection"].as_object_mut().unwrap().remove("name");
    let (status, refusal) =
        problem(post_encoded(&gw, "gzip", gzip(body.to_string().as_bytes())).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refusal["detail"].as_str().unwrap().contains("'name'"),
        "{refusal}"
    );

    // 16 MiB of spaces in 16 KiB: refused at 64 KiB decoded, never inflated further.
    let bomb = gzip(&vec![b' '; 16 << 20]);
    assert!(bomb.len() < 65536);
    let (status, refusal) = problem(post_encoded(&gw, "gzip", bomb).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{refusal}");

    let response = post_encoded(&gw, "zstd", VALID_CREATE.into()).await;
    assert_eq!(response.headers()["accept-encoding"], "gzip, deflate, br");
    let (status, refusal) = problem(response).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        refusal["type"],
        "urn:specgate:problem:unsupported-content-encoding"
    );
    assert!(
        refusal["detail"]
            .as_str()
            .unwrap()
            .contains("gzip, deflate, br"),
        "{refusal}"
    );
    let (status, _) = problem(post_encoded(&gw, "gzip", VALID_CREATE.into()).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "not gzip at all");
    assert_eq!(
        upstream.requests().len(),
        3,
        "only the valid ones went upstream"
    );
}

#[tokio::test]
async fn upstream_errors_pass_through_byte_for_byte() {
    let ca = TestCa::new();
    let duplicate = r#"{"errors":[{"title":"The integration already exists in the system.","detail":"","code":"duplicate","source":{"pointer":"/data/attributes/externalid"}}]}"#;
    let upstream = Upstream::start(&ca, move |_| Reply::json(422, duplicate)).await;
    let gw = Gateway::start(&env_for(&ca, &upstream));
    let response = post(&gw, "/api/3/connections", "application/json", VALID_CREATE).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), duplicate);
    assert_eq!(upstream.requests().len(), 1);
    let outcomes: Vec<_> = gw
        .audit_lines()
        .iter()
        .map(|r| (r["outcome"].clone(), r["upstream_status"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (json!("attempted"), json!(null)),
            (json!("rejected"), json!(422))
        ],
        "a refused create is not a created record"
    );
}

#[tokio::test]
async fn an_upstream_that_is_down_is_a_502() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let mut env = env_for(&ca, &upstream);
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    env[0].1 = format!("https://localhost:{}/api/3", closed.port());
    let gw = Gateway::start(&env);
    let (status, problem) =
        problem(post(&gw, "/connections", "application/json", VALID_CREATE).await).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(problem["type"], "urn:specgate:problem:upstream-connect");
    assert_eq!(problem["detail"], "could not connect to the upstream");
    let outcomes: Vec<_> = gw
        .audit_lines()
        .iter()
        .map(|r| (r["outcome"].clone(), r["detail"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (json!("attempted"), json!(null)),
            (json!("failed"), json!("upstream-connect"))
        ]
    );
}

#[tokio::test]
async fn an_upstream_with_an_untrusted_certificate_is_a_502() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let mut env = env_for(&ca, &upstream);
    env.retain(|(k, _)| k != "SPECGATE_UPSTREAM_CA");
    let gw = Gateway::start(&env);
    let (status, problem) =
        problem(post(&gw, "/connections", "application/json", VALID_CREATE).await).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(problem["type"], "urn:specgate:problem:upstream-tls");
    assert!(
        upstream.requests().is_empty(),
        "no request crosses an unverified connection"
    );
}

/// An HTTP/2 upstream in front of `upstream` whose first connection, on the request's HEADERS,
/// answers a graceful GOAWAY (`NO_ERROR`) saying `last_processed` was the last stream it
/// processed, and closes; every later connection is passed through to `upstream` byte for byte.
/// Counts the connections it accepted.
async fn goaway_once(
    ca: &TestCa,
    upstream: std::net::SocketAddr,
    last_processed: u32,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server.clone());
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            if counted.fetch_add(1, Ordering::SeqCst) > 0 {
                tokio::spawn(async move {
                    let mut to = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut to).await;
                });
                continue;
            }
            // On a task of its own: the accept loop must not wait for this connection to end.
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut tls = acceptor.accept(tcp).await.unwrap();
                assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                let mut preface = [0u8; 24];
                tls.read_exact(&mut preface).await.unwrap();
                assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
                tls.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // SETTINGS
                loop {
                    let mut head = [0u8; 9];
                    tls.read_exact(&mut head).await.unwrap();
                    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                    let mut payload = vec![0u8; len];
                    tls.read_exact(&mut payload).await.unwrap();
                    match (head[3], head[4] & 1) {
                        // The client's SETTINGS: acknowledged.
                        (4, 0) => tls.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await.unwrap(),
                        // The request's HEADERS: GOAWAY, last stream id, NO_ERROR.
                        (1, _) => {
                            let mut goaway = vec![0, 0, 8, 7, 0, 0, 0, 0, 0];
                            goaway.extend_from_slice(&last_processed.to_be_bytes());
                            goaway.extend_from_slice(&0u32.to_be_bytes());
                            tls.write_all(&goaway).await.unwrap();
                            // Closed for writing, then drained: a close with unread bytes would
                            // be a reset, which could reach the client before the GOAWAY does.
                            tls.shutdown().await.unwrap();
                            let mut rest = Vec::new();
                            let _ = tls.read_to_end(&mut rest).await;
                            break;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_create_the_upstream_did_not_process_is_sent_again_once() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let (front, accepted) = goaway_once(&ca, upstream.addr, 0).await;
    let mut env = env_for(&ca, &upstream);
    env[0].1 = format!("https://localhost:{}/api/3", front.port());
    let gw = Gateway::start(&env);
    let response = post(&gw, "/connections", "application/json", VALID_CREATE).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.text().await.unwrap(), CREATED);
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "a second connection");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(&seen[0].body[..], VALID_CREATE.as_bytes());
    assert_eq!(seen[0].headers["api-token"], CANARY_TOKEN);
    let outcomes: Vec<_> = gw
        .audit_lines()
        .iter()
        .map(|r| r["outcome"].clone())
        .collect();
    assert_eq!(outcomes, [json!("attempted"), json!("created")]);
}

#[tokio::test]
async fn a_create_the_upstream_may_have_processed_is_never_sent_again() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    // The GOAWAY names the request's stream (1) as processed, then the connection closes
    // before an answer: the create may exist upstream, so it must not be made twice.
    let (front, accepted) = goaway_once(&ca, upstream.addr, 1).await;
    let mut env = env_for(&ca, &upstream);
    env[0].1 = format!("https://localhost:{}/api/3", front.port());
    let gw = Gateway::start(&env);
    let (status, problem) =
        problem(post(&gw, "/connections", "application/json", VALID_CREATE).await).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(problem["type"], "urn:specgate:problem:upstream-protocol");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "no second connection");
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn connections_spread_over_the_serving_threads_each_forward_through_its_own_pool() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let mut env = env_for(&ca, &upstream);
    env.push(("SPECGATE_WORKERS".into(), "3".into()));
    let gw = Gateway::start(&env);
    assert_eq!(gw.wait_for_log("specgate ready", 1)["workers"], 3);
    // A client (and so a connection) each: the connections go to the threads in turn.
    let mut answers = Vec::new();
    for _ in 0..6 {
        let response = post(&gw, "/connections", "application/json", VALID_CREATE).await;
        answers.push((response.status(), response.text().await.unwrap()));
    }
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::CREATED);
        assert_eq!(body, CREATED);
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), 6);
    // A pool per thread: three upstream connections, each carrying two of the creates.
    let mut connections: Vec<_> = seen.iter().map(|r| r.peer).collect();
    connections.sort();
    connections.dedup();
    assert_eq!(connections.len(), 3, "{connections:?}");
    let outcomes: Vec<_> = gw
        .audit_lines()
        .iter()
        .map(|r| r["outcome"].clone())
        .collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "created").count(), 6);
}

#[tokio::test]
async fn a_slow_upstream_is_a_504() {
    let ca = TestCa::new();
    let upstream = Upstream::start(&ca, |_| Reply::Hang).await;
    let mut env = env_for(&ca, &upstream);
    env.push(("SPECGATE_UPSTREAM_TIMEOUT_MS".into(), "300".into()));
    let gw = Gateway::start(&env);
    let (status, problem) =
        problem(post(&gw, "/connections", "application/json", VALID_CREATE).await).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        problem["detail"],
        "the upstream did not respond within 300 ms"
    );
    let outcomes: Vec<_> = gw
        .audit_lines()
        .iter()
        .map(|r| (r["outcome"].clone(), r["detail"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (json!("attempted"), json!(null)),
            (json!("failed"), json!("upstream-timeout"))
        ]
    );
}

#[tokio::test]
async fn each_create_gains_one_audit_line_before_the_client_hears_of_it() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_for(&ca, &upstream));
    let response = client()
        .post(gw.url("/api/3/connections"))
        .header("content-type", "application/json")
        .header("x-request-id", "audit-me")
        .body(VALID_CREATE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    // Read the moment the response arrived: the record must already be there.
    let lines = gw.audit_lines();
    assert_eq!(lines.len(), 2, "an attempted record, then the created one");
    assert_eq!(lines[0]["outcome"], "attempted");
    assert_eq!(lines[0]["request_id"], "audit-me");
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[1]["seq"], 2);
    assert_eq!(
        lines[1]["prev"], lines[0]["hash"],
        "the records are chained"
    );
    let record = &lines[1];
    assert_eq!(record["request_id"], "audit-me");
    assert_eq!(record["operation_id"], "create-connection");
    assert_eq!(record["method"], "POST");
    assert_eq!(record["path"], "/api/3/connections");
    assert_eq!(record["client"], Value::Null);
    assert_eq!(record["upstream_status"], 201);
    assert_eq!(record["outcome"], "created");
    assert_eq!(record["resource_id"], "1");
    assert_eq!(
        record["resource"],
        json!({"service": "fooCommerce", "externalid": "toystore123", "name": "Toystore, Inc.",
               "logoUrl": "http://example.com/i/foo.png", "linkUrl": "http://example.com/foo/", "listId": "1"})
    );
    assert!(record["latency_ms"].as_f64().unwrap() >= 0.0);
    let ts = record["ts"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
        "{ts}"
    );
    assert!(ts.ends_with('Z'));
}

#[tokio::test]
async fn the_token_appears_nowhere_but_upstream() {
    let ca = TestCa::new();
    let upstream = Upstream::start(&ca, |seen| match seen.body.len() {
        0 => Reply::json(
            401,
            r#"{"message":"No Result found for Subscriber with id 0"}"#,
        ),
        _ => Reply::json(201, CREATED),
    })
    .await;
    let mut env = env_for(&ca, &upstream);
    env.push(("SPECGATE_UPSTREAM_TIMEOUT_MS".into(), "2000".into()));
    let gw = Gateway::start(&env);

    // Every path through the gateway: success, each refusal, the upstream's own error.
    let mut bodies = Vec::new();
    for (path, content_type, body) in [
        (
            "/api/3/connections",
            "application/json",
            VALID_CREATE.to_owned(),
        ),
        ("/api/3/connections", "application/json", "{}".to_owned()),
        ("/api/3/connections", "application/json", "{".to_owned()),
        ("/api/3/connections", "text/plain", "x".to_owned()),
        ("/api/3/nope", "application/json", "{}".to_owned()),
    ] {
        let response = post(&gw, path, content_type, body).await;
        bodies.push(format!("{:?}", response.headers()));
        bodies.push(response.text().await.unwrap());
    }
    let response = client()
        .get(gw.url("/api/3/connections"))
        .send()
        .await
        .unwrap();
    bodies.push(format!("{:?}", response.headers()));
    bodies.push(response.text().await.unwrap());

    assert_eq!(
        upstream.requests()[0].headers["api-token"],
        CANARY_TOKEN,
        "the token did reach the upstream"
    );
    for body in &bodies {
        assert!(
            !body.contains(CANARY_TOKEN),
            "a response carried the token: {body}"
        );
    }
    let audit = std::fs::read_to_string(&gw.audit_log).unwrap();
    assert!(!audit.is_empty());
    assert!(
        !audit.contains(CANARY_TOKEN),
        "the audit log carries the token"
    );
    let logs = gw.logs();
    assert!(
        logs.contains("specgate ready"),
        "logs were captured at debug level"
    );
    assert!(
        !logs.contains(CANARY_TOKEN),
        "a log line carries the token:\n{logs}"
    );
    assert!(
        !logs.contains("client-supplied-token"),
        "a log line carries the client's token"
    );
}

#[test]
fn missing_or_bad_settings_stop_start_up_with_one_line() {
    let (status, stderr) = run_to_exit(&["serve"], &[("SPECGATE_API_TOKEN", CANARY_TOKEN)]);
    assert_eq!(status.code(), Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("specgate: SPECGATE_UPSTREAM (upstream.url): "),
        "{stderr}"
    );

    let (status, stderr) = run_to_exit(
        &["serve"],
        &[("SPECGATE_UPSTREAM", "https://a.example/api/3")],
    );
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("SPECGATE_API_TOKEN_FILE"), "{stderr}");

    let (status, stderr) = run_to_exit(
        &["serve"],
        &[
            ("SPECGATE_UPSTREAM", "https://a.example/api/3"),
            ("SPECGATE_API_TOKEN", CANARY_TOKEN),
            ("SPECGATE_UPSTREAM_TIMEOUT_MS", "-1"),
        ],
    );
    assert_eq!(status.code(), Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("SPECGATE_UPSTREAM_TIMEOUT_MS"), "{stderr}");
    assert!(!stderr.contains(CANARY_TOKEN));
}

#[test]
fn a_broken_spec_stops_start_up_naming_the_file_and_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("broken.yaml");
    std::fs::write(
        &spec,
        "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /things:\n    post:\n      requestBody:\n        content:\n          application/json:\n            schema: {type: object, properties: {a: {$ref: '#/components/schemas/Nope'}}}\n",
    )
    .unwrap();
    let spec_path = spec.display().to_string();
    let (status, stderr) = run_to_exit(
        &["serve"],
        &[
            ("SPECGATE_UPSTREAM", "https://a.example/api/3"),
            ("SPECGATE_API_TOKEN", CANARY_TOKEN),
            ("SPECGATE_SPEC", &spec_path),
        ],
    );
    assert_eq!(status.code(), Some(2));
    assert!(
        stderr.contains(&format!("{spec_path} at /paths/~1things/post/requestBody/content/application~1json/schema/properties/a/$ref: $ref \"#/components/schemas/Nope\" points at nothing")),
        "{stderr}"
    );
}

#[test]
fn a_spec_with_what_can_only_be_loosened_serves_and_logs_each_warning() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("loose.yaml");
    std::fs::write(
        &spec,
        "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /things:\n    post:\n      requestBody:\n        content:\n          application/json:\n            schema: {type: object, properties: {a: {type: strng}, b: {type: string, pattern: '[a-z]{1-20}'}}}\n      responses: {'200': {description: ok}}\n",
    )
    .unwrap();
    let spec_path = spec.display().to_string();
    let gw = Gateway::start_with(
        &["serve", "--mock"],
        None,
        &[("SPECGATE_SPEC".to_owned(), spec_path.clone())],
    );
    let at = "/paths/~1things/post/requestBody/content/application~1json/schema/properties";
    let ready = gw.wait_for_log("specgate ready", 1);
    assert_eq!(ready["spec_warnings"], 2, "{ready}");
    let logs = gw.logs();
    for pointer in [format!("{at}/a/type"), format!("{at}/b/pattern")] {
        assert!(
            logs.lines().any(
                |l| l.contains("\"WARN\"") && l.contains(&format!("\"pointer\":\"{pointer}\""))
            ),
            "{pointer}:\n{logs}"
        );
    }
}

#[tokio::test]
async fn another_operation_in_the_spec_works_without_new_code() {
    let ca = TestCa::new();
    let upstream = Upstream::start(&ca, |seen| match seen.method.as_str() {
        "GET" => Reply::json(200, r#"{"contact":{"id":"5","email":"a@example.com"}}"#),
        _ => Reply::json(201, r#"{"contact":{"id":"5","email":"a@example.com"}}"#),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("contacts.yaml");
    std::fs::write(
        &spec,
        r##"openapi: 3.0.3
info: {title: contacts, version: "1"}
servers: [{url: "https://{account}.api-us1.com/api/3", variables: {account: {default: acct}}}]
components:
  securitySchemes: {key: {type: apiKey, in: header, name: Api-Token}}
  schemas:
    Contact:
      type: object
      required: [email]
      properties:
        email: {type: string}
        phone: {type: string, nullable: true}
security: [{key: []}]
paths:
  /contacts:
    post:
      operationId: create-contact
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [contact]
              properties: {contact: {$ref: "#/components/schemas/Contact"}}
  /contacts/{id}:
    get: {operationId: get-contact}
"##,
    )
    .unwrap();
    let mut env = env_for(&ca, &upstream);
    env.push(("SPECGATE_SPEC".into(), spec.display().to_string()));
    let gw = Gateway::start(&env);

    let ok = post(
        &gw,
        "/api/3/contacts",
        "application/json",
        r#"{"contact":{"email":"a@example.com","phone":null}}"#,
    )
    .await;
    assert_eq!(ok.status(), StatusCode::CREATED);
    let (status, bad) = problem(
        post(
            &gw,
            "/contacts",
            "application/json",
            r#"{"contact":{"phone":5}}"#,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad["errors"].as_array().unwrap().len(), 2, "{bad}");
    let got = client()
        .get(gw.url("/api/3/contacts/5"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);

    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].uri.path(), "/api/3/contacts/5");
    assert_eq!(seen[1].headers["api-token"], CANARY_TOKEN);
    let audit = gw.audit_lines();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1]["outcome"], "created");
    assert_eq!(audit[1]["operation_id"], "create-contact");
    assert_eq!(audit[1]["resource_id"], "5");
    assert_eq!(
        audit[1]["resource"],
        json!({"email": "a@example.com", "phone": null})
    );
}

#[tokio::test]
async fn a_client_cannot_strip_the_injected_token_with_connection() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_for(&ca, &upstream));
    // Connection names headers that are hop-by-hop: they go at the edge, before specgate sets
    // its own, not after.
    let head = "POST /api/3/connections HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: keep-alive, api-token";
    let (status, body) = raw_request(gw.addr, head, VALID_CREATE.as_bytes()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(upstream.requests()[0].headers["api-token"], CANARY_TOKEN);
}

#[tokio::test]
async fn two_content_types_are_refused() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_for(&ca, &upstream));
    let head = "POST /api/3/connections HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-type: application/json";
    let (status, body) = raw_request(gw.addr, head, VALID_CREATE.as_bytes()).await;
    assert_eq!(status, 415, "{body}");
    assert!(body.contains("more than one Content-Type"), "{body}");
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn errors_carry_message_and_come_as_plain_json_to_clients_that_accept_only_that() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_for(&ca, &upstream));
    let send = |accept: Option<&'static str>| {
        let mut request = client()
            .post(gw.url("/api/3/connections"))
            .header("content-type", "application/json")
            .body(r#"{"connection":{}}"#);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        request.send()
    };
    for (accept, media_type) in [
        (None, "application/problem+json"),
        (Some("*/*"), "application/problem+json"),
        (Some("application/problem+json"), "application/problem+json"),
        // What activecampaign-python and most HTTP libraries send: it parses only this.
        (Some("application/json"), "application/json"),
    ] {
        let response = send(accept).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(response.headers()["content-type"], media_type, "{accept:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["message"], body["detail"], "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("violations"),
            "{body}"
        );
        assert!(!body["errors"].as_array().unwrap().is_empty(), "{body}");
    }
    assert!(upstream.requests().is_empty(), "nothing invalid forwarded");
}
