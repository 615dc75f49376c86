//! Operating the gateway, end to end with the real binary: readiness, metrics, graceful
//! shutdown, live reload and mock mode.

use crate::support;

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;

async fn create(gw: &Gateway, request_id: &str) -> reqwest::Response {
    client()
        .post(gw.url("/api/3/connections"))
        .header("content-type", "application/json")
        .header("x-request-id", request_id)
        .header("Api-Token", "client-supplied-token")
        .body(VALID_CREATE)
        .send()
        .await
        .unwrap()
}

async fn readyz(gw: &Gateway) -> (StatusCode, Value) {
    let response = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn reload(gw: &Gateway) -> (StatusCode, Value) {
    let response = client().post(gw.admin_url("/reload")).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Parses a Prometheus text exposition into `series → value`, failing on any line that is
/// neither a comment nor `name{labels} value`.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let mut series = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "{line}"
            );
            continue;
        }
        let (name, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("not a number: {line}")),
        };
        let metric = name.split('{').next().unwrap();
        assert!(
            metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        assert!(
            !name.contains('{') || name.ends_with('}'),
            "bad labels: {line}"
        );
        series.insert(name.to_owned(), value);
    }
    series
}

async fn metrics(gw: &Gateway) -> (String, HashMap<String, f64>) {
    let response = client().get(gw.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    let parsed = parse_exposition(&text);
    (text, parsed)
}

#[tokio::test]
async fn a_missing_token_file_starts_unready_and_its_arrival_makes_it_ready() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let env = env_for(&ca, &upstream);
    let token_file = ca.dir.path().join("token");
    std::fs::remove_file(&token_file).unwrap();
    let gw = Gateway::start(&env);
    // The start-up line says what /readyz says, and why.
    let logs = gw.logs();
    let serving = logs
        .lines()
        .find(|l| l.contains("specgate serving, not ready: token: SPECGATE_API_TOKEN_FILE"))
        .unwrap_or_else(|| panic!("no not-ready start-up line:\n{logs}"));
    assert!(serving.contains(r#""level":"WARN""#), "{serving}");
    assert!(!logs.contains(r#""specgate ready""#), "{logs}");

    let health = client().get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "alive, if not ready");
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["failing"], serde_json::json!(["token"]), "{body}");
    let detail = body["checks"]["token"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("SPECGATE_API_TOKEN_FILE") && detail.contains("cannot be read"),
        "{detail}"
    );
    let refused = create(&gw, "no-token").await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:specgate:problem:token-unavailable");
    assert!(
        upstream.requests().is_empty(),
        "nothing forwarded without a token"
    );

    // The file appears (a Secret mounted late): polling loads it, no reload needed, and the
    // log says ready once /readyz does.
    std::fs::write(&token_file, format!("{CANARY_TOKEN}\n")).unwrap();
    let ready = gw.wait_for_log("specgate ready", 1);
    assert!(ready["listen"].is_string(), "{ready}");
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(
        create(&gw, "with-token").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(upstream.requests()[0].headers["api-token"], CANARY_TOKEN);

    // Gone again: a reload fails and the loaded token keeps serving.
    std::fs::remove_file(&token_file).unwrap();
    let (status, body) = reload(&gw).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(!body.to_string().contains(CANARY_TOKEN));
    assert_eq!(create(&gw, "old-token").await.status(), StatusCode::CREATED);
    assert_eq!(upstream.requests()[1].headers["api-token"], CANARY_TOKEN);
    let (text, m) = metrics(&gw).await;
    assert_eq!(m[r#"specgate_token_reloads_total{result="success"}"#], 1.0);
    assert_eq!(m[r#"specgate_token_reloads_total{result="failure"}"#], 1.0);
    assert!(!text.contains(CANARY_TOKEN));
    assert!(!gw.logs().contains(CANARY_TOKEN));
}

#[tokio::test]
async fn an_audit_log_that_fails_turns_readiness_off_and_refuses_creates() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    // A file-size limit makes every audit write fail (EFBIG), as a full disk would (ENOSPC).
    let gw = Gateway::launch(
        &["prlimit", "--fsize=100"],
        &["serve"],
        None,
        &env_for(&ca, &upstream),
    );
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The attempt record cannot be written, so the create is refused before it is forwarded.
    let refused = create(&gw, "first").await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:specgate:problem:audit-unavailable");
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["failing"], serde_json::json!(["audit"]), "{body}");

    let refused = create(&gw, "second").await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(upstream.requests().is_empty(), "no create was forwarded");
    let (_, m) = metrics(&gw).await;
    assert!(m["specgate_audit_errors_total"] >= 2.0, "{m:?}");
}

#[tokio::test]
async fn metrics_parse_and_count_what_happened() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_for(&ca, &upstream));
    let (_, before) = metrics(&gw).await;
    assert_eq!(before["specgate_requests_in_flight"], 0.0);

    for id in ["metrics-req-1", "metrics-req-2"] {
        assert_eq!(create(&gw, id).await.status(), StatusCode::CREATED);
    }
    let invalid = client()
        .post(gw.url("/connections"))
        .header("content-type", "application/json")
        .body(r#"{"connection":{"service":"s"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = client()
        .get(gw.url("/api/3/secret-customer-42"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let wrong_method = client()
        .get(gw.url("/api/3/connections"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);

    let (text, m) = metrics(&gw).await;
    let expect = [
        (
            r#"specgate_requests_total{operation="create-connection",method="POST",status_class="2xx"}"#,
            2.0,
        ),
        (
            r#"specgate_requests_total{operation="create-connection",method="POST",status_class="4xx"}"#,
            1.0,
        ),
        (
            r#"specgate_requests_total{operation="unmatched",method="GET",status_class="4xx"}"#,
            2.0,
        ),
        (
            r#"specgate_validation_failures_total{operation="create-connection",reason="schema-violation"}"#,
            1.0,
        ),
        (
            r#"specgate_upstream_duration_seconds_count{operation="create-connection"}"#,
            2.0,
        ),
        ("specgate_requests_in_flight", 0.0),
    ];
    for (series, value) in expect {
        assert_eq!(m.get(series), Some(&value), "{series}:\n{text}");
    }
    let build = m
        .keys()
        .find(|k| k.starts_with("specgate_build_info{"))
        .expect("build info");
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    for series in [
        "specgate_audit_records_total",
        "specgate_audit_errors_total",
        "specgate_audit_sync_duration_seconds_count",
    ] {
        assert!(m.contains_key(series), "{series} is exposed:\n{text}");
    }
    for never in [
        CANARY_TOKEN,
        "client-supplied-token",
        "metrics-req-1",
        "secret-customer-42",
        "toystore123",
    ] {
        assert!(!text.contains(never), "{never} in the metrics");
    }

    // One access-log event per request, none with a credential. Each is written as its
    // response completes, which can be just after the client has read it: wait for all five.
    gw.wait_for_log("request", 5);
    let access: Vec<Value> = gw
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["message"] == "request")
        .collect();
    assert_eq!(access.len(), 5, "{}", gw.logs());
    let first = access
        .iter()
        .find(|e| e["request_id"] == "metrics-req-1")
        .unwrap();
    assert_eq!(first["operation"], "create-connection");
    assert_eq!(first["status"], 201);
    assert_eq!(first["upstream_status"], 201);
    assert_eq!(first["bytes_in"], VALID_CREATE.len());
    assert!(first["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(
        first.get("client").is_none(),
        "no clients configured: no client name"
    );
    assert!(first["latency_ms"].as_f64().unwrap() > 0.0);
    let headers = first["headers"].as_str().expect("headers at debug level");
    assert!(headers.contains("api-token: <redacted>"), "{headers}");
    assert!(!gw.logs().contains("client-supplied-token"));
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let ca = TestCa::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    let upstream = Upstream::start(&ca, move |_| {
        Reply::Held(held.clone(), Box::new(Reply::json(201, CREATED)))
    })
    .await;
    let mut gw = Gateway::start(&env_for(&ca, &upstream));

    let ids = ["drain-1", "drain-2", "drain-3"];
    let in_flight: Vec<_> = ids
        .iter()
        .map(|id| {
            let (url, id) = (gw.url("/api/3/connections"), id.to_string());
            tokio::spawn(async move {
                client()
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-request-id", id)
                    .body(VALID_CREATE)
                    .send()
                    .await
            })
        })
        .collect();
    upstream.wait_for_requests(ids.len()).await;

    gw.signal("TERM");
    // The proxy listener is closed; the admin listener still answers while draining.
    gw.wait_for_log("listener closed; finishing open connections", 1);
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["failing"], serde_json::json!(["shutdown"]), "{body}");
    let late = client()
        .post(gw.url("/api/3/connections"))
        .header("content-type", "application/json")
        .body(VALID_CREATE)
        .send()
        .await;
    assert!(
        late.as_ref().is_err_and(|e| e.is_connect()),
        "a new connection is refused: {late:?}"
    );

    gate.add_permits(ids.len());
    for request in in_flight {
        let response = request
            .await
            .unwrap()
            .expect("an in-flight request is answered");
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.text().await.unwrap(), CREATED);
    }
    let status = gw.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{}", gw.logs());
    let audited: Vec<String> = gw
        .audit_lines()
        .iter()
        .filter(|r| r["outcome"] == "created")
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect();
    let mut audited = audited;
    audited.sort();
    assert_eq!(audited, ids, "every answered create is on disk");
    assert!(
        gw.logs()
            .contains("in-flight requests finished; every acknowledged audit record is synced")
    );
}

#[tokio::test]
async fn sighup_applies_a_good_config_and_refuses_a_bad_one() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let mut env = env_for(&ca, &upstream);
    let config = ca.dir.path().join("specgate.toml");
    std::fs::write(&config, "max_body_bytes = 100000\n").unwrap();
    env.push(("SPECGATE_CONFIG".into(), config.display().to_string()));
    let gw = Gateway::start(&env);
    assert_eq!(create(&gw, "before").await.status(), StatusCode::CREATED);

    // Good: a smaller body limit applies to the next request.
    std::fs::write(&config, "max_body_bytes = 100\n").unwrap();
    gw.signal("HUP");
    let reloaded = gw.wait_for_log("config reloaded", 1);
    assert_eq!(reloaded["trigger"], "SIGHUP");
    assert_eq!(
        create(&gw, "after-good").await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );

    // Bad: a spec that does not exist. Nothing of it applies, not even the good parts.
    std::fs::write(
        &config,
        "max_body_bytes = 100000\n[spec]\npath = \"/nonexistent/spec.yaml\"\n",
    )
    .unwrap();
    gw.signal("HUP");
    let refused = gw.wait_for_log("reload refused; the running version keeps serving", 1);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/spec.yaml"),
        "{refused}"
    );
    assert_eq!(
        create(&gw, "after-bad").await.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "the old version keeps serving"
    );

    // And a file that is not TOML, through the admin endpoint.
    std::fs::write(&config, "max_body_bytes = \n").unwrap();
    let (status, body) = reload(&gw).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"].as_str().unwrap().contains("not valid TOML"),
        "{body}"
    );
    let (_, m) = metrics(&gw).await;
    assert_eq!(m[r#"specgate_config_reloads_total{result="success"}"#], 1.0);
    assert_eq!(m[r#"specgate_config_reloads_total{result="failure"}"#], 2.0);
    let (status, _) = readyz(&gw).await;
    assert_eq!(status, StatusCode::OK, "a refused reload leaves it ready");
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn mock_mode_answers_from_the_spec_with_no_upstream_or_token() {
    let gw = Gateway::start_with(&["serve", "--mock"], None, &[]);
    let ready = gw.wait_for_log("specgate ready", 1);
    assert_eq!(ready["mode"], "mock");
    assert!(
        ready["upstream"]
            .as_str()
            .unwrap()
            .contains("no upstream or token needed"),
        "{ready}"
    );

    let response = create(&gw, "mocked-1").await;
    assert_eq!(response.status(), StatusCode::OK, "the spec's 200 example");
    assert_eq!(response.headers()["x-specgate-mock"], "true");
    assert_eq!(response.headers()["x-request-id"], "mocked-1");
    let body: Value = response.json().await.unwrap();
    let example: Value = serde_json::from_str(CREATED).unwrap();
    assert_eq!(body, example, "the seed's string example, parsed");

    // The same validation as in front of the real API.
    let invalid = client()
        .post(gw.url("/connections"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let wrong = client()
        .get(gw.url("/api/3/connections"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);

    // And the same audit.
    let lines = gw.audit_lines();
    assert_eq!(lines.len(), 2, "the attempt, then the create");
    assert_eq!(lines[1]["outcome"], "created");
    assert_eq!(lines[1]["request_id"], "mocked-1");
    assert_eq!(lines[1]["resource_id"], "1");
    assert_eq!(lines[1]["upstream_status"], 200);

    let (status, body) = readyz(&gw).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, m) = metrics(&gw).await;
    assert!(
        !m.keys().any(|k| k.starts_with("specgate_upstream_duration")
            && k.contains("create-connection")),
        "nothing was forwarded, so no upstream time"
    );
}

#[tokio::test]
async fn dynamic_mock_answers_follow_the_request_and_the_audit_records_their_ids() {
    let gw = Gateway::start_with(&["serve", "--mock"], None, &[]);
    let mut ids = Vec::new();
    for name in ["First, Inc.", "Second, Inc."] {
        let mut body: Value = serde_json::from_str(VALID_CREATE).unwrap();
        body["connection"]["name"] = name.into();
        let response = client()
            .post(gw.url("/api/3/connections"))
            .header("content-type", "application/json")
            .header("prefer", "dynamic=true")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["preference-applied"], "dynamic=true");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["connection"]["name"], name, "{answer}");
        assert_eq!(
            answer["connection"]["externalid"],
            body["connection"]["externalid"]
        );
        ids.push(answer["connection"]["id"].as_str().unwrap().to_owned());
    }
    assert_ne!(ids[0], ids[1], "two creates, two resources");
    assert!(!ids.contains(&"1".to_owned()));
    // Without the preference: the example, as before.
    let plain: Value = create(&gw, "plain").await.json().await.unwrap();
    assert_eq!(plain["connection"]["id"], "1");

    let created: Vec<String> = gw
        .audit_lines()
        .iter()
        .filter(|r| r["outcome"] == "created")
        .map(|r| r["resource_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(created, [ids[0].as_str(), ids[1].as_str(), "1"]);

    // The setting makes every answer dynamic; `Prefer: dynamic=false` opts a request out.
    let gw = Gateway::start_with(
        &["serve", "--mock"],
        None,
        &[("SPECGATE_MOCK_DYNAMIC".into(), "true".into())],
    );
    let dynamic: Value = create(&gw, "d").await.json().await.unwrap();
    assert_ne!(dynamic["connection"]["id"], "1");
    let opted_out = client()
        .post(gw.url("/api/3/connections"))
        .header("content-type", "application/json")
        .header("prefer", "dynamic=false")
        .body(VALID_CREATE)
        .send()
        .await
        .unwrap();
    let opted_out: Value = opted_out.json().await.unwrap();
    assert_eq!(opted_out["connection"]["id"], "1");
}

async fn post_to(gw: &Gateway, path: &str, content_type: &str, body: &str) -> StatusCode {
    client()
        .post(gw.url(path))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn report_mode_forwards_exactly_what_enforce_mode_refuses_and_records_why() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let enforcing = Gateway::start(&env_for(&ca, &upstream));
    let mut env = env_for(&ca, &upstream);
    env.push(("SPECGATE_ENFORCE".into(), "report".into()));
    let reporting = Gateway::start(&env);

    let mut invalid: Value = serde_json::from_str(VALID_CREATE).unwrap();
    invalid["connection"]
        .as_object_mut()
        .unwrap()
        .remove("name");
    invalid["connection"]["logoUrl"] = json!(987_654_321);
    let invalid = invalid.to_string();
    let deep = format!("{{\"connection\":{}1{}}}", "[".repeat(80), "]".repeat(80));
    let create = "/api/3/connections";
    let json = "application/json";
    // (path, content type, body, what enforce mode answers, whether report mode forwards)
    let cases = [
        (create, json, VALID_CREATE, 201, true),
        (create, json, &invalid[..], 422, true),
        (create, "text/plain", VALID_CREATE, 415, true),
        // Never relaxed: JSON that does not parse, a key given twice, nesting too deep, a
        // path that could route around the spec.
        (create, json, "{\"connection\":", 400, false),
        (
            create,
            json,
            r#"{"connection":{"name":"a","name":"b"}}"#,
            400,
            false,
        ),
        (create, json, &deep[..], 400, false),
        ("/api/3//connections", json, VALID_CREATE, 400, false),
    ];
    for (path, content_type, body, enforced, relaxed) in cases {
        let before = upstream.requests().len();
        let status = post_to(&enforcing, path, content_type, body).await;
        assert_eq!(status.as_u16(), enforced, "{content_type} {body}");
        let after_enforcing = upstream.requests().len();
        assert_eq!(after_enforcing - before, usize::from(enforced == 201));
        let status = post_to(&reporting, path, content_type, body).await;
        let forwarded = upstream.requests().len() - after_enforcing;
        assert_eq!(forwarded, usize::from(relaxed), "{content_type} {body}");
        if relaxed {
            assert_eq!(status, StatusCode::CREATED, "the upstream's answer");
            let last = upstream.requests().last().unwrap().body.clone();
            assert_eq!(&last[..], body.as_bytes());
        } else {
            assert_eq!(status.as_u16(), enforced, "the same refusal");
        }
    }

    // Each forwarded violation is counted, logged by kind and place, and in its audit records.
    let (_, m) = metrics(&reporting).await;
    let counted =
        r#"specgate_request_violations_total{operation="create-connection",mode="report"}"#;
    assert_eq!(m[counted], 2.0);
    reporting.wait_for_log(
        "report mode: forwarded a request enforce mode would refuse",
        2,
    );
    let records = reporting.audit_lines();
    let created: Vec<&Value> = records
        .iter()
        .filter(|r| r["outcome"] == "created")
        .collect();
    assert_eq!(created.len(), 3);
    assert_eq!(created[0]["violations"], Value::Null);
    assert_eq!(created[1]["violations"]["kind"], "schema-violation");
    let mut at: Vec<&str> = created[1]["violations"]["at"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["pointer"].as_str().unwrap())
        .collect();
    at.sort();
    assert_eq!(at, ["/connection/logoUrl", "/connection/name"]);
    assert_eq!(
        created[2]["violations"],
        json!({"kind": "unsupported-media-type", "at": []})
    );
    // Audited with the fields it sent, like any create; the offending value in no log line.
    assert_eq!(created[1]["resource"]["externalid"], "toystore123");
    assert!(
        !reporting.logs().contains("987654321"),
        "never a value in the log"
    );
}

#[tokio::test]
async fn an_overlay_sets_one_operations_mode() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let overlay = ca.dir.path().join("report.overlay.yaml");
    std::fs::write(
        &overlay,
        "overlay: 1.0.0\ninfo: {title: t, version: 1.0.0}\nactions:\n  \
         - target: \"$.paths['/connections'].post\"\n    update:\n      x-specgate-enforce: off\n",
    )
    .unwrap();
    let tightening = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/activecampaign-v3.overlay.yaml"
    );
    let mut env = env_for(&ca, &upstream);
    env.push((
        "SPECGATE_OVERLAYS".into(),
        format!("{tightening},{}", overlay.display()),
    ));
    let gw = Gateway::start(&env);
    let status = post_to(&gw, "/api/3/connections", "application/json", "{}").await;
    assert_eq!(status, StatusCode::CREATED, "off: not checked");
    assert_eq!(upstream.requests().len(), 1);
    let (_, m) = metrics(&gw).await;
    assert!(
        !m.keys()
            .any(|k| k.starts_with("specgate_request_violations_total")),
        "off reports nothing"
    );
    let created = gw.audit_lines();
    assert_eq!(
        created.last().unwrap()["outcome"],
        "created",
        "still audited"
    );
}

#[test]
fn text_logs_carry_no_colour_codes_off_a_terminal() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(binary())
        .args(["serve", "--mock"])
        .env_clear()
        .env("SPECGATE_LISTEN", "127.0.0.1:0")
        .env("SPECGATE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("SPECGATE_AUDIT_LOG", dir.path().join("audit.jsonl"))
        .env("SPECGATE_LOG_FORMAT", "text")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read up to the ready line: each line arrives as it is written, no waiting on time.
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("specgate ready") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("specgate ready"), "{seen}");
    assert!(seen.contains(" INFO "), "text, not JSON: {seen}");
    assert!(!seen.contains('\u{1b}'), "colour codes in a pipe: {seen:?}");
}

#[tokio::test]
async fn a_reload_cannot_put_the_token_behind_a_listener_anyone_can_reach() {
    use std::io::{BufRead, BufReader};
    // Mock mode may listen on any address; a config edit that turns on proxy mode (and names
    // loopback, which takes a restart to move to) must not start forwarding with the token on
    // the address really bound. The listener comes from the file here, not the environment
    // (the harness's SPECGATE_LISTEN would be read again by the reload and refused anyway).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("specgate.toml");
    std::fs::write(
        &config,
        "listen = \"0.0.0.0:0\"\n[upstream]\nmode = \"mock\"\n",
    )
    .unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{CANARY_TOKEN}\n")).unwrap();
    let mut child = std::process::Command::new(binary())
        .arg("serve")
        .env_clear()
        .env("SPECGATE_CONFIG", &config)
        .env("SPECGATE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("SPECGATE_AUDIT_LOG", dir.path().join("audit.jsonl"))
        .env("SPECGATE_LOG_FORMAT", "json")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready: Value = lines
        .by_ref()
        .map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap_or_default())
        .find(|e| e["message"] == "specgate ready")
        .expect("it starts");
    assert!(
        ready["listen"].as_str().unwrap().starts_with("0.0.0.0:"),
        "{ready}"
    );
    let admin = ready["admin_listen"].as_str().unwrap().to_owned();
    let reload = || client().post(format!("http://{admin}/reload")).send();
    // First only the listener, still mock: accepted, and it takes a restart to move.
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\n[upstream]\nmode = \"mock\"\n",
    )
    .unwrap();
    let moved: Value = reload().await.unwrap().json().await.unwrap();
    assert_eq!(
        moved["restart_needed"],
        json!(["SPECGATE_LISTEN"]),
        "{moved}"
    );
    // Then proxy mode: the configuration says loopback, the socket is still 0.0.0.0.
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\napi_token_file = \"{}\"\n[upstream]\nmode = \"proxy\"\nurl = \"https://127.0.0.1:9/api/3\"\n",
            token.display()
        ),
    )
    .unwrap();
    let response = reload().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("not loopback"), "{body}");
    assert!(!body.contains(CANARY_TOKEN));
}

/// The create `name` that makes the drifting stand-in answer each way.
const AS_DECLARED: &str = "as declared";
const WRONG_TYPES: &str = "wrong types";
const HTML: &str = "html";
const UNAVAILABLE: &str = "unavailable";

fn create_named(name: &str) -> String {
    VALID_CREATE.replace("Toystore, Inc.", name)
}

#[tokio::test]
async fn a_drifting_upstream_is_reported_by_metric_log_audit_and_specgate_drift() {
    let ca = TestCa::new();
    // The stand-in answers as the create's `name` asks; otherwise with 201, as ActiveCampaign
    // really does where its document declares only 200.
    let wrong_types = CREATED.replace(r#""id":"1""#, r#""id":1"#).replace(
        r#""isInternal":0"#,
        &format!(r#""isInternal":"{CANARY_TOKEN}""#),
    );
    let answers: Arc<HashMap<&str, (u16, &'static str, String)>> = Arc::new(HashMap::from([
        (AS_DECLARED, (200, "application/json", CREATED.to_owned())),
        (WRONG_TYPES, (200, "application/json", wrong_types)),
        (HTML, (200, "text/html", "<p>created</p>".to_owned())),
        (
            UNAVAILABLE,
            (503, "application/json", r#"{"message":"later"}"#.to_owned()),
        ),
    ]));
    let answer_for = {
        let answers = answers.clone();
        move |body: &[u8]| {
            let sent: Value = serde_json::from_slice(body).unwrap_or_default();
            sent["connection"]["name"]
                .as_str()
                .and_then(|name| answers.get(name).cloned())
                .unwrap_or((201, "application/json", CREATED.to_owned()))
        }
    };
    let stand_in = answer_for.clone();
    let upstream = Upstream::start(&ca, move |seen| {
        let (status, content_type, body) = stand_in(&seen.body);
        Reply::With(
            StatusCode::from_u16(status).unwrap(),
            content_type,
            body.into(),
        )
    })
    .await;
    // The document's 200 requires the header the stand-in always sends; an overlay declares a
    // 503 that must say when to retry, in a header and in its body, which the stand-in's never
    // does (that answer is not a create's 2xx: it is checked on the drift thread).
    let overlay = ca.dir.path().join("responses.overlay.yaml");
    std::fs::write(
        &overlay,
        "overlay: 1.0.0\ninfo: {title: t, version: 1.0.0}\nactions:\n  \
         - target: \"$.paths['/connections'].post.responses['200']\"\n    update:\n      \
           headers: {X-Upstream: {required: true, schema: {type: string}}}\n  \
         - target: \"$.paths['/connections'].post.responses\"\n    update:\n      \
           '503':\n        description: unavailable\n        \
           headers: {Retry-After: {required: true, schema: {type: integer}}}\n        \
           content: {application/json: {schema: {type: object, required: [retryIn]}}}\n",
    )
    .unwrap();
    let tightening = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/activecampaign-v3.overlay.yaml"
    );
    let mut env = env_for(&ca, &upstream);
    env.push((
        "SPECGATE_OVERLAYS".into(),
        format!("{tightening},{}", overlay.display()),
    ));
    let gw = Gateway::start(&env);

    let names = [
        AS_DECLARED,
        WRONG_TYPES,
        WRONG_TYPES,
        HTML,
        "undeclared",
        UNAVAILABLE,
    ];
    for name in names {
        let body = create_named(name);
        let response = client()
            .post(gw.url("/api/3/connections"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        // Byte for byte what the upstream answered, drift or not.
        let (status, content_type, sent) = answer_for(body.as_bytes());
        assert_eq!(response.status().as_u16(), status, "{name}");
        assert_eq!(response.headers()["content-type"], content_type, "{name}");
        assert_eq!(response.bytes().await.unwrap(), sent.as_bytes(), "{name}");
    }

    // One log line per operation, kind and pointer: the repeated wrong types are not logged
    // twice. The 503 went through the queue, checked after its answer was sent.
    let last = gw.wait_for_log("response drift", 6);
    let logged: Vec<Value> = gw
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["message"] == "response drift")
        .collect();
    let mut places: Vec<(String, String)> = logged
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["pointer"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    places.sort();
    let expected = [
        ("missing_header", "retry-after"),
        ("schema", "/connection/id"),
        ("schema", "/connection/isInternal"),
        ("schema", "/retryIn"),
        ("undeclared_content_type", "text/html"),
        ("undeclared_status", "201"),
    ]
    .map(|(k, p)| (k.to_owned(), p.to_owned()));
    assert_eq!(places, expected, "{last}");
    let is_internal = logged
        .iter()
        .find(|e| e["pointer"] == "/connection/isInternal")
        .unwrap();
    assert_eq!(is_internal["excerpt"], "[redacted: 30 characters]");
    assert_eq!(is_internal["operation"], "create-connection");
    let id = logged
        .iter()
        .find(|e| e["pointer"] == "/connection/id")
        .unwrap();
    assert_eq!(id["excerpt"], "1");
    assert!(
        !gw.logs().contains(CANARY_TOKEN),
        "the token in no log line"
    );

    // Counted per kind, every time.
    let (_, m) = metrics(&gw).await;
    let drift = |kind: &str| {
        m.get(&format!(
            r#"specgate_response_drift_total{{operation="create-connection",kind="{kind}"}}"#
        ))
        .copied()
    };
    assert_eq!(drift("schema"), Some(5.0));
    assert_eq!(drift("undeclared_content_type"), Some(1.0));
    assert_eq!(drift("undeclared_status"), Some(1.0));
    assert_eq!(drift("missing_header"), Some(1.0));

    // Each created record says where its response drifted; the one as declared says nothing.
    let created: Vec<Value> = gw
        .audit_lines()
        .into_iter()
        .filter(|r| r["outcome"] == "created")
        .collect();
    assert_eq!(created.len(), 5);
    assert_eq!(created[0]["drift"], Value::Null);
    let wrong = json!([
        {"kind": "schema", "at": "/connection/id"},
        {"kind": "schema", "at": "/connection/isInternal"}
    ]);
    let mut first = created[1]["drift"].as_array().unwrap().clone();
    first.sort_by_key(|d| d["at"].to_string());
    assert_eq!(Value::Array(first), wrong);
    assert_eq!(
        created[3]["drift"],
        json!([{"kind": "undeclared_content_type", "at": "text/html"}])
    );
    assert_eq!(
        created[4]["drift"],
        json!([{"kind": "undeclared_status", "at": "201"}])
    );

    // `specgate drift` prints the report a platform team sends the vendor.
    let admin = gw.admin.to_string();
    let (code, out, err) = specgate(&["drift", "--admin", &admin, "--minutes", "5"]);
    assert_eq!(code, Some(0), "{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        out.lines().nth(1).unwrap().split_whitespace().next(),
        Some("OPERATION")
    );
    assert_eq!(rows.len(), 6, "{out}");
    assert_eq!(
        &rows[0][..4],
        ["create-connection", "schema", "/connection/id", "2"]
    );
    assert!(
        rows.iter()
            .any(|r| r[..4] == ["create-connection", "missing_header", "retry-after", "1"]),
        "{out}"
    );
    let (code, json_out, _) = specgate(&["drift", "--admin", &admin, "--json"]);
    assert_eq!(code, Some(0));
    let report: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(report["minutes"], 60);
    assert_eq!(report["sample_rate"], 1.0);
    assert_eq!(report["drifts"].as_array().unwrap().len(), 6);
    // A window that is not one is refused, not read as the default.
    let (code, _, err) = specgate(&["drift", "--admin", &admin, "--minutes", "0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("answered 400"), "{err}");
}
