//! The audit writer: one thread owns the file; requests hand it records and wait for the sync
//! of the batch theirs landed in (group commit). Under load many records share one
//! `fdatasync`, and no request's acknowledgement comes before its record is on disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::record::{Entry, encode};

/// Most records written by one sync.
const MAX_BATCH: usize = 1024;
/// Records waiting for the writer before new ones wait for room.
const QUEUE: usize = 8192;

/// Why a record was not made durable.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AuditError {
    /// Writing or syncing the file failed.
    #[error("audit log {path}: {kind}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed (the `io::ErrorKind` and message).
        kind: String,
    },
    /// The writer has stopped.
    #[error("the audit writer has stopped")]
    Stopped,
}

struct Pending {
    /// `None` for a flush: acknowledged once everything queued before it is on disk.
    entry: Option<Entry>,
    ack: Option<oneshot::Sender<Result<(), AuditError>>>,
}

/// Shared state the request path reads without asking the writer.
#[derive(Debug, Default)]
pub struct Health {
    failing: AtomicBool,
    syncs: AtomicU64,
    records: AtomicU64,
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

    /// How many records the writer has made durable.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
}

/// The handle requests use to reach the writer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Auditor {
    tx: mpsc::Sender<Pending>,
    health: Arc<Health>,
}

impl Auditor {
    /// Opens (creating it and its directory) the audit file and starts the writer thread.
    pub fn open(path: &Path) -> io::Result<Auditor> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            path: path.to_owned(),
            file,
            health: health.clone(),
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(Auditor { tx, health })
    }

    /// Whether records are currently being written.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Appends `entry` and waits until it is on disk.
    pub async fn append(&self, entry: Entry) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Pending {
                entry: Some(entry),
                ack: Some(ack),
            })
            .await
            .map_err(|_| AuditError::Stopped)?;
        done.await.map_err(|_| AuditError::Stopped)?
    }
}

struct Writer {
    path: PathBuf,
    file: File,
    health: Arc<Health>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Pending>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            buf.clear();
            for entry in batch.iter().filter_map(|p| p.entry.as_ref()) {
                encode(entry, &mut buf);
            }
            let result = self.write(&buf);
            let outcome = match &result {
                Ok(()) => {
                    self.health
                        .records
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    if self.health.failing.swap(false, Ordering::AcqRel) {
                        tracing::warn!(path = %self.path.display(), "audit log writable again");
                    }
                    Ok(())
                }
                Err(e) => {
                    let error = AuditError::Io {
                        path: self.path.clone(),
                        kind: e.to_string(),
                    };
                    // Once per episode, not once per request.
                    if !self.health.failing.swap(true, Ordering::AcqRel) {
                        tracing::error!(error = %error, "audit log not writable; refusing creates");
                    }
                    Err(error)
                }
            };
            for pending in batch.drain(..) {
                if let Some(ack) = pending.ack {
                    let _ = ack.send(outcome.clone());
                }
            }
        }
        let _ = self.file.sync_data();
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        let before = self.file.metadata()?.len();
        let result = self
            .file
            .write_all(buf)
            .and_then(|()| self.file.sync_data());
        if result.is_err() {
            // Never leave half a batch behind: a torn line would read as tampering.
            let _ = self.file.set_len(before);
        }
        self.health.syncs.fetch_add(1, Ordering::Relaxed);
        result
    }
}
