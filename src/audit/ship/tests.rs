//! The shipper against a real PostgreSQL (tests/support/postgres.rs: the one named by
//! `SPECGATE_TEST_POSTGRES_URL`, or a throwaway server), each test in a schema of its own.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use super::*;
use crate::audit::{AuditOptions, Auditor, Entry, Outcome};

#[path = "../../../tests/support/postgres.rs"]
#[allow(dead_code, unreachable_pub)] // shared with the integration tests, which use all of it
mod postgres;

struct TestDb {
    schema: String,
    server: &'static postgres::Server,
}

impl TestDb {
    /// `None` when there is no PostgreSQL for the tests: the test returns without running.
    async fn new(tag: &str) -> Option<TestDb> {
        let server = postgres::server()?;
        let schema = format!(
            "sgu_{tag}_{}_{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        connect(&server.url())
            .await
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        Some(TestDb { schema, server })
    }

    fn url(&self, extra: &str) -> String {
        format!(
            "{}?options=-csearch_path%3D{}&connect_timeout=2{extra}",
            self.server.url(),
            self.schema
        )
    }

    async fn client(&self) -> Client {
        connect(&self.url("")).await
    }

    async fn cursor(&self, node: &str) -> i64 {
        self.client()
            .await
            .query_opt(
                "SELECT seq FROM specgate_audit_cursor WHERE node = $1",
                &[&node],
            )
            .await
            .ok()
            .flatten()
            .map_or(0, |r| r.get(0))
    }

    async fn lines(&self, node: &str) -> Vec<(i64, String)> {
        self.client()
            .await
            .query(
                "SELECT seq, line FROM specgate_audit WHERE node = $1 ORDER BY seq",
                &[&node],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        let url = self.server.url();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    connect(&url)
                        .await
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await
                })
        })
        .join();
    }
}

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL ({}): {e:?}", postgres::redacted(url)));
    tokio::spawn(conn);
    client
}

fn ship_config(url: &str, node: &str) -> ShipConfig {
    ShipConfig {
        url: PgUrl::parse(url).unwrap(),
        node: node.into(),
        batch: 50,
        poll: Duration::from_millis(20),
    }
}

fn entry(i: usize) -> Entry {
    let mut entry = Entry::new(Outcome::Created);
    entry.request_id = Some(format!("req-{i}"));
    entry.operation_id = Some("create-connection".into());
    entry.upstream_status = Some(201);
    entry.resource_id = Some(format!("{i}"));
    entry.resource = Some(crate::audit::ResourceFields::new(
        &serde_json::json!({"connection": {"service": "s", "externalid": format!("x{i}")}}),
        Some("connection"),
    ));
    entry
}

async fn append(auditor: &Auditor, from: usize, n: usize) {
    let tasks: Vec<_> = (from..from + n)
        .map(|i| {
            let auditor = auditor.clone();
            tokio::spawn(async move { auditor.append(entry(i)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

/// Every line of the local log, in order.
fn local_lines(active: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for file in LogFiles::new(active).all().unwrap() {
        let text = std::fs::read_to_string(&file.path).unwrap();
        out.extend(text.lines().map(str::to_owned));
    }
    out
}

/// Waits for a condition the shipper brings about: a bounded wait, polled every 20 ms, since
/// shipping is asynchronous by design and announces nothing.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A tiny xorshift: varied but reproducible kill points without a dependency.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_aborted_at_any_await_still_delivers_every_record_exactly_once() {
    let Some(db) = TestDb::new("abort").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut options = AuditOptions::new(dir.path().join("a.jsonl"));
    options.max_file_bytes = 16 * 1024; // rotations while shipping
    options.keep_files = 1;
    let stats = ShipStats::new();
    options.shipped = Some(stats.watermark());
    let auditor = Auditor::open(options.clone()).unwrap();
    let config = ship_config(&db.url(""), "n1");

    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut written = 0;
    for _ in 0..25 {
        append(&auditor, written, 40).await;
        written += 40;
        // A shipper killed after a random time: mid-connect, mid-batch, mid-commit, or idle.
        let shipper = Shipper::new(config.clone(), &options.path, None, stats.clone());
        let task = tokio::spawn(shipper.run());
        let ms = next_random(&mut seed) % 200;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        task.abort();
        let _ = task.await;
    }
    assert!(
        db.cursor("n1").await > 0,
        "the killed shippers committed some batches"
    );
    let shipper = Shipper::new(config.clone(), &options.path, None, stats.clone());
    let task = tokio::spawn(shipper.run());
    eventually("all shipped", Duration::from_secs(30), || async {
        db.cursor("n1").await == written as i64
    })
    .await;
    // Rotations now, with everything before them shipped, let retention remove old files.
    for _ in 0..10 {
        append(&auditor, written, 10).await;
        written += 10;
    }
    let total = written as i64;
    eventually("all shipped", Duration::from_secs(30), || async {
        db.cursor("n1").await == total
    })
    .await;
    task.abort();

    let rows = db.lines("n1").await;
    let seqs: Vec<i64> = rows.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>(), "each record once");
    // Retention removed shipped files only; what is left locally matches the table byte for
    // byte, and the rest is in the table alone.
    let local = local_lines(&options.path);
    assert!(local.len() < rows.len(), "retention ran: {}", local.len());
    let tail = &rows[rows.len() - local.len()..];
    for ((_, stored), line) in tail.iter().zip(&local) {
        assert_eq!(stored, line);
    }
    let mut client = db.client().await;
    match central::verify_node(&mut client, "n1", None).await.unwrap() {
        central::Verdict::Intact { records, .. } => assert_eq!(records, total as u64),
        broken => panic!("{broken:?}"),
    }
    // A commit whose answer the abort cut off is in the table but was never counted.
    assert!(stats.shipped_records() > 0 && stats.shipped_records() <= total as u64);
    assert_eq!(stats.shipped_seq(), total as u64);
    assert_eq!(stats.lag_records(), 0);
}

#[tokio::test]
async fn another_log_under_the_same_node_name_stops_shipping() {
    let Some(db) = TestDb::new("clash").await else {
        return;
    };
    let config = ship_config(&db.url(""), "twin");
    let first = tempfile::tempdir().unwrap();
    let options = AuditOptions::new(first.path().join("a.jsonl"));
    let auditor = Auditor::open(options.clone()).unwrap();
    append(&auditor, 0, 10).await;
    let stats = ShipStats::new();
    let task = tokio::spawn(Shipper::new(config.clone(), &options.path, None, stats.clone()).run());
    eventually("shipped", Duration::from_secs(20), || async {
        db.cursor("twin").await == 10
    })
    .await;
    task.abort();

    // A second sidecar, its own log, the same node name: its record 10 is not the table's.
    let second = tempfile::tempdir().unwrap();
    let options = AuditOptions::new(second.path().join("a.jsonl"));
    let auditor = Auditor::open(options.clone()).unwrap();
    append(&auditor, 100, 12).await;
    let stats = ShipStats::new();
    let task = tokio::spawn(Shipper::new(config.clone(), &options.path, None, stats.clone()).run());
    eventually("stalled", Duration::from_secs(20), || async {
        stats.stalled()
    })
    .await;
    task.abort();
    assert_eq!(
        db.cursor("twin").await,
        10,
        "nothing of the second log shipped"
    );
    assert_eq!(db.lines("twin").await.len(), 10);

    // A log shorter than the table: the same.
    let third = tempfile::tempdir().unwrap();
    let options = AuditOptions::new(third.path().join("a.jsonl"));
    let auditor = Auditor::open(options.clone()).unwrap();
    append(&auditor, 200, 3).await;
    let stats = ShipStats::new();
    let task = tokio::spawn(Shipper::new(config, &options.path, None, stats.clone()).run());
    eventually("stalled", Duration::from_secs(20), || async {
        stats.stalled()
    })
    .await;
    task.abort();
    assert_eq!(db.lines("twin").await.len(), 10);
}

#[tokio::test]
async fn records_gone_before_they_were_shipped_are_reported_not_skipped() {
    let Some(db) = TestDb::new("gap").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut options = AuditOptions::new(dir.path().join("a.jsonl"));
    options.max_file_bytes = 4 * 1024;
    let auditor = Auditor::open(options.clone()).unwrap();
    for round in 0..12 {
        append(&auditor, round * 5, 5).await;
    }
    let rotated = LogFiles::new(&options.path).rotated().unwrap();
    assert!(rotated.len() >= 2);
    std::fs::remove_file(&rotated[0].path).unwrap();

    let stats = ShipStats::new();
    let config = ship_config(&db.url(""), "gappy");
    let reader = reader::Reader::resume(
        &options.path,
        None,
        reader::Cursor {
            seq: 0,
            hash: GENESIS,
        },
        "gappy",
    );
    match reader {
        Err(ReadError::Stall(message)) => assert!(
            message.contains("were never shipped and are no longer in the local log"),
            "{message}"
        ),
        _ => panic!("a gap must stop shipping"),
    }
    let task = tokio::spawn(Shipper::new(config, &options.path, None, stats.clone()).run());
    eventually("stalled", Duration::from_secs(20), || async {
        stats.stalled()
    })
    .await;
    task.abort();
    assert_eq!(db.cursor("gappy").await, 0, "nothing shipped past a gap");
}

#[tokio::test]
async fn a_fleet_starting_at_once_migrates_once() {
    let Some(db) = TestDb::new("migrate").await else {
        return;
    };
    let url = PgUrl::parse(&db.url("")).unwrap();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut client = url.connect("migrate test").await.unwrap();
                pg::migrate(&mut client).await.unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1);
    }
    let client = db.client().await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM specgate_audit_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    // Once migrated, a role with only SELECT, INSERT and UPDATE ships (as the README says).
    let role = format!("{}_shipper", db.schema);
    let schema = &db.schema;
    client
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'shipper-pw';
             GRANT USAGE ON SCHEMA {schema} TO {role};
             GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {schema} TO {role};"
        ))
        .await
        .unwrap();
    let url = format!(
        "{}?options=-csearch_path%3D{}&connect_timeout=2",
        db.server.url_as(&role, "shipper-pw"),
        db.schema
    );
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions::new(dir.path().join("a.jsonl"));
    let auditor = Auditor::open(options.clone()).unwrap();
    append(&auditor, 0, 3).await;
    let stats = ShipStats::new();
    let task = tokio::spawn(
        Shipper::new(
            ship_config(&url, "least"),
            &options.path,
            None,
            stats.clone(),
        )
        .run(),
    );
    let shipped = tokio::time::timeout(Duration::from_secs(20), async {
        while db.cursor("least").await < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    task.abort();
    client
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role};"))
        .await
        .unwrap();
    assert!(
        shipped.is_ok(),
        "nothing shipped as {role}: {} errors",
        stats.errors()
    );
}

#[tokio::test]
async fn a_nul_in_a_record_ships_and_the_line_stays_exact() {
    let Some(db) = TestDb::new("nul").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions::new(dir.path().join("a.jsonl"));
    let auditor = Auditor::open(options.clone()).unwrap();
    let mut odd = entry(1);
    odd.resource = Some(crate::audit::ResourceFields::new(
        &serde_json::json!({"name": "a\u{0}b", "externalid": "nul"}),
        None,
    ));
    auditor.append(odd).await.unwrap();
    let stats = ShipStats::new();
    let task = tokio::spawn(
        Shipper::new(
            ship_config(&db.url(""), "nul"),
            &options.path,
            None,
            stats.clone(),
        )
        .run(),
    );
    eventually("shipped", Duration::from_secs(20), || async {
        db.cursor("nul").await == 1
    })
    .await;
    task.abort();
    assert_eq!(db.lines("nul").await[0].1, local_lines(&options.path)[0]);
    let mut client = db.client().await;
    assert!(matches!(
        central::verify_node(&mut client, "nul", None)
            .await
            .unwrap(),
        central::Verdict::Intact { records: 1, .. }
    ));
}
