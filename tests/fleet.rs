//! Fleet audit end to end: the real specgate binary ships its audit log into a real
//! PostgreSQL (`support::postgres`; each test in its own schema), through SIGKILLs, cut, refused
//! and hung connections, from two nodes into one table, over TLS; and the CLI queries and
//! verifies the table.

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use specgate::audit::LogFiles;
use support::pg::{Mode, PgProxy, TestDb};
use support::*;
use tokio::net::{TcpListener, TcpStream};

/// Every line of the local log (rotated files, then the active one).
fn local_lines(active: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for file in LogFiles::new(active).all().unwrap() {
        let text = std::fs::read_to_string(&file.path).unwrap();
        out.extend(text.lines().map(str::to_owned));
    }
    out
}

/// The table holds node's records exactly once each, byte for byte as in the local log.
async fn assert_exactly_once(db: &TestDb, node: &str, active: &Path) {
    let local = local_lines(active);
    assert!(!local.is_empty());
    db.wait_for_cursor(node, local.len() as i64, Duration::from_secs(60))
        .await;
    let rows: Vec<(i64, String)> = db
        .rows()
        .await
        .into_iter()
        .filter(|(n, _, _)| n == node)
        .map(|(_, seq, line)| (seq, line))
        .collect();
    let seqs: Vec<i64> = rows.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=local.len() as i64).collect::<Vec<_>>(),
        "every record once, none missing"
    );
    for ((seq, stored), line) in rows.iter().zip(&local) {
        assert_eq!(stored, line, "seq {seq} differs from the local log");
    }
}

fn ship_env(
    ca: &TestCa,
    upstream: &Upstream,
    log: &Path,
    url: &str,
    node: &str,
) -> Vec<(String, String)> {
    let mut env = env_for(ca, upstream);
    env.extend([
        ("SPECGATE_AUDIT_LOG".into(), log.display().to_string()),
        ("SPECGATE_AUDIT_POSTGRES_URL".into(), url.to_owned()),
        ("SPECGATE_AUDIT_NODE".into(), node.to_owned()),
        ("SPECGATE_AUDIT_SHIP_POLL_MS".into(), "20".into()),
    ]);
    env
}

async fn create(http: &reqwest::Client, gw: &Gateway, externalid: &str) -> StatusCode {
    http.post(gw.url("/api/3/connections"))
        .header("content-type", "application/json")
        .body(VALID_CREATE.replace("toystore123", externalid))
        .send()
        .await
        .map(|r| r.status())
        .unwrap_or(StatusCode::BAD_GATEWAY)
}

/// `workers` clients sending creates to `url` until `per_worker` each, or until the gateway
/// is gone. Returns the number of 201s.
fn load(url: String, workers: usize, per_worker: usize) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let created = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..workers)
            .map(|w| {
                let url = url.clone();
                let created = created.clone();
                tokio::spawn(async move {
                    let http = client();
                    for i in 0..per_worker {
                        let sent = http
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(VALID_CREATE.replace("toystore123", &format!("w{w}-{i}")))
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status() == StatusCode::CREATED => {
                                created.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => panic!("unexpected {}", r.status()),
                            Err(_) => return, // the gateway was killed
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        created.load(Ordering::Relaxed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arrive_exactly_once_through_sigkills_mid_batch() {
    let Some(db) = TestDb::new("kill").await else {
        return;
    };
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let mut env = ship_env(&ca, &upstream, &log, &db.url("sg-kill"), "k1");
    env.extend([
        ("SPECGATE_AUDIT_SHIP_BATCH".into(), "7".into()),
        ("SPECGATE_AUDIT_MAX_FILE_BYTES".into(), "8192".into()),
    ]);
    for _round in 0..4 {
        let mut gw = Gateway::start(&env);
        let before = db.cursor("k1").await;
        let load = load(gw.url("/api/3/connections"), 8, 60);
        // SIGKILL once this process has committed a batch, with creates still pouring in and
        // the shipper busy with the next ones.
        db.wait_for_cursor("k1", before + 15, Duration::from_secs(30))
            .await;
        gw.kill();
        load.await.unwrap();
    }
    // A run with shipping off makes sure there is a backlog, however fast the shipper was.
    let offline: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "SPECGATE_AUDIT_POSTGRES_URL")
        .cloned()
        .collect();
    let gw = Gateway::start(&offline);
    let http = client();
    for i in 0..10 {
        assert_eq!(
            create(&http, &gw, &format!("offline-{i}")).await,
            StatusCode::CREATED
        );
    }
    drop(gw);
    // The last start drains the backlog.
    let shipped_before_last_start = db.cursor("k1").await;
    let gw = Gateway::start(&env);
    assert!(
        (shipped_before_last_start as usize) < local_lines(&log).len(),
        "the kills left a backlog"
    );
    assert_exactly_once(&db, "k1", &log).await;
    assert!(LogFiles::new(&log).rotated().unwrap().len() > 1, "rotated");
    drop(gw);

    let path = log.display().to_string();
    let (code, out, err) = specgate(&["audit", "verify", "--path", &path]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = specgate(&[
        "audit",
        "verify",
        "--postgres",
        &db.url("sg-verify"),
        "--node",
        "k1",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("OK: node \"k1\""), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refusing_hung_or_cut_delays_no_request_and_loses_nothing() {
    let Some(db) = TestDb::new("outage").await else {
        return;
    };
    let proxy = PgProxy::start(db.server).await;
    let ca = TestCa::new();
    let upstream = Upstream::created(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let url = db.url_at(&proxy.addr.to_string(), "sg-outage");
    let mut env = ship_env(&ca, &upstream, &log, &url, "o1");
    env.push(("SPECGATE_AUDIT_SHIP_BATCH".into(), "10".into()));
    let gw = Gateway::start(&env);
    let http = client();

    for i in 0..20 {
        assert_eq!(
            create(&http, &gw, &format!("up-{i}")).await,
            StatusCode::CREATED
        );
    }
    assert_exactly_once(&db, "o1", &log).await;
    let shipped = db.cursor("o1").await;

    // Refusing, then hung (accepting and never answering): every create still succeeds, and
    // all of them do while PostgreSQL is still unreachable; nothing ships.
    for mode in [Mode::Refuse, Mode::Hang] {
        proxy.set(mode);
        for i in 0..20 {
            assert_eq!(
                create(&http, &gw, &format!("{mode:?}-{i}")).await,
                StatusCode::CREATED,
                "a create while PostgreSQL is {mode:?}"
            );
        }
        assert_eq!(
            db.cursor("o1").await,
            shipped,
            "nothing shipped while {mode:?}"
        );
    }
    assert_eq!(
        local_lines(&log).len() as i64,
        shipped + 80,
        "on local disk"
    );

    // Back: the backlog drains.
    proxy.set(Mode::Up);
    assert_exactly_once(&db, "o1", &log).await;

    // Connections cut from the server side (pg_terminate_backend) during a load: each time
    // once the shipper has committed again, so each cut finds it connected.
    let mut cuts = 0;
    for _ in 0..5 {
        let at = db.cursor("o1").await;
        let load = load(gw.url("/api/3/connections"), 4, 20);
        db.wait_for_cursor("o1", at + 1, Duration::from_secs(30))
            .await;
        cuts += db.terminate("sg-outage").await;
        assert_eq!(load.await.unwrap(), 80, "every create succeeded");
    }
    assert!(cuts >= 5, "the shipper's sessions were cut ({cuts})");
    assert_exactly_once(&db, "o1", &log).await;
    let logs = gw.logs();
    assert!(logs.contains("audit shipping failed; retrying"), "{logs}");
    assert!(logs.contains("audit shipping resumed"), "{logs}");
}

/// Two nodes' gateways, each with creates store-0.. (store-1 rejected upstream with 422).
async fn two_nodes(db: &TestDb) -> (tempfile::TempDir, String, String) {
    let ca = TestCa::new();
    let upstream = Upstream::start(&ca, |seen| {
        let body: Value = serde_json::from_slice(&seen.body).unwrap();
        match body["connection"]["externalid"].as_str() {
            Some("store-1") => Reply::json(422, r#"{"errors":[{"title":"duplicate"}]}"#),
            _ => Reply::json(201, CREATED),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    let mut logs = Vec::new();
    for (node, n) in [("node-a", 4), ("node-b", 3)] {
        let log = dir.path().join(format!("{node}.jsonl"));
        let gw = Gateway::start(&ship_env(&ca, &upstream, &log, &db.url(node), node));
        for i in 0..n {
            create(&http, &gw, &format!("store-{i}")).await;
        }
        assert_exactly_once(db, node, &log).await;
        assert_ship_metrics(&gw, local_lines(&log).len()).await;
        logs.push(log.display().to_string());
    }
    let b = logs.pop().unwrap();
    let a = logs.pop().unwrap();
    (dir, a, b)
}

/// `/metrics` shows what was shipped and no lag. The shipper updates its counters just after
/// each commit, so this waits (bounded) for them to catch up with the cursor already seen.
async fn assert_ship_metrics(gw: &Gateway, records: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = client()
            .get(gw.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        };
        let shipped = value("specgate_audit_ship_records_total");
        if shipped == Some(records as f64) {
            assert_eq!(
                value("specgate_audit_ship_lag_records"),
                Some(0.0),
                "{text}"
            );
            assert_eq!(value("specgate_audit_ship_connected"), Some(1.0), "{text}");
            assert_eq!(value("specgate_audit_ship_stalled"), Some(0.0), "{text}");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "shipped {shipped:?} of {records}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn json_rows(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_ship_into_one_table_and_the_cli_queries_and_verifies_it() {
    let Some(db) = TestDb::new("fleet").await else {
        return;
    };
    let (_dir, log_a, _log_b) = two_nodes(&db).await;
    let url = db.url("sg-cli");

    // Across nodes: one row per create, each with its node.
    let (code, out, err) = specgate(&["audit", "query", "--postgres", &url, "--format", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let rows = json_rows(&out);
    assert_eq!(rows.len(), 7, "{out}");
    let nodes: Vec<&str> = rows.iter().map(|r| r["node"].as_str().unwrap()).collect();
    assert_eq!(nodes.iter().filter(|n| **n == "node-a").count(), 4);
    assert_eq!(nodes.iter().filter(|n| **n == "node-b").count(), 3);

    // One node: what the file query says of that node's log, plus the node.
    let (_, from_file, _) = specgate(&["audit", "query", "--path", &log_a, "--format", "json"]);
    let (_, from_db, _) = specgate(&[
        "audit",
        "query",
        "--postgres",
        &url,
        "--node",
        "node-a",
        "--format",
        "json",
    ]);
    let mut from_db = json_rows(&from_db);
    for row in &mut from_db {
        assert_eq!(
            row.as_object_mut().unwrap().remove("node").unwrap(),
            "node-a"
        );
    }
    assert_eq!(from_db, json_rows(&from_file));

    // The same filters.
    for (args, expect) in [
        (&["--externalid", "store-2"][..], 2),
        (&["--outcome", "rejected"][..], 2),
        (&["--outcome", "rejected", "--node", "node-b"][..], 1),
        (&["--service", "fooCommerce", "--since", "1h"][..], 7),
        (&["--until", "1h"][..], 0),
        (&["--request-id", "nope"][..], 0),
    ] {
        let mut cli = vec!["audit", "query", "--postgres", &url, "--format", "json"];
        cli.extend_from_slice(args);
        let (code, out, err) = specgate(&cli);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert_eq!(out.lines().count(), expect, "{args:?}: {out}");
    }
    let (_, csv, _) = specgate(&[
        "audit",
        "query",
        "--postgres",
        &url,
        "--format",
        "csv",
        "--outcome",
        "rejected",
    ]);
    let csv: Vec<&str> = csv.lines().collect();
    assert!(
        csv[0].starts_with("seq,ts,outcome,") && csv[0].ends_with(",node"),
        "{}",
        csv[0]
    );
    assert!(
        csv[1].ends_with(",node-a") && csv[2].ends_with(",node-b"),
        "{csv:?}"
    );
    let (_, table, _) = specgate(&["audit", "query", "--postgres", &url]);
    let table: Vec<&str> = table.lines().collect();
    assert_eq!(table.len(), 8, "header and seven rows");
    assert!(table[0].starts_with("NODE    TIME"), "{}", table[0]);
    let column = table[0].find("EXTERNALID").unwrap();
    assert!(
        table[1..]
            .iter()
            .all(|row| row[column..].starts_with("store-"))
    );

    // Verify: every node intact...
    let (code, out, _) = specgate(&["audit", "verify", "--postgres", &url]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.matches("OK: node").count(), 2, "{out}");

    // ...and each kind of change to a row is named with its seq.
    let sql = db.client().await;
    let verify_b = || specgate(&["audit", "verify", "--postgres", &url, "--node", "node-b"]);
    let tamper = [
        (
            "UPDATE specgate_audit SET externalid = 'evil' WHERE node = 'node-b' AND seq = 2",
            "UPDATE specgate_audit SET externalid = record->'resource'->>'externalid' WHERE node = 'node-b' AND seq = 2",
            "seq 2: the row's columns differ from its record",
        ),
        (
            "UPDATE specgate_audit SET line = replace(line, 'store-2', 'store-9'), record = replace(line, 'store-2', 'store-9')::jsonb WHERE node = 'node-b' AND seq = 5",
            "UPDATE specgate_audit SET line = replace(line, 'store-9', 'store-2'), record = replace(line, 'store-9', 'store-2')::jsonb WHERE node = 'node-b' AND seq = 5",
            "seq 5: record changed",
        ),
        (
            "UPDATE specgate_audit SET record = jsonb_set(record, '{resource_id}', '\"9\"') WHERE node = 'node-b' AND seq = 6",
            "UPDATE specgate_audit SET record = line::jsonb WHERE node = 'node-b' AND seq = 6",
            "seq 6: the row's record (jsonb) differs from its line",
        ),
    ];
    for (change, undo, expect) in tamper {
        sql.batch_execute(change).await.unwrap();
        let (code, out, _) = verify_b();
        assert_eq!(code, Some(1), "{change}: {out}");
        assert!(
            out.contains(expect),
            "{change}: expected {expect:?} in {out}"
        );
        sql.batch_execute(undo).await.unwrap();
        let (code, out, _) = verify_b();
        assert_eq!(code, Some(0), "{undo}: {out}");
    }
    sql.batch_execute("DELETE FROM specgate_audit WHERE node = 'node-b' AND seq = 3")
        .await
        .unwrap();
    let (code, out, _) = verify_b();
    assert_eq!(code, Some(1));
    assert!(out.contains("seq 4: records 3..3 are missing"), "{out}");
    sql.batch_execute("DELETE FROM specgate_audit WHERE node = 'node-a' AND seq = 8")
        .await
        .unwrap();
    let (code, out, _) = specgate(&["audit", "verify", "--postgres", &url, "--node", "node-a"]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("the log ends at seq 7 but the shipping cursor names seq 8"),
        "{out}"
    );
}

/// A TLS front for PostgreSQL, as a managed database has: it answers the SSLRequest with 'S',
/// completes TLS with a certificate from the test CA, and forwards the plaintext inside.
async fn tls_front(ca: &TestCa, server: String) -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let server = server.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                if tcp.read_exact(&mut request).await.is_err()
                    || request != [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]
                {
                    return;
                }
                tcp.write_all(b"S").await.unwrap();
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut server) = TcpStream::connect(&server).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                }
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_urls_verify_the_server_against_sslrootcert() {
    let Some(db) = TestDb::new("tls").await else {
        return;
    };
    let ca = TestCa::new();
    let (port, _front) = tls_front(&ca, db.server.addr()).await;
    let upstream = Upstream::created(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let tls_url = |ca_param: &str| {
        format!(
            "{}?sslmode=verify-full{ca_param}&options=-csearch_path%3D{}",
            db.server.url_at(&format!("localhost:{port}")),
            db.schema
        )
    };

    // The test CA named: records ship over TLS.
    let log = dir.path().join("tls.jsonl");
    let with_ca = tls_url(&format!("&sslrootcert={}", ca.ca_pem.display()));
    let gw = Gateway::start(&ship_env(&ca, &upstream, &log, &with_ca, "tls-ok"));
    let http = client();
    for i in 0..3 {
        assert_eq!(
            create(&http, &gw, &format!("t{i}")).await,
            StatusCode::CREATED
        );
    }
    assert_exactly_once(&db, "tls-ok", &log).await;
    let (code, out, err) = specgate(&[
        "audit",
        "verify",
        "--postgres",
        &with_ca,
        "--node",
        "tls-ok",
    ]);
    assert_eq!(code, Some(0), "the CLI over TLS too: {out}{err}");

    // Without it the server's certificate is not trusted: nothing ships, and the log says why.
    let log = dir.path().join("untrusted.jsonl");
    let gw = Gateway::start(&ship_env(
        &ca,
        &upstream,
        &log,
        &tls_url(""),
        "tls-untrusted",
    ));
    assert_eq!(create(&http, &gw, "u").await, StatusCode::CREATED);
    // The failure is logged once per episode: wait for that line (bounded, polled).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !gw.logs().contains("audit shipping failed") {
        assert!(std::time::Instant::now() < deadline, "{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gw.logs().contains("UnknownIssuer"), "{}", gw.logs());
    assert_eq!(db.cursor("tls-untrusted").await, 0);
}
