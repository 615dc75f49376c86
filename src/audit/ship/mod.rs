//! Fleet audit: ship the local audit log to PostgreSQL, exactly once, off the request path.
//!
//! The local log stays the source of truth and the durability point. A shipper thread tails
//! it (only records the writer has synced, only a chain that checks out) and inserts them in
//! batches into `specgate_audit`, keyed by (node, seq) with `ON CONFLICT DO NOTHING`, moving
//! the node's row in `specgate_audit_cursor` to the batch's last (seq, hash) in the same
//! transaction. A crash or a cut connection anywhere leaves the cursor and the rows agreeing,
//! and a restarted shipper resumes from the cursor: every record arrives exactly once.
//!
//! Requests never wait for it: it runs on its own thread and runtime, and while PostgreSQL is
//! slow, down or refusing, the backlog stays on local disk (retention keeps unshipped files,
//! through [`ShipStats::watermark`]) and drains when it returns.

pub mod central;
pub mod pg;
pub mod reader;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use pg::PgUrl;
use reader::{Cursor, Line, ReadError, Reader};

use super::files::{LogFiles, read_head};
use super::record::{GENESIS, MacKey, decode_hash};

/// How shipping is configured (`audit.postgres_url` and friends).
#[derive(Clone, Debug)]
pub struct ShipConfig {
    /// The database.
    pub url: PgUrl,
    /// This sidecar's name in the table.
    pub node: String,
    /// Most records per transaction.
    pub batch: usize,
    /// How often to look for new records when caught up.
    pub poll: Duration,
}

/// Waiting longer than this for one batch's transaction means the connection is dead.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait between attempts while PostgreSQL is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a stalled shipper looks again (and says so again).
const STALL_RETRY: Duration = Duration::from_secs(60);

/// What the shipper has done, for metrics. All counters are since the process started; the
/// seqs are the node's.
#[derive(Debug, Default)]
pub struct ShipStats {
    shipped_seq: Arc<AtomicU64>,
    local_seq: AtomicU64,
    records: AtomicU64,
    batches: AtomicU64,
    errors: AtomicU64,
    oldest_unshipped_ms: AtomicU64,
    stalled: AtomicBool,
    connected: AtomicBool,
}

impl ShipStats {
    /// Fresh stats: nothing known to be shipped, so retention removes nothing yet.
    pub fn new() -> Arc<ShipStats> {
        Arc::new(ShipStats::default())
    }

    /// The seq through which the database has this node's records (its cursor), shared with
    /// the writer's retention ([`crate::audit::AuditOptions::shipped`]).
    pub fn watermark(&self) -> Arc<AtomicU64> {
        self.shipped_seq.clone()
    }

    /// Records inserted by this process (counter).
    pub fn shipped_records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Transactions committed by this process (counter).
    pub fn shipped_batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Failed connects, transactions and reads (counter).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The last seq in the database (gauge).
    pub fn shipped_seq(&self) -> u64 {
        self.shipped_seq.load(Ordering::Acquire)
    }

    /// The last seq synced to the local log, as the shipper last saw it (gauge).
    pub fn local_seq(&self) -> u64 {
        self.local_seq.load(Ordering::Acquire)
    }

    /// Records synced locally and not yet in the database (gauge).
    pub fn lag_records(&self) -> u64 {
        self.local_seq().saturating_sub(self.shipped_seq())
    }

    /// How old the oldest record not yet in the database is, in seconds; 0 when caught up
    /// (gauge).
    pub fn lag_seconds(&self) -> f64 {
        match self.oldest_unshipped_ms.load(Ordering::Acquire) {
            0 => 0.0,
            ms => (now_ms().saturating_sub(ms)) as f64 / 1000.0,
        }
    }

    /// Whether shipping has stopped for something a person must fix (gauge, 0 or 1).
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }

    /// Whether the shipper holds a working connection (gauge, 0 or 1).
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ts_ms(ts: &str) -> u64 {
    OffsetDateTime::parse(ts, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000).max(1) as u64)
        .unwrap_or_else(|_| now_ms())
}

/// Why a shipping session ended.
enum Stop {
    /// PostgreSQL or a read failed: try again after a pause.
    Retry(String),
    /// The log and the database disagree: nothing is shipped until a person looks.
    Stall(String),
}

impl From<ReadError> for Stop {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => Stop::Retry(format!("reading the local log: {e}")),
            ReadError::Stall(message) => Stop::Stall(message),
        }
    }
}

impl From<tokio_postgres::Error> for Stop {
    fn from(e: tokio_postgres::Error) -> Self {
        Stop::Retry(crate::error::Chain(&e).to_string())
    }
}

/// Tails one audit log into PostgreSQL.
pub struct Shipper {
    config: ShipConfig,
    files: LogFiles,
    key: Option<MacKey>,
    stats: Arc<ShipStats>,
}

impl Shipper {
    /// A shipper of the log whose active file is `active`, reporting to `stats`.
    pub fn new(
        config: ShipConfig,
        active: impl Into<std::path::PathBuf>,
        key: Option<MacKey>,
        stats: Arc<ShipStats>,
    ) -> Shipper {
        Shipper {
            config,
            files: LogFiles::new(active.into()),
            key,
            stats,
        }
    }

    /// Starts shipping on a thread of its own, with its own runtime: nothing it does can
    /// delay a request. It runs for the life of the process.
    pub fn spawn(self) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("audit-shipper".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime for the audit shipper");
                runtime.block_on(self.run());
            })
            .map(drop)
    }

    /// Ships forever: reconnecting after failures, pausing while stalled.
    pub async fn run(self) {
        tracing::info!(
            database = %self.config.url,
            node = %self.config.node,
            "audit shipping to PostgreSQL"
        );
        let mut backoff = Duration::from_millis(100);
        let mut failing = false;
        loop {
            let stop = self.session(&mut failing).await;
            if self.stats.connected.swap(false, Ordering::AcqRel) {
                // It got through setup: this is a new failure, not the same one again.
                backoff = Duration::from_millis(100);
            }
            match stop {
                Stop::Retry(error) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        tracing::warn!(
                            %error,
                            database = %self.config.url,
                            "audit shipping failed; retrying, records wait on local disk (requests are unaffected)"
                        );
                        failing = true;
                    } else {
                        tracing::debug!(%error, "audit shipping failed again");
                    }
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Stop::Stall(problem) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    self.stats.stalled.store(true, Ordering::Release);
                    tracing::error!(
                        %problem,
                        node = %self.config.node,
                        "audit shipping STOPPED: nothing more is shipped until this is fixed; checking again in {}s",
                        STALL_RETRY.as_secs()
                    );
                    self.pause(STALL_RETRY).await;
                }
            }
        }
    }

    /// Waits `how_long`, keeping the local seq (and so the lag) current.
    async fn pause(&self, how_long: Duration) {
        let step = self.config.poll.min(how_long);
        let mut waited = Duration::ZERO;
        while waited < how_long {
            tokio::time::sleep(step).await;
            waited += step;
            if let Ok(synced) = self.synced() {
                self.stats.local_seq.store(synced, Ordering::Release);
            }
        }
    }

    /// The last seq the writer has synced, from the head file.
    fn synced(&self) -> Result<u64, String> {
        read_head(&self.files.head(), self.key.as_ref())
            .map(|head| head.map_or(0, |h| h.seq))
            .map_err(|e| e.to_string())
    }

    /// One connection's worth of shipping; returns why it ended.
    async fn session(&self, failing: &mut bool) -> Stop {
        let node = self.config.node.as_str();
        // A server that accepts but never answers must not hold the shipper forever.
        let setup = tokio::time::timeout(BATCH_TIMEOUT, self.setup()).await;
        let (mut client, statements, cursor) = match setup {
            Ok(Ok(setup)) => setup,
            Ok(Err(stop)) => return stop,
            Err(_) => {
                return Stop::Retry(format!(
                    "{}: no answer in {}s",
                    self.config.url,
                    BATCH_TIMEOUT.as_secs()
                ));
            }
        };
        self.stats.shipped_seq.store(cursor.seq, Ordering::Release);
        let mut reader = match Reader::resume(self.files.active(), self.key.clone(), cursor, node) {
            Ok(reader) => reader,
            Err(e) => return e.into(),
        };
        if self.stats.stalled.swap(false, Ordering::AcqRel) {
            tracing::warn!(node, "audit shipping no longer stalled");
        }
        self.stats.connected.store(true, Ordering::Release);
        tracing::debug!(
            node,
            seq = cursor.seq,
            "audit shipping resumes after the cursor"
        );
        let mut cursor = cursor;
        loop {
            let synced = match self.synced() {
                Ok(seq) => seq,
                Err(e) => return Stop::Retry(e),
            };
            self.stats.local_seq.store(synced, Ordering::Release);
            if synced < cursor.seq {
                return Stop::Stall(format!(
                    "the database holds node {node:?}'s records through seq {} but the local log's head file names seq {synced}: \
                     another sidecar ships as {node:?}, or this log was replaced",
                    cursor.seq
                ));
            }
            let batch = match reader.read(self.config.batch, synced) {
                Ok(batch) => batch,
                Err(e) => return e.into(),
            };
            let Some(first) = batch.first() else {
                if reader.next_seq() > synced {
                    self.stats.oldest_unshipped_ms.store(0, Ordering::Release);
                }
                tokio::time::sleep(self.config.poll).await;
                continue;
            };
            self.stats
                .oldest_unshipped_ms
                .store(ts_ms(&first.ts), Ordering::Release);
            let shipped = tokio::time::timeout(
                BATCH_TIMEOUT,
                self.ship(&mut client, &statements, cursor, &batch),
            )
            .await
            .unwrap_or_else(|_| {
                Err(Stop::Retry(format!(
                    "no answer to a batch in {}s",
                    BATCH_TIMEOUT.as_secs()
                )))
            });
            if let Err(stop) = shipped {
                return stop;
            }
            let last = batch.last().expect("not empty");
            cursor = Cursor {
                seq: last.seq,
                hash: last.hash,
            };
            self.stats.shipped_seq.store(cursor.seq, Ordering::Release);
            self.stats
                .records
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            if cursor.seq >= synced {
                self.stats.oldest_unshipped_ms.store(0, Ordering::Release);
            }
            if *failing {
                tracing::info!(node, seq = cursor.seq, "audit shipping resumed");
                *failing = false;
            }
        }
    }

    /// Connects, migrates, prepares the statements and reads the node's cursor.
    async fn setup(&self) -> Result<(tokio_postgres::Client, Statements, Cursor), Stop> {
        let name = format!("specgate-shipper {}", self.config.node);
        let mut client = self.config.url.connect(&name).await.map_err(Stop::Retry)?;
        pg::migrate(&mut client).await?;
        let statements = Statements::prepare(&client).await?;
        let cursor = self.cursor(&client).await?;
        Ok((client, statements, cursor))
    }

    async fn cursor(&self, client: &tokio_postgres::Client) -> Result<Cursor, Stop> {
        let row = client.query_opt(pg::CURSOR, &[&self.config.node]).await?;
        let Some(row) = row else {
            return Ok(Cursor {
                seq: 0,
                hash: GENESIS,
            });
        };
        let seq: i64 = row.get(0);
        let hash: String = row.get(1);
        let hash = decode_hash(hash.as_bytes()).ok_or_else(|| {
            Stop::Stall(format!(
                "the cursor of node {:?} holds no valid hash",
                self.config.node
            ))
        })?;
        Ok(Cursor {
            seq: seq as u64,
            hash,
        })
    }

    /// One transaction: the rows, and the cursor moved from `from` to the batch's last.
    async fn ship(
        &self,
        client: &mut tokio_postgres::Client,
        statements: &Statements,
        from: Cursor,
        batch: &[Line],
    ) -> Result<(), Stop> {
        let node = &self.config.node;
        let seqs: Vec<i64> = batch.iter().map(|l| l.seq as i64).collect();
        let lines: Vec<&str> = batch.iter().map(|l| l.text.as_str()).collect();
        let json: Vec<Option<String>> = batch.iter().map(|l| pg::jsonb_safe(&l.text)).collect();
        let last = batch.last().expect("not empty");
        let tx = client.transaction().await?;
        let inserted = tx
            .execute(&statements.insert, &[node, &seqs, &lines, &json])
            .await?;
        if inserted < batch.len() as u64 {
            // Rows already there (a cursor set back by hand): they must be these records.
            let rows = tx.query(&statements.hashes, &[node, &seqs]).await?;
            for row in rows {
                let seq: i64 = row.get(0);
                let hash: String = row.get(1);
                let ours = &batch[(seq - batch[0].seq as i64) as usize];
                if hash != hex::encode(ours.hash) {
                    return Err(Stop::Stall(format!(
                        "the database already holds a different record seq {seq} of node {node:?}: \
                         two sidecars ship as {node:?}, or this log was replaced"
                    )));
                }
            }
        }
        let moved = tx
            .execute(
                &statements.advance,
                &[
                    node,
                    &(last.seq as i64),
                    &hex::encode(last.hash),
                    &(from.seq as i64),
                    &hex::encode(from.hash),
                ],
            )
            .await?;
        if moved != 1 {
            return Err(Stop::Stall(format!(
                "node {node:?}'s cursor moved away from seq {} while this sidecar shipped: \
                 two sidecars ship as {node:?}; give each its own audit.node",
                from.seq
            )));
        }
        tx.commit().await?;
        Ok(())
    }
}

struct Statements {
    insert: tokio_postgres::Statement,
    hashes: tokio_postgres::Statement,
    advance: tokio_postgres::Statement,
}

impl Statements {
    async fn prepare(client: &tokio_postgres::Client) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            insert: client.prepare(pg::INSERT).await?,
            hashes: client.prepare(pg::HASHES).await?,
            advance: client.prepare(pg::ADVANCE).await?,
        })
    }
}

/// The default node name: the host name (a pod's name in Kubernetes).
pub fn default_node() -> Option<String> {
    let name = gethostname::gethostname().into_string().ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests;
