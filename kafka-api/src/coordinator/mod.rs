//! The group coordinator. A group's state lives in one partition of the internal topic
//! `__consumer_offsets` (replicated by Raft like any partition); this node coordinates
//! the groups whose partition it leads. Committed offsets and each group's record
//! (protocol type, generation) are proposals to that partition; membership lives here,
//! in memory, and is rebuilt by members rejoining after the partition's leader changes.
//!
//! Groups are loaded lazily: the first request for a group after this node became
//! leader of its partition (a new leader epoch) starts from the stored record.

pub(crate) mod classic;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chronik_replication::groups::{self, CommittedOffset, GroupCommand, GroupRecord};
use chronik_replication::{Replication, TopicMeta};
use kafka_protocol::error::ResponseError;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::errors;
use classic::ClassicGroup;

/// The internal topic that holds consumer group state.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often session and rebalance timeouts are checked.
const TICK: Duration = Duration::from_millis(100);

/// Group settings (Kafka's names in the comments).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// offsets.topic.num.partitions
    pub offsets_partitions: i32,
    /// group.initial.rebalance.delay.ms
    pub initial_rebalance_delay: Duration,
    /// group.min.session.timeout.ms / group.max.session.timeout.ms
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    /// offsets.retention.minutes: committed offsets of an empty group are kept this long.
    pub offsets_retention: Duration,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            offsets_partitions: 50,
            initial_rebalance_delay: Duration::from_secs(3),
            min_session_timeout: Duration::from_secs(6),
            max_session_timeout: Duration::from_secs(1800),
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A group held in memory, with the leader epoch of its partition when it was loaded.
struct Loaded {
    uid: u64,
    epoch: i32,
    group: ClassicGroup,
}

pub struct Coordinator {
    node_id: u64,
    pub config: GroupConfig,
    replication: Arc<Replication>,
    groups: Mutex<HashMap<String, Loaded>>,
    /// Group records to persist, in the order generations were handed out.
    records: mpsc::UnboundedSender<(u64, GroupCommand)>,
}

/// Where a group lives: the uid of its `__consumer_offsets` partition and that
/// partition's current leader epoch on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub uid: u64,
    pub epoch: i32,
}

impl Coordinator {
    /// Creates the coordinator and starts its timer and record writer on the current runtime.
    pub fn start(node_id: u64, config: GroupConfig, replication: Arc<Replication>) -> Arc<Coordinator> {
        let (records, mut record_rx) = mpsc::unbounded_channel::<(u64, GroupCommand)>();
        let coordinator = Arc::new(Coordinator {
            node_id,
            config,
            replication: replication.clone(),
            groups: Mutex::default(),
            records,
        });
        tokio::spawn(async move {
            // One task submits records so they are applied in the order they were made.
            while let Some((uid, cmd)) = record_rx.recv().await {
                match replication.submit_group(uid, cmd).await {
                    Ok(applied) => drop(tokio::spawn(applied)),
                    Err(e) => tracing::debug!(error = %e, "group record not stored"),
                }
            }
        });
        let weak = Arc::downgrade(&coordinator);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(TICK);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(coordinator) = weak.upgrade() else { return };
                coordinator.tick(Instant::now());
            }
        });
        coordinator
    }

    /// The `__consumer_offsets` partition of `group` (Kafka's: Java `String.hashCode`).
    pub fn partition_for(&self, group: &str, partitions: i32) -> i32 {
        let hash = group.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
        // Kafka's Utils.abs: i32::MIN maps to 0 rather than overflowing.
        let positive = if hash == i32::MIN { 0 } else { hash.abs() };
        positive % partitions.max(1)
    }

    pub fn offsets_topic(&self) -> Option<Arc<TopicMeta>> {
        self.replication.cluster().topics.get(OFFSETS_TOPIC).cloned()
    }

    /// The partition of `group`, if this node leads it: else NOT_COORDINATOR (or
    /// COORDINATOR_NOT_AVAILABLE before `__consumer_offsets` exists).
    pub(crate) fn owner(&self, group: &str) -> Result<Owner, ResponseError> {
        let topic = self.offsets_topic().ok_or(ResponseError::CoordinatorNotAvailable)?;
        let index = self.partition_for(group, topic.partitions.len() as i32) as usize;
        let uid = topic.partitions[index].uid;
        let view = self.replication.partition(uid).ok_or(ResponseError::NotCoordinator)?;
        match view.leader() {
            Some(leader) if leader == self.node_id => Ok(Owner { uid, epoch: view.leader_epoch() }),
            Some(_) => Err(ResponseError::NotCoordinator),
            None => Err(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// Runs `f` on the in-memory state of `group` (loading it from its stored record
    /// when this node has not held it in the current leader epoch). Persists the group
    /// record when `f` began a new generation.
    pub(crate) async fn with_group<R>(
        &self,
        group: &str,
        f: impl FnOnce(&mut ClassicGroup, Instant) -> R,
    ) -> Result<R, ResponseError> {
        let owner = self.owner(group)?;
        if !self.is_loaded(group, owner) {
            let record = self.stored_group(owner.uid, group).await?.unwrap_or_default();
            let mut groups = self.groups.lock();
            if !groups.get(group).is_some_and(|l| l.epoch == owner.epoch && l.uid == owner.uid) {
                let fresh = ClassicGroup::new(
                    record.generation,
                    record.protocol_type,
                    self.config.initial_rebalance_delay,
                    Instant::now(),
                );
                groups.insert(group.to_string(), Loaded { uid: owner.uid, epoch: owner.epoch, group: fresh });
            }
        }
        let mut groups = self.groups.lock();
        let loaded = groups.get_mut(group).ok_or(ResponseError::CoordinatorNotAvailable)?;
        let generation = loaded.group.generation;
        let result = f(&mut loaded.group, Instant::now());
        if loaded.group.generation != generation {
            self.persist_record(group, loaded);
        }
        Ok(result)
    }

    /// Runs `f` on `group` if this node holds it in memory for the current leader epoch.
    pub(crate) fn peek<R>(&self, group: &str, owner: Owner, f: impl FnOnce(&ClassicGroup) -> R) -> Option<R> {
        let groups = self.groups.lock();
        groups.get(group).filter(|l| l.uid == owner.uid && l.epoch == owner.epoch).map(|l| f(&l.group))
    }

    fn is_loaded(&self, group: &str, owner: Owner) -> bool {
        self.groups.lock().get(group).is_some_and(|l| l.epoch == owner.epoch && l.uid == owner.uid)
    }

    fn persist_record(&self, group: &str, loaded: &Loaded) {
        let record =
            GroupRecord { protocol_type: loaded.group.protocol_type.clone(), generation: loaded.group.generation };
        let _ = self.records.send((loaded.uid, GroupCommand::PutGroup { group: group.to_string(), record }));
    }

    /// Expires sessions and completes rebalances; forgets groups that are empty (their
    /// record is stored) or whose partition this node no longer leads.
    fn tick(&self, now: Instant) {
        let mut groups = self.groups.lock();
        let owners: HashMap<u64, Option<i32>> = groups
            .values()
            .map(|l| {
                let epoch = self
                    .replication
                    .partition(l.uid)
                    .filter(|v| v.leader() == Some(self.node_id))
                    .map(|v| v.leader_epoch());
                (l.uid, epoch)
            })
            .collect();
        groups.retain(|_, l| owners.get(&l.uid).copied().flatten() == Some(l.epoch));
        let mut changed = Vec::new();
        for (name, loaded) in groups.iter_mut() {
            if loaded.group.tick(now) {
                changed.push(name.clone());
            }
        }
        for name in changed {
            if let Some(loaded) = groups.get(&name) {
                self.persist_record(&name, loaded);
            }
        }
        groups.retain(|_, l| !l.group.is_idle());
    }

    /// The stored record of `group`, read on a blocking thread.
    pub(crate) async fn stored_group(&self, uid: u64, group: &str) -> Result<Option<GroupRecord>, ResponseError> {
        let engine = self.replication.engine().clone();
        let group = group.to_string();
        tokio::task::spawn_blocking(move || groups::read_group(&engine, uid, &group))
            .await
            .map_err(|_| ResponseError::UnknownServerError)?
            .map_err(|_| ResponseError::KafkaStorageError)
    }

    /// The committed offsets of `group`, read on a blocking thread.
    pub(crate) async fn committed(&self, uid: u64, group: &str) -> Result<Vec<CommittedOffset>, ResponseError> {
        let engine = self.replication.engine().clone();
        let group = group.to_string();
        tokio::task::spawn_blocking(move || groups::read_offsets(&engine, uid, &group))
            .await
            .map_err(|_| ResponseError::UnknownServerError)?
            .map_err(|_| ResponseError::KafkaStorageError)
    }

    /// Every group stored in the `__consumer_offsets` partitions this node leads, with
    /// the groups only held in memory, as (name, protocol type, state).
    pub(crate) async fn list(&self) -> Result<Vec<(String, String, &'static str)>, ResponseError> {
        let Some(topic) = self.offsets_topic() else { return Ok(Vec::new()) };
        let uids: Vec<u64> = topic
            .partitions
            .iter()
            .map(|p| p.uid)
            .filter(|uid| self.replication.partition(*uid).is_some_and(|v| v.leader() == Some(self.node_id)))
            .collect();
        let engine = self.replication.engine().clone();
        let stored = tokio::task::spawn_blocking(move || {
            uids.into_iter().map(|uid| groups::read_groups(&engine, uid)).collect::<chronik_engine::Result<Vec<_>>>()
        })
        .await
        .map_err(|_| ResponseError::UnknownServerError)?
        .map_err(|_| ResponseError::KafkaStorageError)?;
        let mut listed: HashMap<String, (String, &'static str)> = stored
            .into_iter()
            .flatten()
            .map(|(name, record)| (name, (record.protocol_type, classic::Phase::Empty.name())))
            .collect();
        for (name, loaded) in self.groups.lock().iter() {
            listed.insert(name.clone(), (loaded.group.protocol_type.clone(), loaded.group.phase.name()));
        }
        let mut out: Vec<_> = listed.into_iter().map(|(name, (ptype, state))| (name, ptype, state)).collect();
        out.sort();
        Ok(out)
    }

    /// Proposes `cmd` for the group's partition and waits until it is applied.
    pub(crate) async fn propose(&self, owner: Owner, cmd: GroupCommand) -> Result<(), ResponseError> {
        self.replication.propose_group(owner.uid, cmd).await.map_err(|e| match errors::replication(&e) {
            ResponseError::NotLeaderOrFollower | ResponseError::UnknownTopicOrPartition => {
                ResponseError::NotCoordinator
            }
            other => other,
        })
    }

    /// Forgets the in-memory state of `group` (after DeleteGroups).
    pub(crate) fn forget(&self, group: &str) {
        self.groups.lock().remove(group);
    }
}

/// Milliseconds since the Unix epoch, for commit timestamps (taken by the proposer).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
