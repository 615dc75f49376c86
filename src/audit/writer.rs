//! The audit writer: requests hand it records and wait, in batches, for the one `fdatasync`
//! that covers theirs (group commit). No create is acknowledged before its record is on disk.
//!
//! Two threads form a pipeline, so the disk's sync latency is paid once per batch and never
//! twice in a row by the same request:
//! - the **write** thread seals records into the hash chain and appends them; a record that only
//!   needs to be *written* (the `attempted` record before a create is forwarded) is acknowledged
//!   right there, without waiting for any sync;
//! - the **sync** thread `fdatasync`s everything written so far and acknowledges the records
//!   waiting for it, while the write thread goes on writing the next batch; after the
//!   acknowledgements it rewrites `<log>.head` in place, and syncs the head at most once a
//!   second, so a batch costs one durable write, not two.
//!
//! On open, the chain is picked up from the last record on disk. A torn last line (a crash
//! mid-write) is cut away and noted in a `recovered` record. A log that ends before the record
//! the head file names, or whose last record does not check out, is refused: that is not a
//! crash, it is tampering or corruption, and someone must look.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use std::future::Future;

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use super::files::{self, Head, HeadError, HeadFile, LogFiles};
use super::record::{Entry, GENESIS, Hash, MacKey, Outcome, open, seal};

/// Most records written by one write.
const MAX_BATCH: usize = 1024;
/// Records waiting for the writer before new ones wait for room.
const QUEUE: usize = 8192;
/// With `sync = always`, records that only had to be written (attempts) are made durable by
/// the next sync, or after this long when no sync follows.
const WRITTEN_SYNC_EVERY: Duration = Duration::from_secs(1);

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
    /// An `fdatasync` covering `records` records succeeded after `took`.
    fn synced(&self, _records: usize, _took: Duration) {}
    /// A write, sync or head update failed.
    fn failed(&self) {}
}

struct NoObserver;
impl Observer for NoObserver {}

/// Shared state the request path reads without asking the writer.
#[derive(Debug, Default)]
pub struct Health {
    /// A write or sync of the log failed and no sync has succeeded since.
    log_failing: AtomicBool,
    /// The last head update failed.
    head_failing: AtomicBool,
    /// An fsync failed: stays set until a restart.
    sync_failed: AtomicBool,
    syncs: AtomicU64,
    records: AtomicU64,
    errors: AtomicU64,
    last_seq: AtomicU64,
}

impl Health {
    /// Whether the log takes records: the last write, sync and head update succeeded.
    pub fn writable(&self) -> bool {
        !self.log_failing.load(Ordering::Acquire)
            && !self.head_failing.load(Ordering::Acquire)
            && !self.sync_failed.load(Ordering::Acquire)
    }

    /// How many syncs the writer has made.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// How many records have been synced (with `sync = interval`: written).
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// How many writes, syncs or head updates have failed.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The seq of the last record written.
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }
}

/// What the two threads share.
struct Shared {
    health: Arc<Health>,
    observer: Arc<dyn Observer>,
    path: PathBuf,
}

impl Shared {
    /// Records a failure of `flag`'s kind, logging it once per episode.
    fn fail(&self, flag: &AtomicBool, what: &str, e: &io::Error) -> AuditError {
        let error = AuditError::Io {
            path: self.path.clone(),
            kind: format!("{what}: {e}"),
        };
        self.health.errors.fetch_add(1, Ordering::Relaxed);
        self.observer.failed();
        if !flag.swap(true, Ordering::AcqRel) {
            tracing::error!(error = %error, "audit log not writable; creates are refused until it is");
        }
        error
    }

    fn recover(&self, flag: &AtomicBool) {
        if flag.swap(false, Ordering::AcqRel) {
            tracing::warn!(path = %self.path.display(), "audit log writable again");
        }
    }
}

/// Answers a record's sender: the seq the record got (for a flush, the last seq written).
type Ack = oneshot::Sender<Result<u64, AuditError>>;

struct Pending {
    /// `None` for a flush: acknowledged once everything queued before it is on disk.
    entry: Option<Entry>,
    ack: Option<(Durability, Ack)>,
}

/// How far a record must get before its sender hears back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durability {
    /// Written to the file (a full disk or a bad file fails here).
    Written,
    /// Written and, with `sync = always`, synced.
    Synced,
}

/// Work for the sync thread: make `file` durable up to `head`, then tell `acks`.
struct SyncJob {
    file: Arc<File>,
    head: Head,
    records: usize,
    acks: Vec<(Ack, u64)>,
    /// Update the head before acknowledging (a flush: shutdown wants an exact head).
    head_first: bool,
}

/// The handle requests use to reach the writer. Cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Pending>,
    health: Arc<Health>,
    on_error: OnError,
    /// Creates forwarded and not yet recorded, which shutdown waits for.
    creates: TaskTracker,
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
    /// starts the writer's threads.
    pub fn open(options: AuditOptions) -> Result<Auditor, OpenError> {
        Auditor::open_observed(options, Arc::new(NoObserver))
    }

    /// [`Auditor::open`], reporting to `observer`.
    pub fn open_observed(
        options: AuditOptions,
        observer: Arc<dyn Observer>,
    ) -> Result<Auditor, OpenError> {
        let shared = Arc::new(Shared {
            health: Arc::new(Health::default()),
            observer,
            path: options.path.clone(),
        });
        let (mut writer, recovered) = Writer::open(options, shared.clone())?;
        if let Some(detail) = recovered {
            writer.record_recovery(detail)?;
        }
        let on_error = writer.options.on_error;
        let spawn_error = |source| OpenError::Io {
            path: "audit writer threads".into(),
            source,
        };
        let head_file =
            HeadFile::open(&writer.files.head(), writer.options.key.clone()).map_err(|source| {
                OpenError::Io {
                    path: writer.files.head().display().to_string(),
                    source,
                }
            })?;
        let syncer = Syncer {
            shared: shared.clone(),
            head: head_file,
            head_seq: writer.seq,
            head_unsynced_since: None,
            head_put_ok: true,
        };
        let (sync_tx, sync_rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("audit-sync".into())
            .spawn(move || syncer.run(sync_rx))
            .map_err(spawn_error)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("audit-write".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("a current-thread runtime for the audit writer");
                runtime.block_on(writer.run(rx, sync_tx));
            })
            .map_err(spawn_error)?;
        Ok(Auditor {
            tx,
            health: shared.health.clone(),
            on_error,
            creates: TaskTracker::new(),
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

    /// Appends `entry` and waits until it is synced (with `sync = interval`: written). Returns
    /// the seq it got.
    pub async fn append(&self, entry: Entry) -> Result<u64, AuditError> {
        self.send(Some(entry), Durability::Synced).await
    }

    /// Appends `entry` and waits until it is written to the file, not for a sync: enough to
    /// know the log takes records. A later [`Auditor::append`] makes it durable too. Returns
    /// the seq it got.
    pub async fn write(&self, entry: Entry) -> Result<u64, AuditError> {
        self.send(Some(entry), Durability::Written).await
    }

    /// Runs a forwarded create to its outcome record on a task of its own, so that nothing the
    /// client does (hanging up) can stop it; shutdown waits for these ([`Auditor::finish`]).
    pub fn spawn_create<F>(&self, create: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.creates.spawn(create)
    }

    /// For shutdown: waits up to `grace` for forwarded creates to be recorded, then flushes.
    /// Returns how many creates were still running when `grace` ran out.
    pub async fn finish(&self, grace: Duration) -> Result<usize, AuditError> {
        self.creates.close();
        let _ = tokio::time::timeout(grace, self.creates.wait()).await;
        let unfinished = self.creates.len();
        self.flush().await?;
        Ok(unfinished)
    }

    /// Returns once every record queued before the call is on disk and the head file names
    /// the last of them (for shutdown).
    pub async fn flush(&self) -> Result<(), AuditError> {
        self.send(None, Durability::Synced).await.map(|_| ())
    }

    async fn send(&self, entry: Option<Entry>, durability: Durability) -> Result<u64, AuditError> {
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

/// The write thread's state: the active file and the end of the chain.
struct Writer {
    options: AuditOptions,
    files: LogFiles,
    file: Arc<File>,
    /// The active file's length (everything in it is complete records).
    len: u64,
    /// The seq of the first record in the active file.
    first_seq: u64,
    seq: u64,
    prev: Hash,
    /// Written but not yet handed to the sync thread.
    dirty: bool,
    /// Records written since the last hand-over (sync = always), counted once synced.
    unsynced: usize,
    shared: Arc<Shared>,
    buf: Vec<u8>,
}

impl Writer {
    /// Opens the log and finds where the chain stands; returns the recovery detail if a torn
    /// line was cut.
    fn open(
        options: AuditOptions,
        shared: Arc<Shared>,
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
        shared.health.last_seq.store(seq, Ordering::Release);
        if head.is_none_or(|h| h.seq != seq) && seq > 0 {
            files::write_head(
                &files.head(),
                &Head { seq, hash: prev },
                options.key.as_ref(),
            )
            .map_err(io_error)?;
        }
        let writer = Writer {
            files,
            file: Arc::new(file),
            len: tail.complete,
            first_seq,
            seq,
            prev,
            dirty: false,
            unsynced: 0,
            shared,
            buf: Vec::with_capacity(64 * 1024),
            options,
        };
        Ok((writer, recovered))
    }

    /// Writes and syncs the `recovered` record before anything else, on the opening thread.
    fn record_recovery(&mut self, detail: String) -> Result<(), OpenError> {
        let mut entry = Entry::new(Outcome::Recovered);
        entry.detail = Some(detail);
        self.buf.clear();
        self.prev = seal(
            &entry,
            self.seq + 1,
            &self.prev,
            self.options.key.as_ref(),
            &mut self.buf,
        );
        self.seq += 1;
        let io_error = |source: io::Error| OpenError::Io {
            path: self.files.active().display().to_string(),
            source,
        };
        (&*self.file).write_all(&self.buf).map_err(io_error)?;
        self.file.sync_data().map_err(io_error)?;
        self.len += self.buf.len() as u64;
        self.shared
            .health
            .last_seq
            .store(self.seq, Ordering::Release);
        files::write_head(
            &self.files.head(),
            &Head {
                seq: self.seq,
                hash: self.prev,
            },
            self.options.key.as_ref(),
        )
        .map_err(io_error)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Pending>, sync: std_mpsc::Sender<SyncJob>) {
        let interval = match self.options.sync {
            SyncMode::Always => WRITTEN_SYNC_EVERY,
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
                    let was_dirty = self.dirty;
                    self.commit(&mut batch, &sync);
                    if self.dirty && !was_dirty {
                        // A tick missed while nothing was dirty would fire at once.
                        tick.reset();
                    }
                }
                _ = tick.tick(), if self.dirty => self.hand_over(Vec::new(), false, &sync),
            }
        }
        if self.dirty {
            self.hand_over(Vec::new(), true, &sync);
        }
    }

    /// Seals and writes a batch, acknowledges what only had to be written, and hands the rest
    /// to the sync thread.
    fn commit(&mut self, batch: &mut Vec<Pending>, sync: &std_mpsc::Sender<SyncJob>) {
        let (seq_before, prev_before) = (self.seq, self.prev);
        self.buf.clear();
        let mut records = 0;
        let mut seqs = Vec::with_capacity(batch.len());
        for pending in batch.iter() {
            if let Some(entry) = &pending.entry {
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
            seqs.push(self.seq);
        }
        if let Err(e) = (&*self.file).write_all(&self.buf) {
            // Never leave part of a batch behind: the chain resumes where it was.
            let _ = self.file.set_len(self.len);
            (self.seq, self.prev) = (seq_before, prev_before);
            let error = self
                .shared
                .fail(&self.shared.health.log_failing, "write", &e);
            for pending in batch.drain(..) {
                if let Some((_, ack)) = pending.ack {
                    let _ = ack.send(Err(error.clone()));
                }
            }
            return;
        }
        self.len += self.buf.len() as u64;
        self.dirty |= records > 0;
        self.shared
            .health
            .last_seq
            .store(self.seq, Ordering::Release);
        let flush = batch.iter().any(|p| p.entry.is_none());
        let mut waiting = Vec::new();
        for (pending, seq) in batch.drain(..).zip(seqs) {
            match pending.ack {
                Some((Durability::Synced, ack)) => waiting.push((ack, seq)),
                Some((Durability::Written, ack)) => {
                    let _ = ack.send(Ok(seq));
                }
                None => {}
            }
        }
        match self.options.sync {
            // Records that only had to be written (attempts) wait for the next sync, which
            // covers everything written to the file before it: one sync per create, not two.
            SyncMode::Always if waiting.is_empty() && !flush => self.unsynced += records,
            SyncMode::Always => {
                self.unsynced += records;
                self.hand_over(waiting, flush, sync);
            }
            SyncMode::Interval(_) => {
                self.shared
                    .health
                    .records
                    .fetch_add(records as u64, Ordering::Relaxed);
                if flush {
                    self.hand_over(waiting, true, sync);
                } else {
                    for (ack, seq) in waiting {
                        let _ = ack.send(Ok(seq));
                    }
                }
            }
        }
        if self.len >= self.options.max_file_bytes {
            // The file's last records are synced before it is set aside.
            if self.dirty {
                self.hand_over(Vec::new(), false, sync);
            }
            if let Err(e) = self.rotate() {
                tracing::error!(
                    error = %e,
                    path = %self.files.active().display(),
                    "audit log rotation failed; still writing to the active file"
                );
            }
        }
    }

    fn hand_over(
        &mut self,
        acks: Vec<(Ack, u64)>,
        head_first: bool,
        sync: &std_mpsc::Sender<SyncJob>,
    ) {
        self.dirty = false;
        let records = std::mem::take(&mut self.unsynced);
        let job = SyncJob {
            file: self.file.clone(),
            head: Head {
                seq: self.seq,
                hash: self.prev,
            },
            records,
            acks,
            head_first,
        };
        if let Err(std_mpsc::SendError(job)) = sync.send(job) {
            for (ack, _) in job.acks {
                let _ = ack.send(Err(AuditError::Stopped));
            }
        }
    }

    /// Renames the active file after its first seq and starts a new one. Records are whole
    /// lines in one file or the other: rotation happens between batches. Jobs already handed
    /// to the sync thread still sync the renamed file (they hold it open).
    fn rotate(&mut self) -> io::Result<()> {
        let rotated = self.files.rotated_name(self.first_seq);
        std::fs::rename(self.files.active(), &rotated)?;
        self.file = Arc::new(
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(self.files.active())?,
        );
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

/// How long the head file may go unsynced after an update. Until it is synced a power loss
/// (not a process crash: the page cache survives that) can bring back an older head, which
/// only narrows what a truncation check can see; it never names a record the log lacks.
const HEAD_SYNC_EVERY: Duration = Duration::from_secs(1);

/// The sync thread: one `fdatasync` for everything handed over since the last one, then the
/// head file updated in place, and synced at most every [`HEAD_SYNC_EVERY`] (one durable
/// write per batch, not two).
struct Syncer {
    shared: Arc<Shared>,
    head: HeadFile,
    /// The seq of the last head written: an older one is never written over it.
    head_seq: u64,
    /// When the oldest head update not yet synced was written.
    head_unsynced_since: Option<Instant>,
    /// Whether the last head update was written: a sync clears a head failure only then.
    head_put_ok: bool,
}

impl Syncer {
    fn run(mut self, rx: std_mpsc::Receiver<SyncJob>) {
        loop {
            let first = match self.head_unsynced_since {
                None => match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
                Some(since) => {
                    match rx.recv_timeout(HEAD_SYNC_EVERY.saturating_sub(since.elapsed())) {
                        Ok(job) => job,
                        Err(std_mpsc::RecvTimeoutError::Timeout) => {
                            self.sync_head();
                            continue;
                        }
                        Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let mut jobs = vec![first];
            jobs.extend(rx.try_iter());
            // Usually one file; around a rotation, the old one first.
            let mut result = Ok(());
            let mut sync_took = Duration::ZERO;
            let mut synced: Option<&Arc<File>> = None;
            for job in &jobs {
                if synced.is_some_and(|f| Arc::ptr_eq(f, &job.file)) {
                    continue;
                }
                let started = Instant::now();
                result = job.file.sync_data();
                sync_took += started.elapsed();
                if result.is_err() {
                    break;
                }
                synced = Some(&job.file);
            }
            let health = &self.shared.health;
            health.syncs.fetch_add(1, Ordering::Relaxed);
            let head = jobs.last().expect("at least one job").head;
            let flush = jobs.iter().any(|j| j.head_first);
            let outcome = match result {
                Ok(()) => {
                    if !health.sync_failed.load(Ordering::Acquire) {
                        self.shared.recover(&health.log_failing);
                    }
                    let records: usize = jobs.iter().map(|j| j.records).sum();
                    health.records.fetch_add(records as u64, Ordering::Relaxed);
                    self.shared.observer.synced(records, sync_took);
                    if flush {
                        // Shutdown wants an exact, durable head before it hears back.
                        self.put_head(head);
                        self.sync_head();
                    }
                    Ok(())
                }
                // Records stay in the file (the chain is intact either way), but nobody is told
                // they are durable. After a failed fsync the kernel may have dropped those
                // pages and a later fsync can succeed without them, so the log stays failed
                // until a restart rebuilds the chain from what is really on disk.
                Err(e) => {
                    if !health.sync_failed.swap(true, Ordering::AcqRel) {
                        tracing::error!(
                            error = %e,
                            "audit log sync failed: records since the last good sync may not be \
                             on disk; creates are refused until specgate is restarted"
                        );
                    }
                    Err(self.shared.fail(&health.log_failing, "sync", &e))
                }
            };
            let synced_ok = outcome.is_ok();
            for job in jobs {
                for (ack, seq) in job.acks {
                    let _ = ack.send(outcome.clone().map(|()| seq));
                }
            }
            // After the acknowledgements: the head is off every request's path.
            if synced_ok && !flush {
                self.put_head(head);
                if self
                    .head_unsynced_since
                    .is_some_and(|since| since.elapsed() >= HEAD_SYNC_EVERY)
                {
                    self.sync_head();
                }
            }
        }
        if self.head_unsynced_since.is_some() {
            self.sync_head();
        }
    }

    /// Writes `head` into the head file (unsynced) unless a newer one is there already.
    fn put_head(&mut self, head: Head) {
        if head.seq < self.head_seq {
            return;
        }
        self.head_seq = head.seq;
        self.head_put_ok = false;
        match self.head.put(&head) {
            Ok(()) => {
                self.head_put_ok = true;
                self.head_unsynced_since.get_or_insert_with(Instant::now);
            }
            Err(e) => {
                self.shared
                    .fail(&self.shared.health.head_failing, "head file", &e);
            }
        }
    }

    /// Syncs the head file; a head failure clears only once the newest head is written and
    /// synced.
    fn sync_head(&mut self) {
        self.head_unsynced_since = None;
        match self.head.sync() {
            Ok(()) if self.head_put_ok => self.shared.recover(&self.shared.health.head_failing),
            Ok(()) => {}
            Err(e) => {
                self.shared
                    .fail(&self.shared.health.head_failing, "head file sync", &e);
            }
        }
    }
}
