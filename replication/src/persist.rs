//! The `raft-persist` thread: writes the driver's raft-engine batches in order, one at
//! a time, so the driver applies and answers one round while the next is made durable.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};
use raft_engine::LogBatch;

use crate::metrics;
use crate::storage::LogEngine;

/// A finished write: the batch comes back (emptied) so its buffer is reused.
pub(crate) struct Persisted {
    pub batch: LogBatch,
    pub synced: bool,
    /// Bytes written, or why the write failed.
    pub result: Result<usize, raft_engine::Error>,
}

pub(crate) struct Persister {
    submit: Option<Sender<(LogBatch, bool)>>,
    /// Where finished writes arrive, in submission order.
    pub done: Receiver<Persisted>,
    thread: Option<JoinHandle<()>>,
}

impl Persister {
    pub fn start(log: Arc<LogEngine>) -> std::io::Result<Persister> {
        // The driver keeps at most one write in flight: one slot each way never blocks it.
        let (submit, writes) = bounded::<(LogBatch, bool)>(1);
        let (finished, done) = bounded(1);
        let thread = std::thread::Builder::new().name("raft-persist".into()).spawn(move || {
            for (mut batch, sync) in writes {
                let timer = sync.then(|| metrics::PERSIST_SECONDS.start_timer());
                let result = log.write(&mut batch, sync);
                drop(timer);
                if finished.send(Persisted { batch, synced: sync, result }).is_err() {
                    return;
                }
            }
        })?;
        Ok(Persister { submit: Some(submit), done, thread: Some(thread) })
    }

    /// Starts writing `batch`, with an fsync when `sync`; the result arrives on `done`.
    pub fn submit(&self, batch: LogBatch, sync: bool) {
        if let Some(submit) = &self.submit {
            // Fails only once the thread is gone, which `stop` alone causes.
            let _ = submit.send((batch, sync));
        }
    }

    /// Lets the write in flight finish, then stops the thread.
    pub fn stop(&mut self) {
        self.submit = None;
        while self.done.recv().is_ok() {}
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
