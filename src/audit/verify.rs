//! Checking the chain: every record unchanged, none removed, reordered or cut from the end.
//!
//! Walks the rotated files and the active file in order. Each line's seal must match its bytes
//! (and its MAC the key, when one is given), each `seq` must follow the one before, each `prev`
//! must be the hash before it, and the log must reach the record the head file names.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::files::{Head, HeadError, LogFiles, read_head};
use super::record::{GENESIS, Hash, LineError, MacKey, open};

/// Where and how the chain breaks.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {problem}", file.display())]
pub struct Broken {
    /// The file.
    pub file: PathBuf,
    /// The 1-based line number (0 for the file or the head as a whole).
    pub line: u64,
    /// What is wrong.
    pub problem: String,
}

/// An intact chain.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Intact {
    /// Files walked.
    pub files: usize,
    /// Records checked.
    pub records: u64,
    /// The first and last seq seen.
    pub seqs: Option<(u64, u64)>,
    /// Things worth knowing that are not breaks.
    pub notes: Vec<String>,
}

/// Walks lines in chain order and remembers what it needs to judge the next one.
#[derive(Debug, Default)]
pub struct Walker {
    last: Option<(u64, Hash)>,
    at_head: Option<Hash>,
    head: Option<Head>,
    key: Option<MacKey>,
    intact: Intact,
    /// What `head` is called in messages (default: "head file").
    head_name: Option<&'static str>,
    /// A chain that does not start at seq 1 is a removal, not a note.
    strict_start: bool,
}

impl Walker {
    /// Checks against `head` (what the head file says) and, if given, `key`.
    pub fn new(head: Option<Head>, key: Option<MacKey>) -> Self {
        Walker {
            head,
            key,
            ..Walker::default()
        }
    }

    /// Requires the chain to start at seq 1: records missing from the start are a removal.
    pub fn strict_start(mut self) -> Self {
        self.strict_start = true;
        self
    }

    /// Names what stands in for the head file in messages (a database's shipping cursor).
    pub fn head_named(mut self, name: &'static str) -> Self {
        self.head_name = Some(name);
        self
    }

    /// Judges one complete line.
    pub fn line(&mut self, file: &Path, number: u64, line: &[u8]) -> Result<(), Broken> {
        let broken = |problem: String| Broken {
            file: file.to_owned(),
            line: number,
            problem,
        };
        let opened = open(line, self.key.as_ref()).map_err(|e| match e {
            LineError::HashMismatch | LineError::MacMismatch | LineError::MacMissing => {
                broken(format!("record changed: {e}"))
            }
            other => broken(format!(
                "not a valid record ({other}): changed or corrupted"
            )),
        })?;
        let seq = opened.record.seq;
        match self.last {
            None if seq == 1 && opened.prev != GENESIS => {
                return Err(broken("the first record does not start a chain".into()));
            }
            None if seq != 1 && self.strict_start => {
                return Err(broken(format!(
                    "records 1..{} are missing from the start of the log: deleted, or removed by \
                     retention (pass --allow-pruned if audit.keep_files removed them)",
                    seq - 1
                )));
            }
            None if seq != 1 => self.intact.notes.push(format!(
                "the chain starts at seq {seq}: earlier files were removed by retention"
            )),
            None => {}
            Some((last_seq, _)) if seq > last_seq + 1 => {
                return Err(broken(format!(
                    "records {}..{} are missing (seq {seq} follows {last_seq}): removed",
                    last_seq + 1,
                    seq - 1
                )));
            }
            Some((last_seq, _)) if seq <= last_seq => {
                return Err(broken(format!(
                    "seq {seq} follows {last_seq}: records were reordered or duplicated"
                )));
            }
            Some((_, last_hash)) if opened.prev != last_hash => {
                return Err(broken(
                    "prev does not match the record before: the chain was broken (removed, reordered or re-chained records)".into(),
                ));
            }
            Some(_) => {}
        }
        if self.head.is_some_and(|h| h.seq == seq) {
            self.at_head = Some(opened.hash);
        }
        self.last = Some((seq, opened.hash));
        self.intact.records += 1;
        self.intact.seqs = Some((self.intact.seqs.map_or(seq, |(first, _)| first), seq));
        Ok(())
    }

    /// Checks the end of the log against the head file; `head_path` names it in errors.
    pub fn finish(mut self, head_path: &Path) -> Result<Intact, Broken> {
        let name = self.head_name.unwrap_or("head file");
        let broken = |problem: String| Broken {
            file: head_path.to_owned(),
            line: 0,
            problem,
        };
        match (self.head, self.last) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(broken(format!(
                    "no {name}: nothing shows that records were not cut from the end"
                )));
            }
            (Some(head), None) => {
                return Err(broken(format!(
                    "the {name} names seq {} but the log has no records: it was emptied",
                    head.seq
                )));
            }
            (Some(head), Some((last_seq, _))) if head.seq > last_seq => {
                return Err(broken(format!(
                    "the log ends at seq {last_seq} but the {name} names seq {}: records {}..{} were cut from the end",
                    head.seq,
                    last_seq + 1,
                    head.seq
                )));
            }
            (Some(head), Some(_)) => match self.at_head {
                Some(hash) if hash == head.hash => {}
                Some(_) => {
                    return Err(broken(format!(
                        "the record at seq {} differs from the one the {name} names",
                        head.seq
                    )));
                }
                None => {
                    return Err(broken(format!(
                        "seq {} named by the {name} is not in the log (removed by retention?)",
                        head.seq
                    )));
                }
            },
        }
        if let (Some(head), Some((last_seq, _))) = (self.head, self.last)
            && last_seq > head.seq
        {
            self.intact.notes.push(format!(
                "{} record(s) after the {name}'s seq {}: written after its last update",
                last_seq - head.seq,
                head.seq
            ));
        }
        Ok(self.intact)
    }
}

/// Verifies the whole log whose active file is `active`, from seq 1.
pub fn verify(active: &Path, key: Option<&MacKey>) -> Result<Intact, Broken> {
    verify_with(active, key, false)
}

/// Verifies the whole log whose active file is `active`; with `allow_pruned`, the chain may
/// start after seq 1 (retention removed the oldest files), which is noted instead.
pub fn verify_with(
    active: &Path,
    key: Option<&MacKey>,
    allow_pruned: bool,
) -> Result<Intact, Broken> {
    let files = LogFiles::new(active);
    let head_path = files.head();
    let head = read_head(&head_path, key).map_err(|e| Broken {
        file: head_path.clone(),
        line: 0,
        problem: match e {
            HeadError::Mac { .. } => {
                "the head file's MAC does not match the key: it was rewritten".into()
            }
            other => other.to_string(),
        },
    })?;
    let list = files.all().map_err(|e| Broken {
        file: active.to_owned(),
        line: 0,
        problem: format!("cannot list the log's files: {e}"),
    })?;
    let mut walker = Walker::new(head, key.cloned());
    if !allow_pruned {
        walker = walker.strict_start();
    }
    for file in &list {
        walk_file(&file.path, &mut walker)?;
        walker.intact.files += 1;
    }
    walker.finish(&head_path)
}

fn walk_file(path: &Path, walker: &mut Walker) -> Result<(), Broken> {
    let io_error = |e: io::Error| Broken {
        file: path.to_owned(),
        line: 0,
        problem: format!("cannot read: {e}"),
    };
    let mut reader = BufReader::new(File::open(path).map_err(io_error)?);
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io_error)? == 0 {
            return Ok(());
        }
        number += 1;
        if !line.ends_with(b"\n") {
            return Err(Broken {
                file: path.to_owned(),
                line: number,
                problem: "the last line is incomplete: the log was truncated mid-record".into(),
            });
        }
        walker.line(path, number, &line)?;
    }
}
