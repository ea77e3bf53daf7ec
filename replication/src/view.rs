//! What tokio tasks may read without asking the driver: the cluster metadata and, per
//! hosted partition, its offsets and leadership. Only the driver updates them, after
//! the RocksDB write that made the new state readable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use chronik_engine::Engine;
use parking_lot::RwLock;
use tokio::sync::Notify;

use crate::metadata::ClusterMeta;
use crate::ReplicationError;

#[derive(Default)]
pub(crate) struct Views {
    cluster: RwLock<Arc<ClusterMeta>>,
    partitions: RwLock<HashMap<u64, Arc<PartitionView>>>,
    /// Applied index of every group, including 0 (read by the log compactor).
    applied: RwLock<HashMap<u64, Arc<AtomicU64>>>,
    /// The node serving as group-0 leader, 0 when unknown.
    meta_leader: AtomicU64,
    /// Group 0's voters and learners as applied here.
    meta_members: RwLock<(Vec<u64>, Vec<u64>)>,
    /// Metadata snapshots this node installed (it joined after log compaction).
    pub snapshots_installed: AtomicU64,
    /// Bytes the driver has written to the raft-engine log (read by the log compactor).
    pub raft_log_written: AtomicU64,
}

impl Views {
    pub fn cluster(&self) -> Arc<ClusterMeta> {
        self.cluster.read().clone()
    }

    pub fn set_cluster(&self, meta: Arc<ClusterMeta>) {
        *self.cluster.write() = meta;
    }

    pub fn meta_leader(&self) -> Option<u64> {
        Some(self.meta_leader.load(Ordering::Acquire)).filter(|l| *l != 0)
    }

    pub fn set_meta_leader(&self, leader: u64) {
        self.meta_leader.store(leader, Ordering::Release);
    }

    pub fn meta_members(&self) -> (Vec<u64>, Vec<u64>) {
        self.meta_members.read().clone()
    }

    pub fn set_meta_members(&self, voters: Vec<u64>, learners: Vec<u64>) {
        *self.meta_members.write() = (voters, learners);
    }

    pub fn partition(&self, uid: u64) -> Option<Arc<PartitionView>> {
        self.partitions.read().get(&uid).cloned()
    }

    pub fn partitions(&self) -> Vec<Arc<PartitionView>> {
        self.partitions.read().values().cloned().collect()
    }

    pub fn insert_partition(&self, view: Arc<PartitionView>) {
        self.partitions.write().insert(view.uid, view);
    }

    pub fn remove_group(&self, uid: u64) {
        if let Some(view) = self.partitions.write().remove(&uid) {
            view.leader.store(0, Ordering::Release);
            view.notify.notify_waiters();
        }
        self.applied.write().remove(&uid);
    }

    pub fn applied_cell(&self, group: u64) -> Arc<AtomicU64> {
        self.applied.write().entry(group).or_default().clone()
    }

    pub fn applied_indexes(&self) -> Vec<(u64, u64)> {
        self.applied.read().iter().map(|(g, a)| (*g, a.load(Ordering::Acquire))).collect()
    }
}

/// The result of a read: the batches were appended to the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub batches: usize,
}

/// Live state of one hosted partition.
pub struct PartitionView {
    pub uid: u64,
    /// Replica node ids; the first is the preferred leader.
    pub replicas: Vec<u64>,
    /// In-sync replicas as last computed by this node while leading.
    isr: parking_lot::Mutex<Vec<u64>>,
    high_watermark: AtomicI64,
    log_start_offset: AtomicI64,
    leader_epoch: AtomicI64,
    /// Node id of the current leader, 0 when unknown.
    leader: AtomicU64,
    notify: Notify,
}

impl PartitionView {
    pub(crate) fn new(uid: u64, replicas: Vec<u64>) -> PartitionView {
        PartitionView {
            uid,
            isr: parking_lot::Mutex::new(replicas.clone()),
            replicas,
            high_watermark: AtomicI64::new(0),
            log_start_offset: AtomicI64::new(0),
            leader_epoch: AtomicI64::new(0),
            leader: AtomicU64::new(0),
            notify: Notify::new(),
        }
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    /// The Raft term of the current leader (Kafka's leader epoch).
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire) as i32
    }

    /// The replicas caught up within `replica.lag.time.max.ms`, as known by the leader
    /// (on other replicas: the last value this node computed, or all replicas).
    pub fn isr(&self) -> Vec<u64> {
        self.isr.lock().clone()
    }

    pub(crate) fn set_isr(&self, isr: Vec<u64>) {
        let mut current = self.isr.lock();
        if *current != isr {
            *current = isr;
        }
    }

    pub fn leader(&self) -> Option<u64> {
        Some(self.leader.load(Ordering::Acquire)).filter(|l| *l != 0)
    }

    /// Resolves at the next change of offsets or leadership. Create the future before
    /// checking the state it waits for, so no change is missed in between.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    pub(crate) fn publish(&self, high_watermark: i64, log_start_offset: i64, leader_epoch: u64, leader: u64) {
        self.high_watermark.store(high_watermark, Ordering::Release);
        self.log_start_offset.store(log_start_offset, Ordering::Release);
        self.leader_epoch.store(leader_epoch as i64, Ordering::Release);
        self.leader.store(leader, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub(crate) fn read(
        &self,
        engine: &Engine,
        from: i64,
        max_bytes: usize,
        min_one: bool,
        out: &mut Vec<u8>,
    ) -> Result<ReadOutcome, ReplicationError> {
        let (high_watermark, log_start_offset) = (self.high_watermark(), self.log_start_offset());
        if from < log_start_offset || from > high_watermark {
            return Err(ReplicationError::OffsetOutOfRange {
                offset: from,
                log_start: log_start_offset,
                high_watermark,
            });
        }
        let batches = if from == high_watermark {
            0
        } else {
            engine.read_batches(self.uid, from, high_watermark, max_bytes, min_one, out)?
        };
        Ok(ReadOutcome { high_watermark, log_start_offset, batches })
    }
}
