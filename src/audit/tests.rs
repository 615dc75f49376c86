//! The writer and the verifier against real files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::verify::verify;
use super::*;

fn options(dir: &Path) -> AuditOptions {
    AuditOptions::new(dir.join("audit").join("a.jsonl"))
}

fn created(n: usize) -> Entry {
    let mut entry = Entry::new(Outcome::Created);
    entry.request_id = Some(format!("req-{n}"));
    entry.operation_id = Some("create-connection".into());
    entry.upstream_status = Some(201);
    entry.resource = Some(ResourceFields::new(
        &serde_json::json!({"connection": {"externalid": format!("x{n}")}}),
        Some("connection"),
    ));
    entry
}

async fn write_n(options: &AuditOptions, n: usize) -> Auditor {
    let auditor = Auditor::open(options.clone()).unwrap();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let auditor = auditor.clone();
            tokio::spawn(async move { auditor.append(created(i)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // The head file follows the syncs asynchronously; a flush makes it exact.
    auditor.flush().await.unwrap();
    auditor
}

/// `rounds` waves of `per_round` concurrent appends: many batches, each of several records.
async fn write_rounds(options: &AuditOptions, rounds: usize, per_round: usize) -> Auditor {
    let auditor = Auditor::open(options.clone()).unwrap();
    for round in 0..rounds {
        let tasks: Vec<_> = (0..per_round)
            .map(|i| {
                let auditor = auditor.clone();
                tokio::spawn(async move { auditor.append(created(round * per_round + i)).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    }
    auditor.flush().await.unwrap();
    auditor
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_syncs_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    let auditor = write_n(&options, 64).await;
    let health = auditor.health();
    assert_eq!(health.records(), 64);
    assert!(
        health.syncs() < 64,
        "64 concurrent appends took {} syncs: no batching",
        health.syncs()
    );
    assert_eq!(lines(&options.path).len(), 64);
    let intact = verify(&options.path, None).unwrap();
    assert_eq!(intact.records, 64);
    assert_eq!(intact.seqs, Some((1, 64)));
}

#[tokio::test]
async fn the_head_follows_the_syncs_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    let auditor = Auditor::open(options.clone()).unwrap();
    let head = LogFiles::new(&options.path).head();
    for n in 0..3 {
        let first = auditor.append(created(2 * n)).await.unwrap();
        // The sync thread updates the head after answering a batch and before it takes the
        // next one: once a later record is synced, the head names at least the earlier one.
        let second = auditor.append(created(2 * n + 1)).await.unwrap();
        let named = read_head(&head, None).unwrap().expect("a head").seq;
        assert!(
            (first..=second).contains(&named),
            "head names seq {named} after records {first} and {second} were synced"
        );
    }
}

#[tokio::test]
async fn with_sync_always_an_attempt_waits_for_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let auditor = Auditor::open(options(dir.path())).unwrap();
    for n in 0..3 {
        auditor.write(created(n)).await.unwrap();
    }
    assert_eq!(
        auditor.health().syncs(),
        0,
        "a written-only record was synced alone"
    );
    let seq = auditor.append(created(3)).await.unwrap();
    assert_eq!(seq, 4);
    // One sync made all four durable.
    assert_eq!(auditor.health().syncs(), 1);
    assert_eq!(auditor.health().records(), 4);
}

#[tokio::test]
async fn a_reopened_log_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    drop(write_n(&options, 3).await);
    let auditor = write_n(&options, 2).await;
    auditor.flush().await.unwrap();
    let intact = verify(&options.path, None).unwrap();
    assert_eq!(intact.seqs, Some((1, 5)));
    assert!(intact.notes.is_empty(), "{:?}", intact.notes);
}

#[tokio::test]
async fn a_torn_last_line_is_cut_and_noted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    drop(write_n(&options, 2).await);
    let mut content = std::fs::read(&options.path).unwrap();
    content.extend_from_slice(br#"{"seq":3,"ts":"2026-"#);
    std::fs::write(&options.path, &content).unwrap();
    let broken = verify(&options.path, None).unwrap_err();
    assert_eq!(broken.line, 3);
    assert!(broken.problem.contains("incomplete"), "{broken}");

    let auditor = Auditor::open(options.clone()).unwrap();
    auditor.flush().await.unwrap();
    let all = lines(&options.path);
    assert_eq!(all.len(), 3);
    let recovered = open(all[2].as_bytes(), None).unwrap().record;
    assert_eq!(recovered.outcome, Outcome::Recovered);
    assert_eq!(recovered.seq, 3);
    assert!(
        recovered
            .detail
            .unwrap()
            .contains("torn last line (20 bytes")
    );
    verify(&options.path, None).unwrap();
}

#[tokio::test]
async fn records_cut_from_the_end_are_caught_by_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    drop(write_n(&options, 5).await);
    let all = lines(&options.path);
    write_lines(&options.path, &all[..3]);
    let broken = verify(&options.path, None).unwrap_err();
    assert_eq!(broken.file, LogFiles::new(&options.path).head());
    assert!(
        broken
            .problem
            .contains("records 4..5 were cut from the end"),
        "{broken}"
    );
    let refused = Auditor::open(options.clone()).unwrap_err();
    assert!(
        refused.to_string().contains("cut from the end"),
        "{refused}"
    );
}

#[tokio::test]
async fn verify_names_the_line_of_an_edit_a_deletion_or_a_swap() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    drop(write_n(&options, 5).await);
    let original = lines(&options.path);

    let mut edited = original.clone();
    edited[2] = edited[2].replace("\"upstream_status\":201", "\"upstream_status\":200");
    write_lines(&options.path, &edited);
    let broken = verify(&options.path, None).unwrap_err();
    assert_eq!(
        (broken.line, broken.problem.starts_with("record changed")),
        (3, true),
        "{broken}"
    );

    let mut deleted = original.clone();
    deleted.remove(1);
    write_lines(&options.path, &deleted);
    let broken = verify(&options.path, None).unwrap_err();
    assert_eq!(broken.line, 2);
    assert!(
        broken.problem.contains("records 2..2 are missing"),
        "{broken}"
    );

    let mut swapped = original.clone();
    swapped.swap(1, 2);
    write_lines(&options.path, &swapped);
    let broken = verify(&options.path, None).unwrap_err();
    assert_eq!(broken.line, 2);
    assert!(
        broken.problem.contains("missing") || broken.problem.contains("reordered"),
        "{broken}"
    );

    write_lines(&options.path, &original);
    verify(&options.path, None).unwrap();
}

#[tokio::test]
async fn a_rechained_edit_passes_the_hash_but_not_the_mac() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    options.key = Some(MacKey::new(b"0123456789abcdef".to_vec()));
    drop(write_n(&options, 2).await);
    // Without the key, an attacker can rewrite the records and re-chain them.
    let all = lines(&options.path);
    let mut forged = Vec::new();
    let mut prev = GENESIS;
    let mut rewritten = Vec::new();
    for line in &all {
        let record = open(line.as_bytes(), None).unwrap().record;
        let mut entry = created(0);
        entry.resource_id = Some("forged".into());
        rewritten.clear();
        prev = seal(&entry, record.seq, &prev, None, &mut rewritten);
        forged.push(String::from_utf8(rewritten.trim_ascii_end().to_vec()).unwrap());
    }
    write_lines(&options.path, &forged);
    assert!(
        verify(&options.path, None).is_err(),
        "the head file still holds the old last hash"
    );
    let broken = verify(&options.path, options.key.as_ref()).unwrap_err();
    assert_eq!(broken.line, 1);
    assert!(broken.problem.contains("no MAC"), "{broken}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_splits_no_record_and_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    options.max_file_bytes = 4096;
    let auditor = write_rounds(&options, 30, 10).await;
    auditor.flush().await.unwrap();
    let files = LogFiles::new(&options.path).all().unwrap();
    assert!(
        files.len() > 5,
        "expected several rotations, got {} files",
        files.len()
    );
    let mut seqs = Vec::new();
    for file in &files {
        for line in lines(&file.path) {
            seqs.push(
                open(line.as_bytes(), None)
                    .expect("every line is a whole record")
                    .record
                    .seq,
            );
        }
        if let Some(first) = file.first_seq {
            assert_eq!(
                Some(&first),
                seqs.iter().rev().nth(lines(&file.path).len() - 1)
            );
        }
    }
    assert_eq!(seqs, (1..=300).collect::<Vec<_>>());
    let intact = verify(&options.path, None).unwrap();
    assert_eq!(intact.records, 300);
    assert_eq!(intact.files, files.len());
}

#[tokio::test]
async fn retention_keeps_the_newest_files_and_verify_says_where_the_chain_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    options.max_file_bytes = 2048;
    options.keep_files = 2;
    let auditor = write_rounds(&options, 10, 4).await;
    auditor.flush().await.unwrap();
    assert_eq!(LogFiles::new(&options.path).rotated().unwrap().len(), 2);
    let broken = verify(&options.path, None).unwrap_err();
    assert!(
        broken.problem.contains("missing from the start"),
        "{broken}"
    );
    let intact = super::verify::verify_with(&options.path, None, true).unwrap();
    assert!(
        intact.notes[0].contains("removed by retention"),
        "{:?}",
        intact.notes
    );
    assert_eq!(intact.seqs.unwrap().1, 40);
}

#[tokio::test]
async fn retention_keeps_files_that_are_not_yet_shipped() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    options.max_file_bytes = 2048;
    options.keep_files = 1;
    let shipped = Arc::new(AtomicU64::new(0));
    options.shipped = Some(shipped.clone());
    let auditor = write_rounds(&options, 10, 4).await;
    auditor.flush().await.unwrap();
    let files = LogFiles::new(&options.path);
    let rotated = files.rotated().unwrap();
    assert!(
        rotated.len() > 2,
        "nothing shipped, nothing removed: {rotated:?}"
    );
    assert_eq!(rotated[0].first_seq, Some(1));

    // Shipped through the end of the second file: the next rotation may remove the first two,
    // but not the third, whose records are not all shipped.
    let third = rotated[2].first_seq.unwrap();
    shipped.store(third, Ordering::Release);
    drop(auditor);
    let auditor = write_rounds(&options, 10, 4).await;
    auditor.flush().await.unwrap();
    let kept = files.rotated().unwrap();
    assert_eq!(
        kept[0].first_seq,
        Some(third),
        "removed exactly the shipped files: {kept:?}"
    );
    assert!(kept.len() > 1, "past keep_files while unshipped: {kept:?}");
    let intact = super::verify::verify_with(&options.path, None, true).unwrap();
    assert_eq!(intact.seqs, Some((third, 80)));
}

#[tokio::test]
async fn interval_mode_acknowledges_on_write_and_syncs_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    options.sync = SyncMode::Interval(std::time::Duration::from_millis(20));
    let auditor = write_n(&options, 10).await;
    assert_eq!(lines(&options.path).len(), 10, "written when acknowledged");
    auditor.flush().await.unwrap();
    assert!(auditor.health().syncs() >= 1);
    verify(&options.path, None).unwrap();
}

/// Reports each sync's record count on a channel.
struct SyncReports(std::sync::Mutex<std::sync::mpsc::Sender<usize>>);

impl Observer for SyncReports {
    fn synced(&self, records: usize, _took: std::time::Duration) {
        let _ = self.0.lock().unwrap().send(records);
    }
}

fn observed(options: AuditOptions) -> (Auditor, std::sync::mpsc::Receiver<usize>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let auditor =
        Auditor::open_observed(options, Arc::new(SyncReports(std::sync::Mutex::new(tx)))).unwrap();
    (auditor, rx)
}

#[tokio::test]
async fn an_attempt_with_no_outcome_is_synced_by_the_tick() {
    let dir = tempfile::tempdir().unwrap();
    let (auditor, syncs) = observed(options(dir.path()));
    auditor.write(created(0)).await.unwrap();
    // No append follows: the writer's tick (WRITTEN_SYNC_EVERY) hands the record over.
    let records = tokio::task::spawn_blocking(move || syncs.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(records, Ok(1));
    assert_eq!(auditor.health().records(), 1);
}

#[tokio::test]
async fn a_file_is_synced_before_it_is_rotated_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    // No tick within the test: only the rotation can ask for this sync.
    options.sync = SyncMode::Interval(Duration::from_secs(3600));
    options.max_file_bytes = 1;
    let (auditor, syncs) = observed(options.clone());
    auditor.write(created(0)).await.unwrap();
    let synced = tokio::task::spawn_blocking(move || syncs.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(synced.is_ok(), "no sync before the rotation: {synced:?}");
    auditor.flush().await.unwrap();
    assert_eq!(LogFiles::new(&options.path).rotated().unwrap().len(), 1);
}

#[test]
fn an_empty_log_verifies_and_a_log_without_its_head_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("none.jsonl");
    assert_eq!(verify(&path, None).unwrap().records, 0);
    let mut line = Vec::new();
    seal(&created(1), 1, &GENESIS, None, &mut line);
    std::fs::write(&path, &line).unwrap();
    let broken = verify(&path, None).unwrap_err();
    assert!(broken.problem.contains("no head file"), "{broken}");
}
