//! Keeps the Raft log short: flushes applied state to SST files, then lets the driver
//! compact every group's log up to what that flush made durable.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use chronik_engine::Engine;
use crossbeam_channel::{bounded, Sender};

use crate::driver::DriverHandle;
use crate::view::Views;

pub(crate) struct LogGc {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LogGc {
    pub fn start(interval: Duration, engine: Arc<Engine>, views: Arc<Views>, driver: DriverHandle) -> LogGc {
        let (stop, stopped) = bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("raft-log-gc".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
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
