//! The allocator, and giving memory freed after a burst back to the operating system.
//!
//! The allocator is mimalloc. Under load glibc's malloc took ~11% of a forwarded request's CPU
//! samples (arena locks, `malloc_consolidate`); with mimalloc's per-thread heaps the same
//! requests cost 8-18% less CPU in all (A/B under wrk, issue 16). It is built without its own
//! `madvise(MADV_HUGEPAGE)`: with transparent huge pages in `madvise` mode (the usual
//! default) its arenas grew the resident size in 2 MiB steps, 22 to 39 MiB at 64 connections;
//! without, 24-26 MiB, against glibc's 22-23. (With THP set to `always` the kernel uses huge
//! pages for any allocator's memory; `MIMALLOC_ALLOW_THP=0` in the environment opts out.)
//!
//! mimalloc schedules freed pages to go back to the OS (after a delay) and carries that out as
//! it goes, but a thread's own heap is collected only by that thread: after a burst (1,000
//! connections at once) an idle specgate stayed at 49 MiB resident until its workers next got
//! work (25 MiB once they collect). So each worker collects its heap when it goes idle
//! ([`on_worker_idle`], at most once a second), and [`trim`] carries out every scheduled purge
//! every 10 s: the footprint follows the load down as it follows it up.

use std::cell::Cell;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// For the runtime's `on_thread_park`: when a worker goes idle, at most once a second, it
/// collects its own heap (mimalloc frees a heap's empty pages only on the thread that owns it).
pub fn on_worker_idle() {
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    if LAST
        .get()
        .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
    {
        return;
    }
    LAST.set(Some(now));
    // SAFETY: mi_collect collects the calling thread's heap; no preconditions.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// How often free memory is handed back.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Hands free memory back every [`TRIM_EVERY`], off the runtime's worker threads, until the
/// task is dropped.
pub async fn trim_periodically() {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await; // the first tick is immediate; nothing has been freed yet
    loop {
        every.tick().await;
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

/// Carries out every purge mimalloc has scheduled (pages freed back to its arenas by any
/// thread) and collects the calling thread's own heap.
pub fn trim() {
    // SAFETY: mi_collect collects the calling thread's heap and purges mimalloc's arenas; it
    // has no preconditions and may be called from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Resident set size of this process, in bytes.
    fn resident() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/self/status");
        kib * 1024
    }

    #[test]
    fn memory_freed_between_live_blocks_goes_back() {
        const MIB: u64 = 1 << 20;
        // A burst's buffers, freed except for one in 64 that stays alive: the free space lies
        // between live blocks, where an allocator left to itself keeps it.
        let (kept, before) = std::thread::spawn(|| {
            let blocks: Vec<Vec<u8>> = (0..12_288).map(|i| vec![i as u8; 4096]).collect();
            let kept: Vec<Vec<u8>> = blocks.into_iter().step_by(64).collect();
            (kept, resident())
        })
        .join()
        .unwrap();
        trim();
        let after = resident();
        // 47 MiB were freed; half of that must be back (the rest is slack for the allocator's
        // own bookkeeping and the test harness).
        assert!(
            after + 24 * MIB < before,
            "resident {} MiB before the trim, {} MiB after",
            before / MIB,
            after / MIB
        );
        drop(kept);
    }
}
