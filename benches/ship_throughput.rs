//! Shipping throughput: how fast a backlog of audit records drains into PostgreSQL.
//!
//! Writes N records with the real writer (the backlog a sidecar builds while PostgreSQL is
//! down), then starts the shipper and times it until the database's cursor reaches the last
//! record. Uses the tests' PostgreSQL (tests/support/postgres.rs: `SPECGATE_TEST_POSTGRES_URL`,
//! or a throwaway server from the machine's binaries); works in a schema of its own and drops
//! it after.
//!
//!     cargo bench --bench ship_throughput                 # 100000 records, batches of 1000
//!     SHIP_RECORDS=200000 SHIP_BATCH=5000 cargo bench --bench ship_throughput

use std::time::{Duration, Instant};

use specgate::audit::ship::{PgUrl, ShipConfig, ShipStats, Shipper};
use specgate::audit::{AuditOptions, Auditor, Entry, Outcome, ResourceFields, SyncMode};

#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn entry(i: usize) -> Entry {
    let body = serde_json::json!({"connection": {
        "service": "fooCommerce", "externalid": format!("store-{i}"), "name": "Toystore, Inc.",
        "logoUrl": "http://example.com/i/foo.png", "linkUrl": "http://example.com/foo/", "listId": "1"
    }});
    Entry {
        request_id: Some(format!("0193a1b2-c3d4-7e5f-8a9b-{i:012}")),
        operation_id: Some("create-connection".into()),
        method: Some("POST".into()),
        path: Some("/api/3/connections".into()),
        upstream_status: Some(201),
        resource_id: Some(i.to_string()),
        resource: Some(ResourceFields::new(&body, Some("connection"))),
        latency_ms: Some(41.207),
        ..Entry::new(Outcome::Created)
    }
}

async fn admin(server: &postgres::Server) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {}: {e}", server.addr()));
    tokio::spawn(conn);
    client
}

fn main() {
    let records = env_number("SHIP_RECORDS", 100_000);
    let batch = env_number("SHIP_BATCH", 1000);
    let Some(server) = postgres::server() else {
        std::process::exit(1);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let schema = format!("sg_bench_{}", std::process::id());
        admin(server)
            .await
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut options = AuditOptions::new(dir.path().join("audit.jsonl"));
        options.sync = SyncMode::Interval(Duration::from_millis(100));
        let auditor = Auditor::open(options.clone()).unwrap();
        let started = Instant::now();
        for wave in 0..records.div_ceil(1000) {
            let tasks: Vec<_> = (wave * 1000..((wave + 1) * 1000).min(records))
                .map(|i| {
                    let auditor = auditor.clone();
                    tokio::spawn(async move { auditor.append(entry(i)).await })
                })
                .collect();
            for t in tasks {
                t.await.unwrap().unwrap();
            }
        }
        auditor.flush().await.unwrap();
        let bytes: u64 = std::fs::metadata(&options.path).unwrap().len();
        println!(
            "wrote {records} records ({:.1} MiB) locally in {:.2}s",
            bytes as f64 / (1024.0 * 1024.0),
            started.elapsed().as_secs_f64()
        );

        let url = format!(
            "{}?options=-csearch_path%3D{schema}&application_name=specgate-bench",
            server.url()
        );
        let config = ShipConfig {
            url: PgUrl::parse(&url).unwrap(),
            node: "bench".into(),
            batch,
            poll: Duration::from_millis(5),
        };
        let stats = ShipStats::new();
        let started = Instant::now();
        let task = tokio::spawn(Shipper::new(config, &options.path, None, stats.clone()).run());
        // Polls the shipper's own counter every 5 ms: the drain has no completion event.
        while stats.shipped_seq() < records as u64 {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "drain stalled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = started.elapsed().as_secs_f64();
        task.abort();
        println!(
            "shipped {records} records in batches of {batch} in {took:.2}s: {:.0} records/s \
             ({} transactions, {} errors)",
            records as f64 / took,
            stats.shipped_batches(),
            stats.errors()
        );
        admin(server)
            .await
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    });
}
