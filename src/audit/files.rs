//! Where the audit log lives on disk: the active file, its rotated siblings, and the head file.
//!
//! `specgate-audit.jsonl` is the active file. At rotation it is renamed to
//! `specgate-audit.jsonl.<first seq, 20 digits>`, so the siblings sort in chain order by name.
//! `specgate-audit.jsonl.head` holds the last synced record's seq and hash (MACed when a key is
//! configured): a log cut short no longer matches it.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record::{Hash, MacKey, decode_hash};

/// The files of one audit log.
#[derive(Clone, Debug)]
pub struct LogFiles {
    active: PathBuf,
}

/// A file of the log, in chain order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFile {
    /// The path.
    pub path: PathBuf,
    /// The seq of its first record, for a rotated file (from its name).
    pub first_seq: Option<u64>,
}

impl LogFiles {
    /// The log whose active file is `active`.
    pub fn new(active: impl Into<PathBuf>) -> Self {
        LogFiles {
            active: active.into(),
        }
    }

    /// The active file.
    pub fn active(&self) -> &Path {
        &self.active
    }

    /// The head file.
    pub fn head(&self) -> PathBuf {
        sibling(&self.active, ".head")
    }

    /// The name a file starting at `first_seq` is rotated to.
    pub fn rotated_name(&self, first_seq: u64) -> PathBuf {
        sibling(&self.active, &format!(".{first_seq:020}"))
    }

    /// The rotated files, oldest first.
    pub fn rotated(&self) -> io::Result<Vec<LogFile>> {
        let dir = match self.active.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = self
            .active
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let prefix = format!("{name}.");
        let mut files = Vec::new();
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let file_name = entry.file_name();
            let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            if rest.len() == 20 && rest.bytes().all(|b| b.is_ascii_digit()) {
                files.push(LogFile {
                    path: dir.join(&file_name),
                    first_seq: rest.parse().ok(),
                });
            }
        }
        files.sort_by_key(|f| f.first_seq);
        Ok(files)
    }

    /// Every file of the log in chain order: the rotated ones, then the active one if it exists.
    pub fn all(&self) -> io::Result<Vec<LogFile>> {
        let mut files = self.rotated()?;
        if self.active.exists() {
            files.push(LogFile {
                path: self.active.clone(),
                first_seq: None,
            });
        }
        Ok(files)
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// The end of a file: where its last complete line ends, and that line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tail {
    /// The file's length.
    pub len: u64,
    /// The length up to and including the last newline; bytes after it are a torn line.
    pub complete: u64,
    /// The last complete line (without its newline).
    pub last_line: Option<Vec<u8>>,
}

/// Reads the end of `file` backwards until the last complete line is found.
pub fn tail(file: &mut File) -> io::Result<Tail> {
    let len = file.metadata()?.len();
    let mut newlines = Vec::new(); // positions of the last two newlines
    let mut pos = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while pos > 0 && newlines.len() < 2 {
        let start = pos.saturating_sub(chunk.len() as u64);
        let n = (pos - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        for i in (0..n).rev() {
            if chunk[i] == b'\n' {
                newlines.push(start + i as u64);
                if newlines.len() == 2 {
                    break;
                }
            }
        }
        pos = start;
    }
    let Some(&last_nl) = newlines.first() else {
        return Ok(Tail {
            len,
            complete: 0,
            last_line: None,
        });
    };
    let line_start = newlines.get(1).map_or(0, |p| p + 1);
    let mut line = vec![0u8; (last_nl - line_start) as usize];
    file.seek(SeekFrom::Start(line_start))?;
    file.read_exact(&mut line)?;
    Ok(Tail {
        len,
        complete: last_nl + 1,
        last_line: Some(line),
    })
}

/// The first line of a file, if it has a complete one.
pub fn first_line(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut line = Vec::new();
    let mut reader = io::BufReader::new(file);
    io::BufRead::read_until(&mut reader, b'\n', &mut line)?;
    Ok(line.ends_with(b"\n").then(|| {
        line.pop();
        line
    }))
}

/// What the head file says: the last synced record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Its seq.
    pub seq: u64,
    /// Its hash.
    pub hash: Hash,
}

/// One slot of the head file, as JSON.
#[derive(Serialize, Deserialize)]
struct Slot {
    seq: u64,
    hash: String,
    /// The first 8 bytes of SHA-256 over the slot's claim: a torn slot does not check out.
    sum: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
}

/// Each slot is a fixed-size line, so a slot is rewritten in place without touching the other.
const SLOT: usize = 256;

fn claim(head: &Head) -> String {
    format!(
        "specgate-audit-head:{}:{}",
        head.seq,
        hex::encode(head.hash)
    )
}

fn head_sum(head: &Head) -> String {
    hex::encode(&super::record::sha256(&[claim(head).as_bytes()])[..8])
}

fn head_mac(key: &MacKey, head: &Head) -> Hash {
    key.mac(claim(head).as_bytes())
}

/// Why a head file cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// Reading failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The head file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// It is not a head file.
    #[error("{path} is not a valid head file")]
    Invalid {
        /// The head file.
        path: String,
    },
    /// Its MAC does not match the key (or it has none).
    #[error("{path}: the MAC does not match the configured key")]
    Mac {
        /// The head file.
        path: String,
    },
}

/// Reads the head file; `None` if there is none.
///
/// The file has two slots written alternately; the head is the valid slot with the higher seq,
/// so a slot torn by a crash mid-write leaves the other one standing.
pub fn read_head(path: &Path, key: Option<&MacKey>) -> Result<Option<Head>, HeadError> {
    let shown = path.display().to_string();
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(HeadError::Io {
                path: shown,
                source,
            });
        }
    };
    if bytes.is_empty() {
        // Created by a writer that has not written a record yet.
        return Ok(None);
    }
    let mut best: Option<Head> = None;
    let mut mac_failed = false;
    for chunk in bytes.chunks(SLOT) {
        let Some((head, slot)) = parse_slot(chunk) else {
            continue;
        };
        if let Some(key) = key {
            let stated = slot.mac.as_deref().and_then(|m| decode_hash(m.as_bytes()));
            if stated != Some(head_mac(key, &head)) {
                mac_failed = true;
                continue;
            }
        }
        if best.is_none_or(|b| head.seq >= b.seq) {
            best = Some(head);
        }
    }
    match best {
        Some(head) => Ok(Some(head)),
        None if mac_failed => Err(HeadError::Mac { path: shown }),
        None => Err(HeadError::Invalid { path: shown }),
    }
}

/// A slot's head, if the slot is whole (its checksum matches; the MAC is checked by the caller).
fn parse_slot(chunk: &[u8]) -> Option<(Head, Slot)> {
    let slot = serde_json::from_slice::<Slot>(chunk.trim_ascii_end()).ok()?;
    let head = Head {
        seq: slot.seq,
        hash: decode_hash(slot.hash.as_bytes())?,
    };
    (slot.sum == head_sum(&head)).then_some((head, slot))
}

/// The head file, open for in-place updates, with no file created, renamed or resized (no
/// metadata to journal). Updates between two syncs all go to the same slot, never the one
/// holding the last synced head: a power loss can tear the slot being written, never both.
#[derive(Debug)]
pub struct HeadFile {
    file: File,
    key: Option<MacKey>,
    /// The slot updates go to until the next sync.
    next_slot: u64,
    /// Whether `next_slot` was written since the last sync.
    unsynced: bool,
}

impl HeadFile {
    /// Opens (creating) the head file at `path`.
    pub fn open(path: &Path, key: Option<MacKey>) -> io::Result<HeadFile> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // Start on the slot that does not hold the newest head.
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes)?;
        let seq_in = |slot: usize| {
            let (head, _) = parse_slot(bytes.chunks(SLOT).nth(slot)?)?;
            Some(head.seq)
        };
        let first_is_newest = match (seq_in(0), seq_in(1)) {
            (Some(first), Some(second)) => first >= second,
            (first, _) => first.is_some(),
        };
        Ok(HeadFile {
            file,
            key,
            next_slot: u64::from(first_is_newest),
            unsynced: false,
        })
    }

    /// Writes `head` into the next slot and syncs it.
    pub fn write(&mut self, head: &Head) -> io::Result<()> {
        self.put(head)?;
        self.sync()
    }

    /// Writes `head` into the slot updates go to, without syncing: readers (and a restart
    /// after a process crash) see it at once; it survives a power loss once
    /// [`HeadFile::sync`] runs. Until then the other slot keeps the last synced head.
    pub fn put(&mut self, head: &Head) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let slot = Slot {
            seq: head.seq,
            hash: hex::encode(head.hash),
            sum: head_sum(head),
            mac: self.key.as_ref().map(|k| hex::encode(head_mac(k, head))),
        };
        let mut line = serde_json::to_vec(&slot)?;
        line.resize(SLOT - 1, b' ');
        line.push(b'\n');
        self.file
            .write_all_at(&line, self.next_slot % 2 * SLOT as u64)?;
        self.unsynced = true;
        Ok(())
    }

    /// Makes the last update durable; the next one goes to the other slot.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        if std::mem::take(&mut self.unsynced) {
            self.next_slot += 1;
        }
        Ok(())
    }
}

/// Writes `head` to the head file at `path` (opening it for this one write).
pub fn write_head(path: &Path, head: &Head, key: Option<&MacKey>) -> io::Result<()> {
    let mut file = HeadFile::open(path, key.cloned())?;
    // Fill both slots: whatever was there before no longer counts.
    file.write(head)?;
    file.write(head)
}

/// Makes a rename or creation in `dir` durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head whose hash is its seq, repeated.
    fn head(seq: u64) -> Head {
        Head {
            seq,
            hash: [seq as u8; 32],
        }
    }

    #[test]
    fn tail_finds_the_last_complete_line_and_the_torn_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        for (content, complete, last) in [
            (&b""[..], 0, None),
            (b"abc", 0, None),
            (b"one\n", 4, Some(&b"one"[..])),
            (b"one\ntwo\n", 8, Some(&b"two"[..])),
            (b"one\ntwo\nthr", 8, Some(&b"two"[..])),
        ] {
            fs::write(&path, content).unwrap();
            let t = tail(&mut File::open(&path).unwrap()).unwrap();
            assert_eq!(t.len, content.len() as u64);
            assert_eq!(t.complete, complete, "{content:?}");
            assert_eq!(t.last_line.as_deref(), last, "{content:?}");
        }
    }

    #[test]
    fn tail_reads_across_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let long = "x".repeat(100_000);
        fs::write(&path, format!("{long}\n{long}y\nz")).unwrap();
        let t = tail(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!(t.last_line.unwrap(), format!("{long}y").into_bytes());
    }

    #[test]
    fn rotated_files_sort_in_chain_order() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::new(dir.path().join("a.jsonl"));
        for seq in [100, 2, 31] {
            fs::write(files.rotated_name(seq), "").unwrap();
        }
        fs::write(dir.path().join("a.jsonl.head"), "").unwrap();
        fs::write(dir.path().join("a.jsonl.bak"), "").unwrap();
        fs::write(files.active(), "").unwrap();
        let all = files.all().unwrap();
        let seqs: Vec<_> = all.iter().map(|f| f.first_seq).collect();
        assert_eq!(seqs, [Some(2), Some(31), Some(100), None]);
    }

    #[test]
    fn the_head_round_trips_and_its_mac_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl.head");
        let head = Head {
            seq: 9,
            hash: [7; 32],
        };
        let key = MacKey::new(b"key".to_vec());
        assert_eq!(read_head(&path, None).unwrap(), None);
        write_head(&path, &head, Some(&key)).unwrap();
        assert_eq!(read_head(&path, Some(&key)).unwrap(), Some(head));
        assert_eq!(read_head(&path, None).unwrap(), Some(head));
        assert!(matches!(
            read_head(&path, Some(&MacKey::new(b"other".to_vec()))),
            Err(HeadError::Mac { .. })
        ));
        write_head(&path, &head, None).unwrap();
        assert!(matches!(
            read_head(&path, Some(&key)),
            Err(HeadError::Mac { .. })
        ));
    }

    #[test]
    fn updates_between_syncs_never_touch_the_last_synced_slot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl.head");
        let mut file = HeadFile::open(&path, None).unwrap();
        file.write(&head(1)).unwrap();
        for seq in 2..=5 {
            file.put(&head(seq)).unwrap();
        }
        assert_eq!(read_head(&path, None).unwrap(), Some(head(5)));
        // A power loss tears the slot being updated: the synced head stands.
        let mut bytes = fs::read(&path).unwrap();
        let torn = bytes
            .chunks(SLOT)
            .position(|c| c.starts_with(b"{\"seq\":5"))
            .unwrap();
        bytes[torn * SLOT + 10] = b'9';
        fs::write(&path, &bytes).unwrap();
        assert_eq!(read_head(&path, None).unwrap(), Some(head(1)));
        // Synced, the update stands, and the next ones go to the other slot.
        let mut file = HeadFile::open(&path, None).unwrap();
        file.put(&head(6)).unwrap();
        file.sync().unwrap();
        file.put(&head(7)).unwrap();
        let bytes = fs::read(&path).unwrap();
        let seqs: Vec<u64> = bytes
            .chunks(SLOT)
            .filter_map(|c| parse_slot(c).map(|(h, _)| h.seq))
            .collect();
        assert_eq!(seqs.len(), 2);
        assert!(seqs.contains(&6) && seqs.contains(&7), "{seqs:?}");
    }

    #[test]
    fn a_reopened_head_file_writes_first_over_the_older_slot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl.head");
        for (writes, newest_at) in [(1, 0), (2, 1), (3, 0)] {
            fs::remove_file(&path).ok();
            let mut file = HeadFile::open(&path, None).unwrap();
            for seq in 1..=writes {
                file.write(&head(seq)).unwrap();
            }
            let mut reopened = HeadFile::open(&path, None).unwrap();
            reopened.put(&head(10)).unwrap();
            let bytes = fs::read(&path).unwrap();
            let newest = parse_slot(&bytes[newest_at * SLOT..(newest_at + 1) * SLOT]);
            assert_eq!(
                newest.map(|(h, _)| h.seq),
                Some(writes),
                "after {writes} writes"
            );
        }
    }

    #[test]
    fn a_torn_head_slot_leaves_the_other_standing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl.head");
        let mut file = HeadFile::open(&path, None).unwrap();
        file.write(&Head {
            seq: 1,
            hash: [1; 32],
        })
        .unwrap();
        file.write(&Head {
            seq: 2,
            hash: [2; 32],
        })
        .unwrap();
        assert_eq!(read_head(&path, None).unwrap().unwrap().seq, 2);
        // A crash mid-write tears the newest slot: the older one stands (a head behind the log
        // is allowed; one ahead of it never is).
        let mut bytes = fs::read(&path).unwrap();
        bytes[SLOT + 10] = b'9';
        fs::write(&path, &bytes).unwrap();
        assert_eq!(read_head(&path, None).unwrap().unwrap().seq, 1);
        // With both slots torn, nothing can be trusted.
        bytes[10] = b'9';
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_head(&path, None),
            Err(HeadError::Invalid { .. })
        ));
    }
}
