//! The Raft log of a stopped node, or a copy of a running one's: seeding a log for a
//! restored store, and reading a group's log for `chronik dump`.
//!
//! A backup holds only RocksDB (flushed, so every applied write is in it). The Raft log
//! of a restored node is rebuilt from it: each group's log starts compacted at its
//! applied index, so nothing is replayed and new entries continue from there.

use std::path::Path;
use std::sync::Arc;

use chronik_engine::{Durability, Engine};
use raft::eraftpb::{ConfState, Entry, EntryType, HardState};
use raft_engine::LogBatch;

use crate::metadata::{ClusterMeta, CONF_STATE_KEY as META_CONF_STATE_KEY};
use crate::storage::{open_log, EntryExt, GroupStorage, LogEngine, CONF_STATE_KEY, HARD_STATE_KEY, TRUNCATED_KEY};
use crate::{RaftLogFiles, ReplicationError};

/// The metadata group's id.
pub const META_GROUP: u64 = 0;

/// A group whose log was seeded: its log starts after `applied_index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeededGroup {
    pub group: u64,
    pub applied_index: u64,
    pub applied_term: u64,
}

/// Creates the raft-engine log in `raft_dir` (which must not hold one) for every group
/// of `engine` that node `node_id` hosts: the metadata group and each partition it is
/// a replica of, each starting at the applied index recorded in the store.
pub fn seed_raft_log(raft_dir: &Path, engine: &Engine, node_id: u64) -> Result<Vec<SeededGroup>, ReplicationError> {
    let has_files = std::fs::read_dir(raft_dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if has_files {
        return Err(ReplicationError::Internal(format!("{} already holds a Raft log", raft_dir.display())));
    }
    let meta = ClusterMeta::load(engine)?;
    let mut groups = vec![(META_GROUP, vec![node_id])];
    for topic in meta.topics.values() {
        for p in topic.partitions.iter().filter(|p| p.replicas.contains(&node_id)) {
            groups.push((p.uid, p.replicas.clone()));
        }
    }
    let log = open_log(raft_dir, RaftLogFiles::default())?;
    let mut batch = LogBatch::default();
    let mut seeded = Vec::with_capacity(groups.len());
    for (group, voters) in groups {
        let state = engine.partition_state(group)?.unwrap_or_default();
        GroupStorage::seed(group, &voters, state.applied_index, state.applied_term, &mut batch)?;
        seeded.push(SeededGroup { group, applied_index: state.applied_index, applied_term: state.applied_term });
    }
    log.write(&mut batch, true)?;
    // Group 0 starts from the configuration just seeded, not the one the backed-up
    // cluster had (the driver prefers this row to the log's).
    let conf = ConfState { voters: vec![node_id], ..Default::default() };
    let mut wb = engine.batch();
    wb.put_cluster(
        META_CONF_STATE_KEY,
        &protobuf::Message::write_to_bytes(&conf).map_err(|e| ReplicationError::Internal(e.to_string()))?,
    );
    engine.write(wb, Durability::Synced)?;
    Ok(seeded)
}

/// One group's Raft log as stored.
#[derive(Debug, Clone)]
pub struct GroupLog {
    pub hard_state: Option<HardState>,
    pub conf_state: Option<ConfState>,
    /// (index, term) of the last compacted entry.
    pub truncated: (u64, u64),
    pub entries: Vec<LogEntry>,
}

#[derive(Debug, Clone)]
pub struct LogEntry {
    pub index: u64,
    pub term: u64,
    /// True for configuration changes (not decoded further).
    pub conf_change: bool,
    pub context: bytes::Bytes,
    pub data: bytes::Bytes,
}

/// The groups in the raft-engine log at `raft_dir`, and one group's log when asked.
/// raft-engine locks its directory, so this opens a copy made in `scratch`: the node's
/// files are never locked or changed, even while it runs.
pub struct LogReader {
    log: Arc<LogEngine>,
}

impl LogReader {
    pub fn open_copy(raft_dir: &Path, scratch: &Path) -> Result<LogReader, ReplicationError> {
        if !raft_dir.is_dir() {
            return Err(ReplicationError::Internal(format!("no Raft log directory at {}", raft_dir.display())));
        }
        copy_dir(raft_dir, scratch)
            .map_err(|e| ReplicationError::Internal(format!("cannot copy {}: {e}", raft_dir.display())))?;
        Ok(LogReader { log: Arc::new(open_log(scratch, RaftLogFiles::default())?) })
    }

    pub fn groups(&self) -> Vec<u64> {
        let mut groups = self.log.raft_groups();
        groups.sort_unstable();
        groups
    }

    /// The last entry index of group `id`'s log, if it holds entries.
    pub fn last_index(&self, id: u64) -> Option<u64> {
        self.log.last_index(id)
    }

    /// Group `id`'s log, at most `limit` entries from its first.
    pub fn group(&self, id: u64, limit: usize) -> Result<GroupLog, ReplicationError> {
        let storage_err = |e: raft_engine::Error| ReplicationError::Storage(e.to_string());
        let hard_state = self.log.get_message::<HardState>(id, HARD_STATE_KEY).map_err(storage_err)?;
        let conf_state = self.log.get_message::<ConfState>(id, CONF_STATE_KEY).map_err(storage_err)?;
        let truncated = match self.log.get(id, TRUNCATED_KEY) {
            Some(raw) if raw.len() == 16 => (u64_at(&raw, 0), u64_at(&raw, 8)),
            _ => (0, 0),
        };
        let mut raw = Vec::new();
        if let (Some(first), Some(last)) = (self.log.first_index(id), self.log.last_index(id)) {
            let end = last.saturating_add(1).min(first.saturating_add(limit as u64));
            self.log.fetch_entries_to::<EntryExt>(id, first, end, None, &mut raw).map_err(storage_err)?;
        }
        let entries = raw.into_iter().map(to_log_entry).collect();
        Ok(GroupLog { hard_state, conf_state, truncated, entries })
    }
}

fn to_log_entry(e: Entry) -> LogEntry {
    let conf_change = e.get_entry_type() != EntryType::EntryNormal;
    LogEntry { index: e.index, term: e.term, conf_change, context: e.context, data: e.data }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        // The lock file belongs to the running node.
        if entry.file_type()?.is_file() && name != "LOCK" {
            std::fs::copy(entry.path(), to.join(name))?;
        }
    }
    Ok(())
}

fn u64_at(raw: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&raw[at..at + 8]);
    u64::from_be_bytes(b)
}
