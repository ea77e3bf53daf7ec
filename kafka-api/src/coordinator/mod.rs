//! The group coordinator. A group's state lives in one partition of the internal topic
//! `__consumer_offsets` (replicated by Raft like any partition); this node coordinates
//! the groups whose partition it leads. Committed offsets and each group's record
//! (protocol type, generation) are proposals to that partition; membership lives here,
//! in memory, and is rebuilt by members rejoining after the partition's leader changes.
//!
//! Groups are loaded lazily: the first request for a group after this node became
//! leader of its partition (a new leader epoch) starts from the stored record.

pub(crate) mod classic;
pub(crate) mod consumer;

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
use consumer::ConsumerGroup;

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
    /// group.consumer.session.timeout.ms (KIP-848 members)
    pub consumer_session_timeout: Duration,
    /// group.consumer.heartbeat.interval.ms (KIP-848 members)
    pub consumer_heartbeat_interval: Duration,
    /// offsets.retention.minutes: committed offsets of a group without members are kept
    /// this long after their commit.
    pub offsets_retention: Duration,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            offsets_partitions: 50,
            initial_rebalance_delay: Duration::from_secs(3),
            min_session_timeout: Duration::from_secs(6),
            max_session_timeout: Duration::from_secs(1800),
            consumer_session_timeout: Duration::from_secs(45),
            consumer_heartbeat_interval: Duration::from_secs(5),
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A group in memory: classic (JoinGroup/SyncGroup) or KIP-848 (ConsumerGroupHeartbeat).
/// An empty group takes the protocol of the next member.
pub(crate) enum Group {
    Classic(ClassicGroup),
    Consumer(ConsumerGroup),
}

impl Group {
    /// The classic generation or the KIP-848 group epoch.
    pub fn generation(&self) -> i32 {
        match self {
            Group::Classic(g) => g.generation,
            Group::Consumer(g) => g.epoch,
        }
    }

    pub fn protocol_type(&self) -> String {
        match self {
            Group::Classic(g) => g.protocol_type.clone(),
            Group::Consumer(_) => "consumer".into(),
        }
    }

    pub fn state(&self) -> &'static str {
        match self {
            Group::Classic(g) => g.phase.name(),
            Group::Consumer(g) => g.state(),
        }
    }

    /// "classic" or "consumer", as ListGroups v5 reports group types.
    pub fn group_type(&self) -> &'static str {
        match self {
            Group::Classic(_) => "classic",
            Group::Consumer(_) => "consumer",
        }
    }

    pub fn has_members(&self) -> bool {
        match self {
            Group::Classic(g) => !g.members.is_empty(),
            Group::Consumer(g) => !g.members.is_empty(),
        }
    }

    fn is_idle(&self) -> bool {
        match self {
            Group::Classic(g) => g.is_idle(),
            Group::Consumer(g) => g.members.is_empty(),
        }
    }

    fn tick(&mut self, now: Instant) -> bool {
        match self {
            Group::Classic(g) => g.tick(now),
            Group::Consumer(g) => g.tick(now),
        }
    }
}

/// A group held in memory, with the leader epoch of its partition when it was loaded.
struct Loaded {
    uid: u64,
    epoch: i32,
    group: Group,
}

pub struct Coordinator {
    node_id: u64,
    pub config: GroupConfig,
    replication: Arc<Replication>,
    groups: Mutex<HashMap<String, Loaded>>,
    /// Group records and deletions, proposed by one task in the order they were made
    /// (so a deletion cannot be overtaken by an older record).
    records: mpsc::UnboundedSender<RecordWrite>,
    /// Held from validating an OffsetCommit until its proposal is queued, so a commit
    /// checked against generation N cannot land after one checked against N+1.
    commit_order: tokio::sync::Mutex<()>,
    /// Per `__consumer_offsets` partition: the leader epoch this node leads and when it
    /// first saw it.
    led_since: Mutex<HashMap<u64, (i32, Instant)>>,
}

/// A group-record proposal for the writer task, with an optional reply on apply.
type RecordWrite = (u64, GroupCommand, Option<tokio::sync::oneshot::Sender<Result<(), ResponseError>>>);

/// One line of ListGroups.
pub(crate) struct Listed {
    pub name: String,
    pub protocol_type: String,
    pub state: &'static str,
    pub group_type: &'static str,
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
        let (records, mut record_rx) = mpsc::unbounded_channel::<RecordWrite>();
        let coordinator = Arc::new(Coordinator {
            node_id,
            config,
            replication: replication.clone(),
            groups: Mutex::default(),
            records,
            commit_order: tokio::sync::Mutex::new(()),
            led_since: Mutex::default(),
        });
        tokio::spawn(async move {
            // One task queues the proposals, so they are applied in the order they were made.
            while let Some((uid, cmd, reply)) = record_rx.recv().await {
                match replication.submit_group(uid, cmd).await {
                    Ok(applied) => drop(tokio::spawn(async move {
                        let result = applied.await.map_err(|e| not_coordinator(&e));
                        if let Err(e) = &result {
                            tracing::warn!(error = ?e, "group record not stored");
                        }
                        if let Some(reply) = reply {
                            let _ = reply.send(result);
                        }
                    })),
                    Err(e) => {
                        tracing::warn!(error = %e, "group record not stored");
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(not_coordinator(&e)));
                        }
                    }
                }
            }
        });
        let weak = Arc::downgrade(&coordinator);
        tokio::spawn(async move {
            // Kafka's offsets.retention.check.interval.ms is 10 minutes. The first check
            // waits a full interval: right after start-up no group is loaded yet, and live
            // groups must not look empty.
            let every = coordinator_check_interval(&weak);
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(coordinator) = weak.upgrade() else { return };
                if let Err(e) = coordinator.expire_offsets().await {
                    tracing::warn!(error = ?e, "committed offset expiry skipped");
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

    pub fn offsets_topic(&self) -> Option<Arc<TopicMeta>> {
        self.replication.cluster().topics.get(OFFSETS_TOPIC).cloned()
    }

    /// The partition of `group`, if this node leads it: else NOT_COORDINATOR (or
    /// COORDINATOR_NOT_AVAILABLE before `__consumer_offsets` exists).
    pub(crate) fn owner(&self, group: &str) -> Result<Owner, ResponseError> {
        let topic = self.offsets_topic().ok_or(ResponseError::CoordinatorNotAvailable)?;
        let index = partition_for(group, topic.partitions.len() as i32) as usize;
        let uid = topic.partitions.get(index).ok_or(ResponseError::CoordinatorNotAvailable)?.uid;
        let view = self.replication.partition(uid).ok_or(ResponseError::NotCoordinator)?;
        match view.leader() {
            Some(leader) if leader == self.node_id => {
                let owner = Owner { uid, epoch: view.leader_epoch() };
                self.led_since
                    .lock()
                    .entry(uid)
                    .and_modify(|e| {
                        if e.0 != owner.epoch {
                            *e = (owner.epoch, Instant::now());
                        }
                    })
                    .or_insert((owner.epoch, Instant::now()));
                Ok(owner)
            }
            Some(_) => Err(ResponseError::NotCoordinator),
            None => Err(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// Checks that a group not held in memory really has no members: one whose record
    /// says it had members may still have them right after this node took over (they
    /// rejoin within a session timeout), so admin changes wait (COORDINATOR_LOAD_IN_PROGRESS).
    pub(crate) fn check_settled(&self, owner: Owner, record: &GroupRecord) -> Result<(), ResponseError> {
        let since = self.led_since.lock().get(&owner.uid).map(|e| e.1);
        let young = since.is_none_or(|t| t.elapsed() < self.config.consumer_session_timeout);
        match record.empty_since_ms == 0 && record.generation > 0 && young {
            true => Err(ResponseError::CoordinatorLoadInProgress),
            false => Ok(()),
        }
    }

    /// Runs `f` on the classic group `group` (see [`Coordinator::with_loaded`]); a
    /// KIP-848 group with members answers INCONSISTENT_GROUP_PROTOCOL.
    pub(crate) async fn with_group<R>(
        &self,
        group: &str,
        f: impl FnOnce(&mut ClassicGroup, Instant) -> R,
    ) -> Result<R, ResponseError> {
        let delay = self.config.initial_rebalance_delay;
        self.with_loaded(group, |loaded, at| {
            if let Group::Consumer(g) = loaded {
                if !g.members.is_empty() {
                    return Err(ResponseError::InconsistentGroupProtocol);
                }
                *loaded = Group::Classic(ClassicGroup::new(g.epoch, String::new(), delay, at));
            }
            match loaded {
                Group::Classic(g) => Ok(f(g, at)),
                Group::Consumer(_) => Err(ResponseError::InconsistentGroupProtocol),
            }
        })
        .await?
    }

    /// Runs `f` on the KIP-848 group `group`; a classic group with members answers
    /// INCONSISTENT_GROUP_PROTOCOL.
    pub(crate) async fn with_consumer_group<R>(
        &self,
        group: &str,
        f: impl FnOnce(&mut ConsumerGroup, Instant) -> R,
    ) -> Result<R, ResponseError> {
        let session = self.config.consumer_session_timeout;
        self.with_loaded(group, |loaded, at| {
            if let Group::Classic(g) = loaded {
                if !g.members.is_empty() {
                    return Err(ResponseError::InconsistentGroupProtocol);
                }
                *loaded = Group::Consumer(ConsumerGroup::new(g.generation, session));
            }
            match loaded {
                Group::Consumer(g) => Ok(f(g, at)),
                Group::Classic(_) => Err(ResponseError::InconsistentGroupProtocol),
            }
        })
        .await?
    }

    /// Runs `f` on the in-memory state of `group` (loading it from its stored record
    /// when this node has not held it in the current leader epoch). Persists the group
    /// record when `f` began a new generation.
    pub(crate) async fn with_loaded<R>(
        &self,
        group: &str,
        f: impl FnOnce(&mut Group, Instant) -> R,
    ) -> Result<R, ResponseError> {
        let owner = self.owner(group)?;
        if !self.is_loaded(group, owner) {
            let record = self.stored_group(owner.uid, group).await?.unwrap_or_default();
            let mut groups = self.groups.lock();
            if !groups.get(group).is_some_and(|l| l.epoch == owner.epoch && l.uid == owner.uid) {
                let fresh = match record.group_type.as_str() {
                    // Members of the previous coordinator learn on their next heartbeat.
                    "consumer" => Group::Consumer(ConsumerGroup::loaded(
                        record.generation,
                        self.config.consumer_session_timeout,
                        self.config.consumer_heartbeat_interval + Duration::from_secs(1),
                        Instant::now(),
                    )),
                    _ => Group::Classic(ClassicGroup::new(
                        record.generation,
                        record.protocol_type,
                        self.config.initial_rebalance_delay,
                        Instant::now(),
                    )),
                };
                let loaded = Loaded { uid: owner.uid, epoch: owner.epoch, group: fresh };
                groups.insert(group.to_string(), loaded);
            }
        }
        let mut groups = self.groups.lock();
        let loaded = groups.get_mut(group).ok_or(ResponseError::CoordinatorNotAvailable)?;
        let generation = loaded.group.generation();
        let result = f(&mut loaded.group, Instant::now());
        if loaded.group.generation() != generation {
            self.persist_record(group, loaded);
        }
        Ok(result)
    }

    /// Runs `f` on `group` if this node holds it in memory for the current leader epoch.
    pub(crate) fn peek<R>(&self, group: &str, owner: Owner, f: impl FnOnce(&Group) -> R) -> Option<R> {
        let groups = self.groups.lock();
        groups.get(group).filter(|l| l.uid == owner.uid && l.epoch == owner.epoch).map(|l| f(&l.group))
    }

    /// The id and partition count of every topic, for KIP-848 assignments.
    pub(crate) fn topics(&self) -> consumer::Topics {
        let cluster = self.replication.cluster();
        cluster
            .topics
            .values()
            .filter(|t| t.name != OFFSETS_TOPIC)
            .map(|t| (t.name.clone(), (uuid::Uuid::from_bytes(t.id), t.partitions.len() as i32)))
            .collect()
    }

    fn is_loaded(&self, group: &str, owner: Owner) -> bool {
        self.groups.lock().get(group).is_some_and(|l| l.epoch == owner.epoch && l.uid == owner.uid)
    }

    fn persist_record(&self, group: &str, loaded: &Loaded) {
        let group_type = match loaded.group {
            Group::Classic(_) => String::new(),
            Group::Consumer(_) => "consumer".to_string(),
        };
        let empty_since_ms = if loaded.group.has_members() { 0 } else { now_ms() };
        let record = GroupRecord {
            protocol_type: loaded.group.protocol_type(),
            generation: loaded.group.generation(),
            group_type,
            empty_since_ms,
        };
        let _ = self.records.send((loaded.uid, GroupCommand::PutGroup { group: group.to_string(), record }, None));
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

    /// Runs a store read on tokio's blocking pool (RocksDB reads can wait on the disk).
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&chronik_engine::Engine) -> chronik_engine::Result<T> + Send + 'static,
    ) -> Result<T, ResponseError> {
        let engine = self.replication.engine().clone();
        tokio::task::spawn_blocking(move || read(&engine))
            .await
            .map_err(|_| ResponseError::UnknownServerError)?
            .map_err(|_| ResponseError::KafkaStorageError)
    }

    /// The stored record of `group`.
    pub(crate) async fn stored_group(&self, uid: u64, group: &str) -> Result<Option<GroupRecord>, ResponseError> {
        let group = group.to_string();
        self.read(move |engine| groups::read_group(engine, uid, &group)).await
    }

    /// The committed offsets of `group`.
    pub(crate) async fn committed(&self, uid: u64, group: &str) -> Result<Vec<CommittedOffset>, ResponseError> {
        let group = group.to_string();
        self.read(move |engine| groups::read_offsets(engine, uid, &group)).await
    }

    /// Every group stored in the `__consumer_offsets` partitions this node leads, with
    /// the groups only held in memory, as (name, protocol type, state).
    pub(crate) async fn list(&self) -> Result<Vec<Listed>, ResponseError> {
        let Some(topic) = self.offsets_topic() else { return Ok(Vec::new()) };
        let uids: Vec<u64> = topic
            .partitions
            .iter()
            .map(|p| p.uid)
            .filter(|uid| self.replication.partition(*uid).is_some_and(|v| v.leader() == Some(self.node_id)))
            .collect();
        let stored = self
            .read(move |engine| {
                uids.into_iter().map(|uid| groups::read_groups(engine, uid)).collect::<Result<Vec<_>, _>>()
            })
            .await?;
        let mut listed: HashMap<String, Listed> = stored
            .into_iter()
            .flatten()
            .map(|(name, record)| {
                let group_type = if record.group_type == "consumer" { "consumer" } else { "classic" };
                let listed = Listed {
                    name: name.clone(),
                    protocol_type: record.protocol_type,
                    state: classic::Phase::Empty.name(),
                    group_type,
                };
                (name, listed)
            })
            .collect();
        for (name, loaded) in self.groups.lock().iter() {
            let group = &loaded.group;
            let (protocol_type, state, group_type) = (group.protocol_type(), group.state(), group.group_type());
            listed.insert(name.clone(), Listed { name: name.clone(), protocol_type, state, group_type });
        }
        let mut out: Vec<Listed> = listed.into_values().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Proposes `cmd` for the group's partition and waits until it is applied.
    pub(crate) async fn propose(&self, owner: Owner, cmd: GroupCommand) -> Result<(), ResponseError> {
        self.replication.propose_group(owner.uid, cmd).await.map_err(|e| not_coordinator(&e))
    }

    /// Proposes `cmd` in order with the group records (deletions, expiry) and waits.
    pub(crate) async fn write_record(&self, owner: Owner, cmd: GroupCommand) -> Result<(), ResponseError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.records.send((owner.uid, cmd, Some(tx))).map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        rx.await.map_err(|_| ResponseError::CoordinatorNotAvailable)?
    }

    /// Serializes OffsetCommit validation and queueing (see `commit_order`).
    pub(crate) async fn commit_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.commit_order.lock().await
    }

    /// Deletes committed offsets of groups without members once they are older than
    /// the retention (a group whose last offset goes is deleted with its record).
    async fn expire_offsets(&self) -> Result<(), ResponseError> {
        let Some(topic) = self.offsets_topic() else { return Ok(()) };
        let retention_ms = self.config.offsets_retention.as_millis() as i64;
        for partition in &topic.partitions {
            let Some(view) = self.replication.partition(partition.uid) else { continue };
            if view.leader() != Some(self.node_id) {
                continue;
            }
            let owner = Owner { uid: partition.uid, epoch: view.leader_epoch() };
            let stored = self.read(move |engine| groups::read_groups(engine, owner.uid)).await?;
            for (group, _) in stored {
                if self.peek(&group, owner, Group::has_members).unwrap_or(false) {
                    continue;
                }
                let offsets = self.committed(owner.uid, &group).await?;
                let cutoff_ms = now_ms() - retention_ms;
                if expired_offsets(&offsets, cutoff_ms).is_empty() {
                    continue;
                }
                tracing::info!(%group, "expiring committed offsets");
                self.write_record(owner, GroupCommand::ExpireOffsets { group: group.clone(), cutoff_ms }).await?;
            }
        }
        Ok(())
    }

    /// Forgets the in-memory state of `group` (after DeleteGroups).
    pub(crate) fn forget(&self, group: &str) {
        self.groups.lock().remove(group);
    }
}

fn coordinator_check_interval(weak: &std::sync::Weak<Coordinator>) -> Duration {
    let retention = weak.upgrade().map_or(Duration::from_secs(600), |c| c.config.offsets_retention);
    retention.clamp(Duration::from_secs(1), Duration::from_secs(600))
}

/// The `__consumer_offsets` partition of `group`, as Kafka computes it (Java's
/// `String.hashCode`), so tools that read group state by partition agree.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let hash = group.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
    // Math.abs(Integer.MIN_VALUE) stays negative in Java; Kafka's Utils.abs maps it to 0.
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partitions.max(1)
}

/// The offsets committed at or before `cutoff_ms` (the apply also weighs when the group
/// became empty; this is the cheap pre-check).
fn expired_offsets(offsets: &[CommittedOffset], cutoff_ms: i64) -> Vec<(String, i32)> {
    offsets.iter().filter(|o| o.commit_timestamp <= cutoff_ms).map(|o| (o.topic.clone(), o.partition)).collect()
}

/// The Kafka error for a failed group proposal: a lost leadership is NOT_COORDINATOR.
pub(crate) fn not_coordinator(e: &chronik_replication::ReplicationError) -> ResponseError {
    match errors::replication(e) {
        ResponseError::NotLeaderOrFollower | ResponseError::UnknownTopicOrPartition => ResponseError::NotCoordinator,
        other => other,
    }
}

/// Milliseconds since the Unix epoch, for commit timestamps (taken by the proposer).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_expire_a_retention_after_their_commit() {
        let offset = |partition, commit_timestamp| CommittedOffset {
            topic: "t".into(),
            partition,
            offset: 1,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp,
        };
        let offsets = [offset(0, 1_000), offset(1, 5_000)];
        assert!(expired_offsets(&offsets, 999).is_empty());
        assert_eq!(expired_offsets(&offsets, 1_000), vec![("t".to_string(), 0)]);
        assert_eq!(expired_offsets(&offsets, 8_000).len(), 2);
    }

    #[test]
    fn groups_map_to_partitions_like_kafka() {
        // Values printed by Java 17: Math.abs(group.hashCode()) % 50.
        assert_eq!(partition_for("my-group", 50), 12);
        assert_eq!(partition_for("console-consumer-12345", 50), 6);
        assert_eq!(partition_for("a", 50), 47);
    }
}
