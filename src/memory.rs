//! Gives memory freed after a burst back to the operating system.
//!
//! glibc's malloc keeps what the program frees in its arenas for reuse and returns only the
//! free space at the very top of a heap. After a burst (1,000 connections at once) specgate
//! stayed at ~70 MiB resident while serving 64 connections, three times what 64 need: the
//! freed buffers sat between live ones. [`trim`] hands every whole free page back, so the
//! footprint follows the load down as it follows it up.

use std::time::Duration;

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

/// Returns every whole free page of the heap to the operating system. `true` if any was.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() -> bool {
    // SAFETY: malloc_trim only walks and madvises glibc's own free lists; it takes the arena
    // locks like malloc does and has no preconditions.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators return memory on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
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
        // between live blocks, where malloc alone never returns it.
        let (kept, before) = std::thread::spawn(|| {
            let blocks: Vec<Vec<u8>> = (0..12_288).map(|i| vec![i as u8; 4096]).collect();
            let kept: Vec<Vec<u8>> = blocks.into_iter().step_by(64).collect();
            (kept, resident())
        })
        .join()
        .unwrap();
        assert!(trim(), "nothing was returned");
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
