//! Reading the local log for shipping: from the record after the database's cursor, across
//! rotations, only records the writer has synced (the head file's seq), and only a chain that
//! checks out.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::audit::files::{self, LogFiles};
use crate::audit::record::{GENESIS, Hash, MacKey, open};
use crate::audit::verify::Walker;

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    /// Reading a file failed: try again later.
    Io(io::Error),
    /// The log and the database disagree, or the log is damaged: a person must look.
    Stall(String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Where shipping stands: the last record the database has, or seq 0 and [`GENESIS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Its seq.
    pub seq: u64,
    /// Its hash.
    pub hash: Hash,
}

/// A record to ship.
#[derive(Debug)]
pub struct Line {
    /// Its seq.
    pub seq: u64,
    /// The line exactly as written, without its newline.
    pub text: String,
    /// Its hash.
    pub hash: Hash,
    /// Its `ts`.
    pub ts: String,
}

struct Current {
    first_seq: u64,
    path: PathBuf,
    reader: BufReader<File>,
    /// Lines read so far (for messages).
    line: u64,
}

/// Reads records in chain order from the one after a cursor.
pub struct Reader {
    files: LogFiles,
    key: Option<MacKey>,
    walker: Walker,
    current: Option<Current>,
    /// The seq of the next record to hand out.
    next: u64,
    /// The `prev` the next record must state, while the walker has not seen the one before it.
    expect_prev: Option<Hash>,
    /// A complete line read but not yet handed out (past the synced seq), with its line number.
    held: Option<(Vec<u8>, u64)>,
    /// The start of a line still being written.
    partial: Vec<u8>,
}

/// The seq of a sealed line, from its `{"seq":N,` prefix.
fn line_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

impl Reader {
    /// Positions a reader at the record after `cursor`, checking that the local log holds the
    /// record the cursor names (or, if retention removed it, that the next one follows it).
    pub fn resume(
        active: &Path,
        key: Option<MacKey>,
        cursor: Cursor,
        node: &str,
    ) -> Result<Reader, ReadError> {
        let files = LogFiles::new(active);
        let mut reader = Reader {
            files,
            key: key.clone(),
            walker: Walker::new(None, key),
            current: None,
            next: cursor.seq + 1,
            expect_prev: Some(cursor.hash),
            held: None,
            partial: Vec::new(),
        };
        let listing = reader.listing()?;
        let Some(&(earliest, _)) = listing.first() else {
            if cursor.seq > 0 {
                return Err(ReadError::Stall(format!(
                    "the database holds node {node:?}'s records through seq {} but the local log has none: \
                     another sidecar ships as {node:?}, or this log was replaced; give this sidecar its own audit.node",
                    cursor.seq
                )));
            }
            return Ok(reader);
        };
        if cursor.seq + 1 < earliest {
            return Err(ReadError::Stall(format!(
                "records {}..{} of node {node:?} were never shipped and are no longer in the local log \
                 (the oldest local record is seq {earliest}; removed by hand or by retention before shipping \
                 was configured): restore those files beside {}, or accept the gap by setting the cursor \
                 (see README, \"Fleet audit\")",
                cursor.seq + 1,
                earliest - 1,
                active.display()
            )));
        }
        // Find the cursor's own record if the log still has it, else the one after it.
        let target = cursor.seq.max(earliest);
        let (first_seq, path) = listing
            .iter()
            .rev()
            .find(|(first, _)| *first <= target)
            .cloned()
            .expect("target is at or after the earliest file");
        reader.current = Some(Current {
            first_seq,
            reader: BufReader::new(File::open(&path)?),
            path,
            line: 0,
        });
        loop {
            let Some((line, number)) = reader.next_complete_line()? else {
                return Err(ReadError::Stall(format!(
                    "the database holds node {node:?}'s records through seq {} but the local log ends before it: \
                     another sidecar ships as {node:?}, or this log was replaced or cut short",
                    cursor.seq
                )));
            };
            let seq =
                line_seq(&line).ok_or_else(|| reader.damaged(number, "not a sealed record"))?;
            if seq < target {
                continue;
            }
            if seq > target && number == 1 && reader.current_path() == reader.files.active() {
                // The active file was rotated between listing and opening it.
                return Err(ReadError::Io(io::Error::other(
                    "the log rotated while shipping resumed",
                )));
            }
            if seq > target {
                return Err(
                    reader.damaged(number, &format!("seq {seq} where {target} was expected"))
                );
            }
            if seq == cursor.seq && cursor.seq > 0 {
                let opened = open(&line, reader.key.as_ref())
                    .map_err(|e| reader.damaged(number, &e.to_string()))?;
                if opened.hash != cursor.hash {
                    return Err(ReadError::Stall(format!(
                        "the database's record seq {} of node {node:?} is not the local one (hash {} there, {} here): \
                         two sidecars ship as {node:?}, or this log was replaced; give each sidecar its own audit.node",
                        cursor.seq,
                        hex::encode(cursor.hash),
                        hex::encode(opened.hash)
                    )));
                }
                let path = reader.current_path();
                reader
                    .walker
                    .line(&path, number, &line)
                    .map_err(|b| ReadError::Stall(b.to_string()))?;
                reader.expect_prev = None;
            } else {
                // The first record to ship: it must name the cursor's hash as its prev.
                reader.held = Some((line, number));
            }
            return Ok(reader);
        }
    }

    /// The seq of the next record to hand out.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Up to `limit` records, none past `synced`.
    pub fn read(&mut self, limit: usize, synced: u64) -> Result<Vec<Line>, ReadError> {
        let mut batch = Vec::new();
        while batch.len() < limit && self.next <= synced {
            let Some((line, number)) = self.next_line()? else {
                break;
            };
            let seq = line_seq(&line);
            if seq.is_some_and(|s| s > synced) {
                self.held = Some((line, number));
                break;
            }
            let opened = open(&line, self.key.as_ref())
                .map_err(|e| self.damaged(number, &format!("record changed: {e}")))?;
            if opened.record.seq != self.next
                && number == 1
                && self.current_path() == self.files.active()
            {
                // The active file was rotated between looking at it and opening it.
                self.current = None;
                return Err(ReadError::Io(io::Error::other(
                    "the log rotated while its next file was opened",
                )));
            }
            if opened.record.seq != self.next {
                return Err(self.damaged(
                    number,
                    &format!("seq {} where {} was expected", opened.record.seq, self.next),
                ));
            }
            if let Some(prev) = self.expect_prev.take()
                && (opened.prev != prev || (prev == GENESIS && self.next != 1))
            {
                return Err(ReadError::Stall(format!(
                    "{}:{number}: seq {} does not follow the last shipped record (its prev is not that record's hash): \
                     the log was replaced or re-chained",
                    self.current_path().display(),
                    self.next
                )));
            }
            let path = self.current_path();
            self.walker
                .line(&path, number, &line)
                .map_err(|b| ReadError::Stall(format!("local log damaged: {b}")))?;
            let text = String::from_utf8(line).map_err(|_| self.damaged(number, "not UTF-8"))?;
            batch.push(Line {
                seq: self.next,
                text,
                hash: opened.hash,
                ts: opened.record.ts,
            });
            self.next += 1;
        }
        Ok(batch)
    }

    fn damaged(&self, number: u64, problem: &str) -> ReadError {
        ReadError::Stall(format!(
            "local log damaged at {}:{number}: {problem}; run `specgate audit verify`",
            self.current_path().display()
        ))
    }

    fn current_path(&self) -> PathBuf {
        self.current
            .as_ref()
            .map_or_else(|| self.files.active().to_owned(), |c| c.path.clone())
    }

    /// The log's files with their first seqs, oldest first. The active file is read first, so
    /// a rotation in between shows it twice (under both names), never not at all.
    fn listing(&self) -> io::Result<Vec<(u64, PathBuf)>> {
        let active = files::first_line(self.files.active())?
            .and_then(|line| line_seq(&line))
            .map(|seq| (seq, self.files.active().to_owned()));
        let mut listing: Vec<(u64, PathBuf)> = self
            .files
            .rotated()?
            .into_iter()
            .filter_map(|f| Some((f.first_seq?, f.path)))
            .collect();
        if let Some((seq, path)) = active
            && listing.last().is_none_or(|(last, _)| *last < seq)
        {
            listing.push((seq, path));
        }
        Ok(listing)
    }

    /// The file whose first record is `seq`, if there is one yet.
    fn file_starting_at(&self, seq: u64) -> io::Result<Option<PathBuf>> {
        let rotated = self.files.rotated_name(seq);
        if rotated.exists() {
            return Ok(Some(rotated));
        }
        let active = self.files.active();
        let starts_here = files::first_line(active)?
            .and_then(|line| line_seq(&line))
            .is_some_and(|first| first == seq);
        if starts_here {
            return Ok(Some(active.to_owned()));
        }
        // Rotated between the two looks.
        Ok(rotated.exists().then_some(rotated))
    }

    /// The next complete line, moving to the next file when this one is finished.
    fn next_line(&mut self) -> io::Result<Option<(Vec<u8>, u64)>> {
        if let Some(held) = self.held.take() {
            return Ok(Some(held));
        }
        loop {
            if self.current.is_none() {
                let Some(path) = self.file_starting_at(self.next)? else {
                    return Ok(None);
                };
                self.current = Some(Current {
                    first_seq: self.next,
                    reader: BufReader::new(File::open(&path)?),
                    path,
                    line: 0,
                });
            }
            if let Some(line) = self.next_complete_line()? {
                return Ok(Some(line));
            }
            // At the end of this file: it is finished once the next record starts another.
            let current = self.current.as_ref().expect("opened above");
            if current.first_seq == self.next || !self.partial.is_empty() {
                return Ok(None);
            }
            match self.file_starting_at(self.next)? {
                Some(_) => {
                    // Drain whatever was written before the rotation, then move on.
                    if let Some(line) = self.next_complete_line()? {
                        return Ok(Some(line));
                    }
                    self.current = None;
                }
                None => return Ok(None),
            }
        }
    }

    /// The next complete line of the current file; a line still being written waits.
    fn next_complete_line(&mut self) -> io::Result<Option<(Vec<u8>, u64)>> {
        let Some(current) = self.current.as_mut() else {
            return Ok(None);
        };
        current.reader.read_until(b'\n', &mut self.partial)?;
        if self.partial.last() != Some(&b'\n') {
            return Ok(None);
        }
        let mut line = std::mem::take(&mut self.partial);
        line.pop();
        current.line += 1;
        Ok(Some((line, current.line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seq_is_read_from_the_line_prefix() {
        assert_eq!(line_seq(br#"{"seq":42,"ts":"x"}"#), Some(42));
        assert_eq!(line_seq(br#"{"ts":"x"}"#), None);
        assert_eq!(line_seq(br#"{"seq":"#), None);
    }
}
