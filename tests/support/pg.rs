//! The tests' real PostgreSQL ([`super::postgres`]), one schema per test so tests run in
//! parallel, and a TCP proxy in front of it that a test can cut, refuse or hang.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use super::postgres::{self, Server};

/// The tests' PostgreSQL; `None` when there is none (already said, loudly).
pub fn server() -> Option<&'static Server> {
    postgres::server()
}

/// A schema of its own in the tests' database, dropped with everything in it at the end.
pub struct TestDb {
    pub schema: String,
    pub server: &'static Server,
}

impl TestDb {
    /// `None` when there is no PostgreSQL for the tests: the test returns without running.
    pub async fn new(tag: &str) -> Option<TestDb> {
        let server = server()?;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let schema = format!(
            "sg_{tag}_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(&server.url()).await;
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE SCHEMA at {}: {e:?}", server.addr()));
        Some(TestDb { schema, server })
    }

    /// The URL a shipper or the CLI uses: this schema, and `application_name` so that its
    /// sessions can be found (and cut) from another connection.
    pub fn url(&self, application_name: &str) -> String {
        self.url_at(&self.server.addr(), application_name)
    }

    /// [`TestDb::url`] through another address (a proxy).
    pub fn url_at(&self, addr: &str, application_name: &str) -> String {
        format!(
            "{}?options=-csearch_path%3D{}&application_name={application_name}&connect_timeout=2",
            self.server.url_at(addr),
            self.schema
        )
    }

    /// A connection to this schema.
    pub async fn client(&self) -> Client {
        connect(&format!(
            "{}?options=-csearch_path%3D{}",
            self.server.url(),
            self.schema
        ))
        .await
    }

    /// Every (node, seq, line) in the table, in order.
    pub async fn rows(&self) -> Vec<(String, i64, String)> {
        self.client()
            .await
            .query(
                "SELECT node, seq, line FROM specgate_audit ORDER BY node, seq",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    /// A node's cursor seq (0 if it has none, or the table does not exist yet).
    pub async fn cursor(&self, node: &str) -> i64 {
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

    /// Waits until `node`'s cursor reaches `seq`: a bounded wait on what the shipper commits,
    /// polled every 50 ms (shipping is asynchronous by design; there is no event to wait on).
    pub async fn wait_for_cursor(&self, node: &str, seq: i64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let at = self.cursor(node).await;
            if at >= seq {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {node}'s cursor is at {at}, not {seq}, after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Cuts every session named `application_name`, as a crash or a network cut would.
    pub async fn terminate(&self, application_name: &str) -> usize {
        let admin = connect(&self.server.url()).await;
        admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&application_name],
            )
            .await
            .unwrap()
            .len()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        let url = self.server.url();
        // Drop runs outside async; a thread of its own keeps it off the test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&url, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to PostgreSQL ({}): {e:?}", postgres::redacted(url)));
    tokio::spawn(conn);
    client
}

/// What the proxy does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward to PostgreSQL.
    Up,
    /// Accept and close at once: PostgreSQL refusing.
    Refuse,
    /// Accept and never answer: PostgreSQL hung.
    Hang,
}

/// A TCP proxy to PostgreSQL on 127.0.0.1. Changing its mode cuts every open connection.
pub struct PgProxy {
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl PgProxy {
    /// A proxy in front of `server`.
    pub async fn start(server: &Server) -> PgProxy {
        let upstream = server.addr();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(Mode::Up));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (m, c, to) = (mode.clone(), conns.clone(), upstream);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let mode = *m.lock().unwrap();
                let to = to.clone();
                let task = tokio::spawn(async move {
                    match mode {
                        Mode::Refuse => drop(inbound),
                        Mode::Hang => {
                            std::future::pending::<()>().await;
                            drop(inbound);
                        }
                        Mode::Up => {
                            if let Ok(mut outbound) = TcpStream::connect(&to).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                    .await;
                            }
                        }
                    }
                });
                let mut conns = c.lock().unwrap();
                conns.retain(|t| !t.is_finished());
                conns.push(task);
            }
        });
        PgProxy {
            addr,
            mode,
            conns,
            accept,
        }
    }

    /// Switches mode, cutting every connection open now.
    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}
