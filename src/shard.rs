//! Serving threads: one single-threaded tokio runtime per core ("shard"), each on a thread of
//! its own. An accepted connection is moved onto one shard and lives there until it closes,
//! with every task its requests spawn and the upstream connections they use (one upstream
//! client per shard, [`current`] says which). A request's own work then stays on one thread;
//! the audit writer and the drift check keep threads of their own.
//!
//! Why: on a work-stealing runtime each hand-off between a request's tasks (the connection,
//! hyper's upstream dispatch and h2 tasks, the forwarded create) may wake the other, parked
//! worker, which mostly finds nothing to steal. At the load a sidecar usually sees that was a
//! third of the CPU an unaudited create cost (`bench/run --rate 1000`: 1.82 CPU-s per 10k on
//! two workers, 1.18 on one), and under saturation it held GETs to 0.63x of a minimal hyper
//! proxy (0.84x with serving threads).

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the shard this thread serves, `None` on any other thread.
pub fn current() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// The serving runtimes.
#[derive(Debug)]
pub struct Shards {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl Shards {
    /// Starts `count` (at least one) serving threads, each calling `on_park` whenever its
    /// runtime goes idle. They run until the process ends.
    pub fn start(count: usize, on_park: fn()) -> std::io::Result<Shards> {
        let mut handles = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            std::thread::Builder::new()
                .name(format!("specgate-shard-{index}"))
                .spawn(move || {
                    INDEX.with(|i| i.set(Some(index)));
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .on_thread_park(on_park)
                        .build();
                    match runtime {
                        Ok(runtime) => {
                            // Only a panic ends a serving thread from here on; its share of
                            // connections would then be dropped unanswered, so the process
                            // goes down for its supervisor.
                            let _abort = AbortOnExit(index);
                            let _ = tx.send(Ok(runtime.handle().clone()));
                            runtime.block_on(std::future::pending::<()>());
                        }
                        Err(error) => {
                            let _ = tx.send(Err(error));
                        }
                    }
                })?;
            handles.push(rx.recv().map_err(std::io::Error::other)??);
        }
        Ok(Shards {
            handles,
            next: AtomicUsize::new(0),
        })
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always false: there is at least one.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Runs `task` on the next shard in turn.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[index].spawn(task);
    }
}

/// Aborts the process when a serving thread unwinds.
struct AbortOnExit(usize);

impl Drop for AbortOnExit {
    fn drop(&mut self) {
        tracing::error!(shard = self.0, "a serving thread stopped; exiting");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_go_round_the_shards_and_each_knows_its_own() {
        let shards = Shards::start(2, || {}).unwrap();
        assert_eq!(shards.len(), 2);
        assert_eq!(current(), None, "not on a shard");
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            shards.spawn(async move {
                let name = std::thread::current().name().map(str::to_owned);
                let _ = tx.send((current(), name));
            });
            seen.push(rx.await.unwrap());
        }
        let indexes: Vec<_> = seen.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, [Some(0), Some(1), Some(0), Some(1)]);
        assert_eq!(seen[1].1.as_deref(), Some("specgate-shard-1"));
    }
}
