//! raft-rs `Storage` for one group, backed by the node's shared raft-engine.
//!
//! Entries the driver appends are also kept in a small in-memory cache until they are
//! applied: the apply path reads them back without touching disk, and raft-rs reads
//! them while their write is still in flight.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use raft_engine::{Config as LogConfig, LogBatch, MessageExt, ReadableSize};

use crate::log_files::LogFiles;
use crate::RaftLogFiles;

pub(crate) const HARD_STATE_KEY: &[u8] = b"hs";
pub(crate) const CONF_STATE_KEY: &[u8] = b"cs";
/// (index, term) of the last entry removed by compaction.
pub(crate) const TRUNCATED_KEY: &[u8] = b"tr";

/// Every Raft log of this crate: raft-engine over [`LogFiles`].
pub(crate) type LogEngine = raft_engine::Engine<LogFiles>;

/// Opens (creating if needed) the node's raft-engine log in `dir`.
pub(crate) fn open_log(dir: &Path, files: RaftLogFiles) -> Result<LogEngine, raft_engine::Error> {
    let config = LogConfig {
        dir: dir.to_string_lossy().into_owned(),
        // Record batches arrive compressed by producers; compressing them again costs CPU.
        batch_compression_threshold: ReadableSize(0),
        target_file_size: ReadableSize(files.file_bytes),
        purge_threshold: ReadableSize(files.purge_bytes),
        enable_log_recycle: true,
        ..Default::default()
    };
    LogEngine::open_with_file_system(config, Arc::new(LogFiles))
}

/// Tells raft-engine how to index raft-rs entries.
#[derive(Clone)]
pub(crate) struct EntryExt;

impl MessageExt for EntryExt {
    type Entry = Entry;

    fn index(e: &Entry) -> u64 {
        e.index
    }
}

pub(crate) struct GroupStorage {
    id: u64,
    log: Arc<LogEngine>,
    hard_state: HardState,
    conf_state: ConfState,
    truncated: (u64, u64),
    last_index: u64,
    cache: VecDeque<Entry>,
    /// Group 0 only: the store its snapshots are built from.
    snapshots: Option<Arc<chronik_engine::Engine>>,
}

impl GroupStorage {
    /// Loads group `id`, or returns `None` if raft-engine has never seen it.
    pub fn load(id: u64, log: Arc<LogEngine>) -> raft::Result<Option<GroupStorage>> {
        let Some(conf_state) = log.get_message::<ConfState>(id, CONF_STATE_KEY).map_err(store_err)? else {
            return Ok(None);
        };
        let hard_state = log.get_message::<HardState>(id, HARD_STATE_KEY).map_err(store_err)?.unwrap_or_default();
        let truncated = match log.get(id, TRUNCATED_KEY) {
            Some(raw) if raw.len() == 16 => (u64_at(&raw, 0), u64_at(&raw, 8)),
            _ => (0, 0),
        };
        let last_index = log.last_index(id).unwrap_or(truncated.0).max(truncated.0);
        Ok(Some(GroupStorage {
            id,
            log,
            hard_state,
            conf_state,
            truncated,
            last_index,
            cache: VecDeque::new(),
            snapshots: None,
        }))
    }

    /// A new group with `voters` and `learners`, persisted into `batch` by the caller.
    /// Every replica bootstraps the same configuration with an empty log that starts
    /// after index `start` (term `start`): entries up to there count as compacted.
    pub fn bootstrap(
        id: u64,
        log: Arc<LogEngine>,
        voters: &[u64],
        learners: &[u64],
        start: u64,
        batch: &mut LogBatch,
    ) -> raft::Result<GroupStorage> {
        let conf_state = ConfState { voters: voters.to_vec(), learners: learners.to_vec(), ..Default::default() };
        batch.put_message(id, CONF_STATE_KEY.to_vec(), &conf_state).map_err(store_err)?;
        let hard_state = HardState { term: start, commit: start, ..Default::default() };
        batch.put_message(id, HARD_STATE_KEY.to_vec(), &hard_state).map_err(store_err)?;
        if start > 0 {
            batch.put(id, TRUNCATED_KEY.to_vec(), truncated_value(start, start)).map_err(store_err)?;
        }
        Ok(GroupStorage {
            id,
            log,
            hard_state,
            conf_state,
            truncated: (start, start),
            last_index: start,
            cache: VecDeque::new(),
            snapshots: None,
        })
    }

    /// Writes into `batch` the state of group `id` restored from a store whose applied
    /// index is `applied` (term `term`): a log compacted up to there, committed up to
    /// there, and nothing to replay. The restore path of `chronik backup` uses it.
    pub fn seed(id: u64, voters: &[u64], applied: u64, term: u64, batch: &mut LogBatch) -> raft::Result<()> {
        let conf_state = ConfState { voters: voters.to_vec(), ..Default::default() };
        batch.put_message(id, CONF_STATE_KEY.to_vec(), &conf_state).map_err(store_err)?;
        let hard_state = HardState { term, vote: 0, commit: applied, ..Default::default() };
        batch.put_message(id, HARD_STATE_KEY.to_vec(), &hard_state).map_err(store_err)?;
        if applied > 0 {
            batch.put(id, TRUNCATED_KEY.to_vec(), truncated_value(applied, term)).map_err(store_err)?;
        }
        Ok(())
    }

    /// Lets this group (group 0) send snapshots of the metadata state in `engine`.
    pub fn serve_snapshots(&mut self, engine: Arc<chronik_engine::Engine>) {
        self.snapshots = Some(engine);
    }

    /// Records the configuration applied by a configuration change.
    pub fn set_conf_state(&mut self, conf_state: ConfState, batch: &mut LogBatch) -> raft::Result<()> {
        batch.put_message(self.id, CONF_STATE_KEY.to_vec(), &conf_state).map_err(store_err)?;
        self.conf_state = conf_state;
        Ok(())
    }

    /// Makes the log start right after `index` (term `term`): every entry up to there is
    /// in the applied state, none after it is kept. Used when a snapshot was installed.
    pub fn reset_to(&mut self, index: u64, term: u64, batch: &mut LogBatch) -> raft::Result<()> {
        batch.add_command(self.id, raft_engine::Command::Compact { index: index + 1 });
        batch.put(self.id, TRUNCATED_KEY.to_vec(), truncated_value(index, term)).map_err(store_err)?;
        self.truncated = (index, term);
        self.last_index = index;
        self.cache.clear();
        self.ensure_committed(index);
        batch.put_message(self.id, HARD_STATE_KEY.to_vec(), &self.hard_state).map_err(store_err)
    }

    /// Installs a received snapshot's log position and configuration (its state was
    /// installed in the store by the caller).
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot, batch: &mut LogBatch) -> raft::Result<()> {
        let metadata = snapshot.get_metadata();
        self.set_conf_state(metadata.get_conf_state().clone(), batch)?;
        self.reset_to(metadata.index, metadata.term, batch)
    }

    /// Raises the commit index to `applied` when the applied state (flushed by RocksDB)
    /// got ahead of the last persisted hard state: those entries were committed.
    pub fn ensure_committed(&mut self, applied: u64) {
        if self.hard_state.commit < applied {
            self.hard_state.commit = applied;
        }
    }

    /// Records entries (and the hard state) that the driver put into `batch`.
    pub fn append(&mut self, entries: &[Entry], batch: &mut LogBatch) -> raft::Result<()> {
        let Some(first) = entries.first() else { return Ok(()) };
        batch.add_entries::<EntryExt>(self.id, entries).map_err(store_err)?;
        // A new leader may overwrite a suffix: drop cached entries from `first.index` on.
        while self.cache.back().is_some_and(|e| e.index >= first.index) {
            self.cache.pop_back();
        }
        if self.cache.back().is_some_and(|e| e.index + 1 != first.index) {
            self.cache.clear();
        }
        self.cache.extend(entries.iter().cloned());
        self.last_index = entries.last().map_or(self.last_index, |e| e.index);
        Ok(())
    }

    pub fn set_hard_state(&mut self, hs: &HardState, batch: &mut LogBatch) -> raft::Result<()> {
        self.hard_state = hs.clone();
        batch.put_message(self.id, HARD_STATE_KEY.to_vec(), hs).map_err(store_err)
    }

    /// Forgets cached entries up to `applied`; they are never read again on this path.
    pub fn evict_applied(&mut self, applied: u64) {
        while self.cache.front().is_some_and(|e| e.index <= applied) {
            self.cache.pop_front();
        }
    }

    /// Compacts the log up to and including `index` (which must be durable in RocksDB).
    pub fn compact(&mut self, index: u64, batch: &mut LogBatch) -> raft::Result<()> {
        if index <= self.truncated.0 || index > self.last_index {
            return Ok(());
        }
        let term = raft::Storage::term(self, index)?;
        batch.add_command(self.id, raft_engine::Command::Compact { index: index + 1 });
        batch.put(self.id, TRUNCATED_KEY.to_vec(), truncated_value(index, term)).map_err(store_err)?;
        self.truncated = (index, term);
        self.evict_applied(index);
        Ok(())
    }

    fn cached(&self, index: u64) -> Option<&Entry> {
        let first = self.cache.front()?.index;
        self.cache.get(index.checked_sub(first)? as usize)
    }
}

impl raft::Storage for GroupStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        // A lagging follower's range can be long; `max_size` usually cuts it short.
        let mut out = Vec::with_capacity(((high - low) as usize).min(1024));
        // Entries before the cache are in raft-engine; cached ones may still be on their
        // way there (the driver's write in flight).
        let cached_from = self.cache.front().map_or(high, |e| e.index.clamp(low, high));
        if low < cached_from {
            self.log
                .fetch_entries_to::<EntryExt>(self.id, low, cached_from, Some(max_size as usize), &mut out)
                .map_err(store_err)?;
            if (out.len() as u64) < cached_from - low {
                return if out.is_empty() { Err(raft::Error::Store(StorageError::Unavailable)) } else { Ok(out) };
            }
        }
        let mut size: u64 = out.iter().map(|e| u64::from(e.compute_size())).sum();
        for index in cached_from..high {
            let Some(e) = self.cached(index) else { break };
            size += u64::from(e.compute_size());
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e.clone());
        }
        if out.is_empty() && low < high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated.0 {
            return Ok(self.truncated.1);
        }
        if idx < self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(e) = self.cached(idx) {
            return Ok(e.term);
        }
        match self.log.get_entry::<EntryExt>(self.id, idx).map_err(store_err)? {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let unavailable = || raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable);
        let Some(engine) = &self.snapshots else { return Err(unavailable()) };
        // raft-rs panics on other storage errors here: a failed read is retried later.
        let snapshot = match crate::meta_snapshot::build(engine, &self.conf_state) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build a metadata snapshot; retrying later");
                return Err(unavailable());
            }
        };
        // The store lags the log within a round, and a node must be in the snapshot's
        // configuration to accept it: raft-rs asks again later.
        let conf = snapshot.get_metadata().get_conf_state();
        let member = conf.voters.contains(&to) || conf.learners.contains(&to);
        match member && snapshot.get_metadata().index >= request_index.max(self.truncated.0) {
            true => Ok(snapshot),
            false => Err(unavailable()),
        }
    }
}

fn truncated_value(index: u64, term: u64) -> Vec<u8> {
    [index.to_be_bytes(), term.to_be_bytes()].concat()
}

fn u64_at(raw: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&raw[at..at + 8]);
    u64::from_be_bytes(b)
}

fn store_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

#[cfg(test)]
mod tests {
    use raft::{GetEntriesContext, Storage as _};

    use super::*;

    fn entries(range: std::ops::Range<u64>) -> Vec<Entry> {
        range.map(|index| Entry { index, term: 1, data: vec![index as u8; 100].into(), ..Default::default() }).collect()
    }

    /// The driver appends a round's entries while the previous round's write is still in
    /// flight, and raft-rs may ask for a range that starts in raft-engine and ends there.
    #[test]
    fn a_range_reads_written_entries_from_the_log_and_unwritten_ones_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(open_log(dir.path(), RaftLogFiles::default()).unwrap());
        let mut batch = LogBatch::default();
        let mut storage = GroupStorage::bootstrap(7, log.clone(), &[1], &[], 0, &mut batch).unwrap();
        storage.append(&entries(1..11), &mut batch).unwrap();
        log.write(&mut batch, true).unwrap();
        storage.evict_applied(5);

        let mut in_flight = LogBatch::default();
        storage.append(&entries(11..16), &mut in_flight).unwrap();

        let read = storage.entries(3, 16, None, GetEntriesContext::empty(false)).unwrap();
        assert_eq!(read.iter().map(|e| e.index).collect::<Vec<_>>(), (3..16).collect::<Vec<_>>());
        assert!(read.iter().all(|e| e.data[..] == [e.index as u8; 100]));
        let term = storage.term(13).unwrap();
        assert_eq!(term, 1);

        // A size limit still returns at least one entry and stops at the limit.
        let one = storage.entries(3, 16, 1, GetEntriesContext::empty(false)).unwrap();
        assert_eq!(one.len(), 1);
        let limited = storage.entries(8, 16, 3 * 110, GetEntriesContext::empty(false)).unwrap();
        assert!((1..8).contains(&limited.len()), "{} entries", limited.len());
        assert_eq!(limited[0].index, 8);
    }
}
