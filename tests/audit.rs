//! The audit log end to end: failures refuse creates before forwarding, a crash loses nothing
//! a client was told, and the CLI reads and verifies what the gateway wrote.

use crate::support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::Value;
use support::*;

async fn create(gw: &Gateway, request_id: &str) -> reqwest::Result<reqwest::Response> {
    client()
        .post(gw.url("/api/3/connections"))
        .header("content-type", "application/json")
        .header("x-request-id", request_id)
        .body(VALID_CREATE)
        .send()
        .await
}

#[tokio::test]
async fn a_log_that_cannot_be_written_refuses_creates_before_forwarding() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    // A file-size limit makes the audit file unwritable past 6000 bytes: writes fail with
    // EFBIG, as they would on a full disk. The limit falls between records of the sizes these
    // are without a `drift` field (the stand-in's 201 is one the document does not declare).
    let mut env = env_for(&ca, &upstream);
    env.push(("SPECGATE_DRIFT".into(), "off".into()));
    let mut gw = Gateway::launch(&["prlimit", "--fsize=6000"], &["serve"], None, &env);
    let mut created = 0;
    let mut refused = 0;
    for i in 0..30 {
        let response = create(&gw, &format!("fill-{i}")).await.unwrap();
        match response.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(response.headers()["retry-after"], "5");
                let problem: Value = response.json().await.unwrap();
                assert_eq!(problem["type"], "urn:specgate:problem:audit-unavailable");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        created > 0 && refused > 0,
        "created {created}, refused {refused}"
    );
    assert_eq!(
        upstream.requests().len(),
        created,
        "a refused create never reached the upstream"
    );

    let records = gw.audit_lines();
    let created_ids: HashSet<_> = records
        .iter()
        .filter(|r| r["outcome"] == "created")
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(created_ids.len(), created, "every 201 has its record");
    let logs = gw.logs();
    assert_eq!(
        logs.matches("audit log not writable").count(),
        1,
        "logged once per episode:\n{logs}"
    );
    gw.kill();
    let log = gw.audit_log.display().to_string();
    let (code, out, _) = specgate(&["audit", "verify", "--path", &log]);
    assert_eq!(
        code,
        Some(0),
        "a failed write leaves no partial record behind: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_under_load_loses_no_acknowledged_create() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let mut env = env_for(&ca, &upstream);
    env.push(("SPECGATE_AUDIT_LOG".into(), log.display().to_string()));
    let mut gw = Gateway::start(&env);

    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let (enough_tx, mut enough_rx) = tokio::sync::mpsc::channel::<()>(1);
    let clients: Vec<_> = (0..16)
        .map(|worker| {
            let url = gw.url("/api/3/connections");
            let acknowledged = acknowledged.clone();
            let enough = enough_tx.clone();
            tokio::spawn(async move {
                let http = client();
                for i in 0.. {
                    let id = format!("w{worker}-{i}");
                    let sent = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-request-id", &id)
                        .body(VALID_CREATE)
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == StatusCode::CREATED => {
                            let mut acked = acknowledged.lock().unwrap();
                            acked.push(id);
                            if acked.len() >= 200 {
                                let _ = enough.try_send(());
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return, // the gateway is gone
                    }
                }
            })
        })
        .collect();
    enough_rx.recv().await.unwrap();
    gw.kill();
    for c in clients {
        c.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    // Restarting recovers the log (cutting a torn line if the kill left one)...
    let gw = Gateway::start(&env);
    drop(gw);
    let path = log.display().to_string();
    let (code, out, err) = specgate(&["audit", "verify", "--path", &path]);
    assert_eq!(code, Some(0), "verify after restart: {out}{err}");
    // ...and every create the clients heard of is recorded.
    let (code, out, _) = specgate(&[
        "audit",
        "query",
        "--path",
        &path,
        "--outcome",
        "created",
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0));
    let recorded: HashSet<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for id in &acknowledged {
        assert!(
            recorded.contains(id),
            "{id} got a 201 but has no created record"
        );
    }
    assert!(acknowledged.len() >= 200);
}

fn run_n_creates(n: usize) -> (tempfile::TempDir, String) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let ca = TestCa::new();
        let upstream = Upstream::start(&ca, |seen| {
            let body: Value = serde_json::from_slice(&seen.body).unwrap();
            match body["connection"]["externalid"].as_str() {
                Some("dup") => Reply::json(422, r#"{"errors":[{"title":"duplicate"}]}"#),
                _ => Reply::json(201, CREATED),
            }
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl").display().to_string();
        let mut env = env_for(&ca, &upstream);
        env.push(("SPECGATE_AUDIT_LOG".into(), log.clone()));
        let mut gw = Gateway::start(&env);
        for i in 0..n {
            let externalid = if i == 1 {
                "dup".to_owned()
            } else {
                format!("store-{i}")
            };
            let body = VALID_CREATE.replace("toystore123", &externalid);
            client()
                .post(gw.url("/api/3/connections"))
                .header("content-type", "application/json")
                .header("x-request-id", format!("q{i}"))
                .body(body)
                .send()
                .await
                .unwrap();
        }
        assert_eq!(
            gw.stop(),
            Some(0),
            "a graceful stop flushes the log and its head"
        );
        (dir, log)
    })
}

#[test]
fn query_filters_and_formats_what_the_gateway_wrote() {
    let (_dir, log) = run_n_creates(3);

    let (code, out, _) = specgate(&["audit", "query", "--path", &log, "--format", "json"]);
    assert_eq!(code, Some(0));
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let outcomes: Vec<_> = rows
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["created", "rejected", "created"],
        "one row per create"
    );

    let (_, out, _) = specgate(&[
        "audit",
        "query",
        "--path",
        &log,
        "--externalid",
        "store-2",
        "--format",
        "json",
    ]);
    assert_eq!(out.lines().count(), 1);
    assert!(out.contains("\"request_id\":\"q2\""));

    let (_, out, _) = specgate(&[
        "audit",
        "query",
        "--path",
        &log,
        "--outcome",
        "rejected",
        "--format",
        "csv",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("seq,ts,outcome,request_id"));
    assert_eq!(lines.len(), 2);
    assert!(
        lines[1].contains(",rejected,q1,create-connection,"),
        "{}",
        lines[1]
    );

    let (_, out, _) = specgate(&[
        "audit",
        "query",
        "--path",
        &log,
        "--since",
        "1h",
        "--service",
        "fooCommerce",
    ]);
    let table: Vec<&str> = out.lines().collect();
    assert_eq!(table.len(), 4, "header and three rows:\n{out}");
    assert!(table[0].starts_with("TIME"));
    let column = table[0].find("EXTERNALID").unwrap();
    assert_eq!(&table[1][column..column + 7], "store-0");

    let (_, out, _) = specgate(&["audit", "query", "--path", &log, "--until", "1h"]);
    assert_eq!(
        out.lines().count(),
        1,
        "only the header: nothing is an hour old"
    );

    let (code, _, err) = specgate(&["audit", "query", "--path", &log, "--since", "last tuesday"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--since"), "{err}");

    let (_, out, _) = specgate(&[
        "audit", "tail", "--path", &log, "-n", "2", "--format", "json",
    ]);
    let tail: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[0]["outcome"], "attempted");
    assert_eq!(tail[1]["outcome"], "created");
    assert_eq!(tail[1]["seq"], 6);
}

#[test]
fn verify_names_the_file_and_line_of_tampering() {
    let (_dir, log) = run_n_creates(3);
    let (code, out, _) = specgate(&["audit", "verify", "--path", &log]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with("OK: 6 records in 1 file(s), seq 1..6"),
        "{out}"
    );

    let original = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let check = |content: String, expect: &str| {
        std::fs::write(&log, content).unwrap();
        let (code, out, _) = specgate(&["audit", "verify", "--path", &log]);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.starts_with("FAILED: "), "{out}");
        assert!(out.contains(expect), "expected {expect:?} in {out}");
    };
    // One byte changed.
    check(
        original.replacen("store-2", "store-3", 1),
        &format!("{log}:5: record changed"),
    );
    // A line removed.
    let mut removed = lines.clone();
    removed.remove(2);
    check(
        removed.join("\n") + "\n",
        &format!("{log}:3: records 3..3 are missing"),
    );
    // Two lines swapped.
    let mut swapped = lines.clone();
    swapped.swap(3, 4);
    check(swapped.join("\n") + "\n", &format!("{log}:4:"));
    // A torn last line.
    check(
        original[..original.len() - 10].to_owned(),
        &format!("{log}:6: the last line is incomplete"),
    );
    // Whole records cut from the end.
    check(
        lines[..4].join("\n") + "\n",
        "records 5..6 were cut from the end",
    );
}

// Multi-threaded: the stand-in upstream must keep answering while this thread blocks on the
// gateway's exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_client_hangs_up_is_still_recorded() {
    let ca = TestCa::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    let upstream = Upstream::start(&ca, move |_| {
        Reply::Held(held.clone(), Box::new(Reply::json(201, CREATED)))
    })
    .await;
    let mut gw = Gateway::start(&env_for(&ca, &upstream));
    let url = gw.url("/api/3/connections");
    // Over HTTP/2 (prior knowledge) a client that gives up resets its stream, and the server
    // drops whatever was answering it.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let request = tokio::spawn(async move {
        h2.post(url)
            .header("content-type", "application/json")
            .header("x-request-id", "hung-up")
            .body(VALID_CREATE)
            .send()
            .await
    });
    // The create is in the upstream's hands; now the client goes away.
    upstream.wait_for_requests(1).await;
    request.abort();
    let _ = request.await;
    gate.add_permits(1);
    // A graceful stop waits for the forwarded create to be recorded.
    assert_eq!(gw.stop(), Some(0));
    let records = gw.audit_lines();
    let outcomes: Vec<_> = records
        .iter()
        .map(|r| (r["outcome"].as_str().unwrap(), r["attempt"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        [("attempted", Value::Null), ("created", Value::from(1))],
        "the create's outcome is recorded although nobody was left to tell:\n{}",
        gw.logs()
    );
    assert_eq!(records[1]["request_id"], "hung-up");
    assert_eq!(records[1]["resource_id"], "1");
}

#[tokio::test]
async fn creates_ask_for_an_uncompressed_answer_so_the_id_can_be_read() {
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let gw = Gateway::start(&env_for(&ca, &upstream));
    let response = client()
        .post(gw.url("/api/3/connections"))
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip, br")
        .body(VALID_CREATE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        upstream.requests()[0].headers["accept-encoding"],
        "identity"
    );
    assert_eq!(gw.audit_lines()[1]["resource_id"], "1");
}
