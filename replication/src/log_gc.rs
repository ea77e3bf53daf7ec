//! Keeps the Raft log short: flushes applied state to SST files, then lets the driver
//! compact every group's log up to what that flush made durable. It runs every
//! interval, and sooner when the log has grown by a set number of bytes: under load
//! that keeps raft-engine writing over its recycled files instead of new ones.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chronik_engine::Engine;
use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use crate::driver::DriverHandle;
use crate::view::Views;

/// How often the log's size is looked at.
const POLL: Duration = Duration::from_millis(100);

pub(crate) struct LogGc {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LogGc {
    pub fn start(
        interval: Duration,
        growth: u64,
        engine: Arc<Engine>,
        views: Arc<Views>,
        driver: DriverHandle,
    ) -> LogGc {
        let (stop, stopped) = bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("raft-log-gc".into())
            .spawn(move || {
                let written = || views.raft_log_written.load(Ordering::Relaxed);
                let (mut last_run, mut written_then) = (Instant::now(), written());
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(POLL.min(interval)) {
                    // Growth, not size: a log that cannot be compacted (a replica is
                    // behind) must not make every poll flush RocksDB.
                    if written() - written_then < growth && last_run.elapsed() < interval {
                        continue;
                    }
                    (last_run, written_then) = (Instant::now(), written());
                    // Applied indexes read before the flush are durable after it.
                    let applied = views.applied_indexes();
                    if let Err(e) = engine.flush() {
                        tracing::warn!(error = %e, "flush before log compaction failed");
                        continue;
                    }
                    if driver.compact(applied).is_err() {
                        break;
                    }
                }
            })
            .ok();
        LogGc { stop: Some(stop), thread }
    }
}

impl Drop for LogGc {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
