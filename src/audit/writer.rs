//! The audit writer: one thread owns the log; requests hand it records and wait for the sync
//! of the batch theirs landed in (group commit). Under load many records share one
//! `fdatasync`, and no create is acknowledged before its record is on disk.
//!
//! On open, the writer picks the chain up from the last record on disk. A torn last line (a
//! crash mid-write) is cut away and noted in a `recovered` record. A log that ends before the
//! record the head file names, or whose last record does not check out, is refused: that is
//! not a crash, it is tampering or corruption, and someone must look.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::files::{self, Head, HeadError, LogFiles};
use super::record::{Entry, GENESIS, Hash, MacKey, Outcome, open, seal};

/// Most records written by one sync.
const MAX_BATCH: usize = 1024;
/// Records waiting for the writer before new ones wait for room.
const QUEUE: usize = 8192;

/// When records reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Every batch is synced before its records are acknowledged (the default).
    Always,
    /// Records are acknowledged once written, and synced every interval: a power loss can lose
    /// up to one interval of acknowledged records.
    Interval(Duration),
}

/// What to do with creates while the log cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Refuse them (503) before they are forwarded (the default).
    Reject,
    /// Forward them anyway, logging each one loudly.
    Allow,
}

/// How the log is written.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// The active file.
    pub path: PathBuf,
    /// When records reach the disk.
    pub sync: SyncMode,
    /// What to do with creates while the log cannot be written.
    pub on_error: OnError,
    /// MAC records and the head file with this key.
    pub key: Option<MacKey>,
    /// Rotate the active file once it reaches this size.
    pub max_file_bytes: u64,
    /// Keep this many rotated files (0: keep all).
    pub keep_files: usize,
    /// With shipping on: the seq through which records are safely elsewhere. Retention never
    /// removes a file holding a record after it.
    pub shipped: Option<Arc<AtomicU64>>,
}

impl AuditOptions {
    /// The defaults for a log at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuditOptions {
            path: path.into(),
            sync: SyncMode::Always,
            on_error: OnError::Reject,
            key: None,
            max_file_bytes: 64 * 1024 * 1024,
            keep_files: 0,
            shipped: None,
        }
    }
}

/// Why a record was not written.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AuditError {
    /// Writing or syncing failed.
    #[error("audit log {path}: {kind}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        kind: String,
    },
    /// The writer has stopped.
    #[error("the audit writer has stopped")]
    Stopped,
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file or its directory.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The head file is unreadable or its MAC does not match.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// The last record does not check out, or the log ends before the head's record.
    #[error(
        "{path}: {problem}; run `specgate audit verify` and move the log aside to start a new one"
    )]
    Damaged {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
}

/// Receives measurements from the writer (for metrics). Every method has a no-op default.
pub trait Observer: Send + Sync + 'static {
    /// A batch of `records` was written and synced in `took`.
    fn synced(&self, _records: usize, _took: Duration) {}
    /// A write or sync failed.
    fn failed(&self) {}
}

struct NoObserver;
impl Observer for NoObserver {}

/// Shared state the request path reads without asking the writer.
#[derive(Debug, Default)]
pub struct Health {
    failing: AtomicBool,
    syncs: AtomicU64,
    records: AtomicU64,
    errors: AtomicU64,
    last_seq: AtomicU64,
}

impl Health {
    /// Whether the last write succeeded.
    pub fn writable(&self) -> bool {
        !self.failing.load(Ordering::Acquire)
    }

    /// How many syncs the writer has made.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// How many records the writer has written.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// How many writes or syncs have failed.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The seq of the last record written.
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }
}

struct Pending {
    /// `None` for a flush: acknowledged once everything queued before it is on disk.
    entry: Option<Entry>,
    ack: Option<(Durability, oneshot::Sender<Result<(), AuditError>>)>,
}

/// How far a record must get before its sender hears back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durability {
    /// Written to the file (a full disk or a bad file fails here).
    Written,
    /// Written and, with `sync = always`, synced.
    Synced,
}

/// Acknowledges the records waiting for `level` (all that remain, if `None`) with `outcome`.
fn acknowledge(
    batch: &mut Vec<Pending>,
    level: Option<Durability>,
    outcome: Result<(), AuditError>,
) {
    batch.retain_mut(|pending| match &pending.ack {
        Some((wanted, _)) if level.is_none_or(|l| l == *wanted) => {
            let (_, ack) = pending.ack.take().expect("matched Some");
            let _ = ack.send(outcome.clone());
            false
        }
        Some(_) => true,
        None => level.is_some(),
    });
}

/// The handle requests use to reach the writer. Cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Pending>,
    health: Arc<Health>,
    on_error: OnError,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl Auditor {
    /// Opens the log (creating it and its directory), recovers from a crash if need be, and
    /// starts the writer thread.
    pub fn open(options: AuditOptions) -> Result<Auditor, OpenError> {
        Auditor::open_observed(options, Arc::new(NoObserver))
    }

    /// [`Auditor::open`], reporting to `observer`.
    pub fn open_observed(
        options: AuditOptions,
        observer: Arc<dyn Observer>,
    ) -> Result<Auditor, OpenError> {
        let (mut writer, recovered) = Writer::open(options, observer)?;
        if let Some(detail) = recovered {
            let mut entry = Entry::new(Outcome::Recovered);
            entry.detail = Some(detail);
            writer.commit(
                &mut vec![Pending {
                    entry: Some(entry),
                    ack: None,
                }],
                true,
            );
            if !writer.health.writable() {
                return Err(OpenError::Io {
                    path: writer.files.active().display().to_string(),
                    source: io::Error::other("cannot write the recovery record"),
                });
            }
        }
        let health = writer.health.clone();
        let on_error = writer.options.on_error;
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("a current-thread runtime for the audit writer");
                runtime.block_on(writer.run(rx));
            })
            .map_err(|source| OpenError::Io {
                path: "audit writer thread".into(),
                source,
            })?;
        Ok(Auditor {
            tx,
            health,
            on_error,
        })
    }

    /// The writer's state.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// What to do with creates while the log cannot be written.
    pub fn on_error(&self) -> OnError {
        self.on_error
    }

    /// Appends `entry` and waits until it is synced (with `sync = interval`: written).
    pub async fn append(&self, entry: Entry) -> Result<(), AuditError> {
        self.send(Some(entry), Durability::Synced).await
    }

    /// Appends `entry` and waits until it is written to the file, not for the sync: enough to
    /// know the log takes records, at the cost of a write instead of a sync.
    pub async fn write(&self, entry: Entry) -> Result<(), AuditError> {
        self.send(Some(entry), Durability::Written).await
    }

    /// Returns once every record queued before the call is on disk (for shutdown).
    pub async fn flush(&self) -> Result<(), AuditError> {
        self.send(None, Durability::Synced).await
    }

    async fn send(&self, entry: Option<Entry>, durability: Durability) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Pending {
                entry,
                ack: Some((durability, ack)),
            })
            .await
            .map_err(|_| AuditError::Stopped)?;
        done.await.map_err(|_| AuditError::Stopped)?
    }
}

struct Writer {
    options: AuditOptions,
    files: LogFiles,
    file: File,
    /// The active file's length (everything in it is complete records).
    len: u64,
    /// The seq of the first record in the active file.
    first_seq: u64,
    seq: u64,
    prev: Hash,
    /// Written but not yet synced (interval mode).
    dirty: bool,
    health: Arc<Health>,
    observer: Arc<dyn Observer>,
    buf: Vec<u8>,
}

impl Writer {
    fn open(
        options: AuditOptions,
        observer: Arc<dyn Observer>,
    ) -> Result<(Writer, Option<String>), OpenError> {
        let path = options.path.clone();
        let shown = path.display().to_string();
        let io_error = |source: io::Error| OpenError::Io {
            path: shown.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_error)?;
        }
        let files = LogFiles::new(&path);
        let head = files::read_head(&files.head(), options.key.as_ref())?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_error)?;
        let tail = files::tail(&mut file).map_err(io_error)?;
        let mut recovered = None;
        if tail.len > tail.complete {
            file.set_len(tail.complete).map_err(io_error)?;
            file.sync_data().map_err(io_error)?;
            let detail = format!(
                "cut a torn last line ({} bytes at byte {} of {}) left by a crash mid-write",
                tail.len - tail.complete,
                tail.complete,
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            tracing::warn!(path = %shown, "audit log: {detail}");
            recovered = Some(detail);
        }
        let damaged = |problem: String| OpenError::Damaged {
            path: shown.clone(),
            problem,
        };
        // The last record: in the active file, or the newest rotated one if it is empty.
        let last_line = match tail.last_line {
            Some(line) => Some(line),
            None => match files.rotated().map_err(io_error)?.last() {
                Some(rotated) => {
                    let mut f = File::open(&rotated.path).map_err(io_error)?;
                    files::tail(&mut f).map_err(io_error)?.last_line
                }
                None => None,
            },
        };
        let (seq, prev) = match last_line {
            None => (0, GENESIS),
            Some(line) => {
                let opened = open(&line, options.key.as_ref())
                    .map_err(|e| damaged(format!("the last record does not check out: {e}")))?;
                (opened.record.seq, opened.hash)
            }
        };
        match head {
            Some(h) if h.seq > seq => {
                return Err(damaged(format!(
                    "the log ends at seq {seq} but the head file names seq {}: records were cut from the end",
                    h.seq
                )));
            }
            Some(h) if h.seq == seq && h.hash != prev => {
                return Err(damaged(format!(
                    "the record at seq {seq} differs from the one the head file names"
                )));
            }
            None if seq > 0 => {
                tracing::warn!(path = %shown, "audit log has records but no head file; writing one")
            }
            _ => {}
        }
        let first_seq = match files::first_line(&path).map_err(io_error)? {
            Some(line) => open(&line, None).map(|o| o.record.seq).unwrap_or(seq + 1),
            None => seq + 1,
        };
        let health = Arc::new(Health::default());
        health.last_seq.store(seq, Ordering::Release);
        let writer = Writer {
            files,
            file,
            len: tail.complete,
            first_seq,
            seq,
            prev,
            dirty: false,
            health,
            observer,
            buf: Vec::with_capacity(64 * 1024),
            options,
        };
        if head.is_none_or(|h| h.seq != seq) && seq > 0 {
            writer.write_head().map_err(io_error)?;
        }
        Ok((writer, recovered))
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Pending>) {
        let interval = match self.options.sync {
            SyncMode::Always => Duration::from_secs(3600),
            SyncMode::Interval(every) => every,
        };
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                next = rx.recv() => {
                    let Some(first) = next else { break };
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    let sync_now = self.options.sync == SyncMode::Always
                        || batch.iter().any(|p| p.entry.is_none());
                    self.commit(&mut batch, sync_now);
                }
                _ = tick.tick(), if self.dirty => {
                    if let Err(e) = self.sync() {
                        self.fail(&e);
                    }
                }
            }
        }
        if self.dirty && self.sync().is_ok() {
            tracing::debug!("audit log synced at shutdown");
        }
    }

    /// Seals, writes and (if `sync_now`) syncs a batch, then acknowledges it.
    fn commit(&mut self, batch: &mut Vec<Pending>, sync_now: bool) {
        let started = Instant::now();
        let (seq_before, prev_before, len_before) = (self.seq, self.prev, self.len);
        self.buf.clear();
        let mut records = 0;
        for entry in batch.iter().filter_map(|p| p.entry.as_ref()) {
            self.seq += 1;
            self.prev = seal(
                entry,
                self.seq,
                &self.prev,
                self.options.key.as_ref(),
                &mut self.buf,
            );
            records += 1;
        }
        let written = self.file.write_all(&self.buf);
        if let Err(e) = &written {
            // Never leave part of a batch behind: the chain resumes where it was.
            let _ = self.file.set_len(len_before);
            (self.seq, self.prev, self.len) = (seq_before, prev_before, len_before);
            let error = self.fail(e);
            acknowledge(batch, None, Err(error));
            return;
        }
        self.len += self.buf.len() as u64;
        self.dirty |= records > 0;
        self.health.last_seq.store(self.seq, Ordering::Release);
        acknowledge(batch, Some(Durability::Written), Ok(()));
        let synced = if sync_now { self.sync() } else { Ok(()) };
        let outcome = match synced {
            Ok(()) => {
                self.health.records.fetch_add(records, Ordering::Relaxed);
                if sync_now {
                    self.observer.synced(records as usize, started.elapsed());
                }
                if self.health.failing.swap(false, Ordering::AcqRel) {
                    tracing::warn!(path = %self.files.active().display(), "audit log writable again");
                }
                Ok(())
            }
            // The records are in the file but may not be on disk: they stay (the chain is
            // intact either way); their senders hear of the failure.
            Err(e) => Err(self.fail(&e)),
        };
        acknowledge(batch, None, outcome.clone());
        if outcome.is_ok()
            && self.len >= self.options.max_file_bytes
            && let Err(e) = self.rotate()
        {
            tracing::error!(
                error = %e,
                path = %self.files.active().display(),
                "audit log rotation failed; still writing to the active file"
            );
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.file.sync_data()?;
        self.health.syncs.fetch_add(1, Ordering::Relaxed);
        self.dirty = false;
        self.write_head()
    }

    fn write_head(&self) -> io::Result<()> {
        let head = Head {
            seq: self.seq,
            hash: self.prev,
        };
        files::write_head(&self.files.head(), &head, self.options.key.as_ref())
    }

    fn fail(&self, e: &io::Error) -> AuditError {
        let error = AuditError::Io {
            path: self.files.active().to_owned(),
            kind: e.to_string(),
        };
        self.health.errors.fetch_add(1, Ordering::Relaxed);
        self.observer.failed();
        // Once per episode, not once per request.
        if !self.health.failing.swap(true, Ordering::AcqRel) {
            tracing::error!(error = %error, "audit log not writable; creates are refused until it is");
        }
        error
    }

    /// Renames the active file after its first seq and starts a new one. Records are whole
    /// lines in one file or the other: rotation happens between batches.
    fn rotate(&mut self) -> io::Result<()> {
        if self.dirty {
            self.sync()?;
        }
        let rotated = self.files.rotated_name(self.first_seq);
        std::fs::rename(self.files.active(), &rotated)?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(self.files.active())?;
        files::sync_dir(self.files.active())?;
        self.len = 0;
        self.first_seq = self.seq + 1;
        tracing::info!(rotated = %rotated.display(), "audit log rotated");
        self.prune()
    }

    fn prune(&self) -> io::Result<()> {
        if self.options.keep_files == 0 {
            return Ok(());
        }
        let rotated = self.files.rotated()?;
        let excess = rotated.len().saturating_sub(self.options.keep_files);
        let shipped = self
            .options
            .shipped
            .as_ref()
            .map(|s| s.load(Ordering::Acquire));
        for (i, old) in rotated[..excess].iter().enumerate() {
            // A rotated file ends just before the next file starts.
            let next_first = rotated
                .get(i + 1)
                .and_then(|f| f.first_seq)
                .unwrap_or(self.first_seq);
            if let Some(shipped) = shipped
                && next_first.saturating_sub(1) > shipped
            {
                tracing::warn!(
                    kept = %old.path.display(),
                    shipped_through = shipped,
                    "audit log file kept past retention: not yet shipped"
                );
                break;
            }
            std::fs::remove_file(&old.path)?;
            tracing::info!(removed = %old.path.display(), "audit log file removed by retention");
        }
        Ok(())
    }
}
