//! Multi-Raft replication: one Raft group for cluster metadata (group 0) and one per
//! partition, all logged in one raft-engine and applied into one RocksDB.
//!
//! Layers: [`Replication`] is the async API that kafka-api sees; it sends proposals
//! over a channel to the driver thread (`driver`), which owns every `RawNode`, persists
//! the entries of all groups with one raft-engine write and one fsync per round, applies
//! committed entries with one RocksDB write per round, and answers each proposal on apply.
//! [`metadata`] and `partition` are the deterministic state machines. [`transport`]
//! carries Raft messages between nodes (tonic) and forwards metadata commands to the
//! group-0 leader.
//!
//! Architecture invariant: only the driver thread touches a `RawNode` or writes the
//! store; tokio tasks reach it only through its channel and read the shared views.

pub mod command;
mod driver;
mod error;
pub mod groups;
mod log_files;
mod log_gc;
mod logger;
mod meta_snapshot;
pub mod metadata;
mod metrics;
pub mod offline;
mod partition;
mod persist;
pub mod placement;
pub mod record_batch;
pub mod retention;
mod storage;
pub mod topic_config;
pub mod transport;
mod view;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chronik_engine::Engine;
use tokio::sync::{oneshot, Semaphore};

pub use driver::Applied;
pub use error::{AppendError, ReplicationError};
pub use metadata::{ClusterMeta, LeaderRecord, MetaOutcome, MetaRejection, NodeInfo, PartitionMeta, TopicMeta};
pub use view::{PartitionView, ReadOutcome};

use command::{EntryPayload, MetaCommand, PartitionCommand};

/// Bytes read at most to answer one timestamp lookup.
const MAX_TIMESTAMP_SCAN_BYTES: usize = 64 << 20;

/// Where the first record of an appended request landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: i64,
    pub log_start_offset: i64,
}

/// Sizes of the raft-engine log's files.
#[derive(Debug, Clone, Copy)]
pub struct RaftLogFiles {
    /// A file is closed and a new one started past this size.
    pub file_bytes: u64,
    /// Once the log is this large, files holding only compacted entries are purged.
    /// Purged files are kept (raft-engine keeps up to 1.5 times this in files, active
    /// ones included) and written over again: appends then land on allocated blocks,
    /// which costs a fraction of extending a new file (docs/PERFORMANCE.md).
    /// raft-engine's default, 10 GiB, kept that much log on disk and read all of it at
    /// every start.
    pub purge_bytes: u64,
}

impl Default for RaftLogFiles {
    fn default() -> RaftLogFiles {
        RaftLogFiles { file_bytes: 64 << 20, purge_bytes: 1 << 30 }
    }
}

/// Settings of the replication layer.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    pub node_id: u64,
    /// Directory of the raft-engine log.
    pub raft_dir: PathBuf,
    /// Sizes of its files, and when compacted ones are purged.
    pub raft_log_files: RaftLogFiles,
    /// One Raft tick; elections and heartbeats count in ticks.
    pub tick_interval: Duration,
    /// Proposals waiting for apply, node-wide; producers wait beyond this.
    pub max_inflight_proposals: usize,
    /// How often applied state is flushed so the Raft log can be compacted.
    pub log_gc_interval: Duration,
    /// Raft-log growth (bytes) that starts that flush and compaction before the interval
    /// is up: under load it keeps the log short and raft-engine writing over its recycled
    /// files.
    pub log_gc_growth: u64,
    /// Ticks without a leader before a follower starts an election (randomized up to
    /// twice this); heartbeats go every quarter of it.
    pub election_tick: usize,
    /// Voters of the metadata group (group 0): the first 3 or 5 nodes.
    pub meta_voters: Vec<u64>,
    /// Every other node: learners of group 0, so they have all metadata.
    pub meta_learners: Vec<u64>,
    /// This node joins a running cluster (see [`ReplicationConfig::joining`]).
    pub meta_joining: bool,
    /// A follower that has not caught up for this long leaves the in-sync set.
    pub replica_lag_time: Duration,
}

impl ReplicationConfig {
    pub fn new(node_id: u64, raft_dir: PathBuf) -> ReplicationConfig {
        ReplicationConfig {
            node_id,
            raft_dir,
            raft_log_files: RaftLogFiles::default(),
            tick_interval: Duration::from_millis(100),
            max_inflight_proposals: 4096,
            log_gc_interval: Duration::from_secs(30),
            log_gc_growth: 256 << 20,
            election_tick: 10,
            meta_voters: vec![node_id],
            meta_learners: Vec::new(),
            meta_joining: false,
            replica_lag_time: Duration::from_secs(10),
        }
    }

    /// A node of a cluster of `nodes` (ids in configuration order): group 0's voters
    /// are the first 5 of 5 or more nodes, else the first 3, else all.
    pub fn with_cluster(mut self, nodes: &[u64]) -> ReplicationConfig {
        let voters = if nodes.len() >= 5 { 5 } else { nodes.len().min(3) };
        self.meta_voters = nodes[..voters].to_vec();
        self.meta_learners = nodes[voters..].to_vec();
        self
    }

    /// A node joining a running cluster whose nodes include `nodes`: it starts as a
    /// learner of group 0 (never a candidate) with an empty log, and the cluster's state
    /// and configuration arrive as a snapshot: founding nodes start group 0's log after
    /// index 1, so no leader can catch a joiner up from the log alone.
    pub fn joining(mut self, nodes: &[u64]) -> ReplicationConfig {
        let others: Vec<u64> = nodes.iter().copied().filter(|id| *id != self.node_id).collect();
        self = self.with_cluster(&others);
        self.meta_learners.push(self.node_id);
        self.meta_joining = true;
        self
    }
}

/// Raft message batches from other nodes waiting for the driver, at most.
const MAX_INBOUND_BATCHES: usize = 1024;
/// How long a metadata proposal keeps retrying while group 0 has no leader.
const META_PROPOSAL_TIMEOUT: Duration = Duration::from_secs(15);

/// The handle kafka-api uses: propose, await apply, read.
pub struct Replication {
    node_id: u64,
    engine: Arc<Engine>,
    views: Arc<view::Views>,
    driver: driver::DriverHandle,
    inflight: Arc<Semaphore>,
    inbound: Arc<Semaphore>,
    transport: Arc<dyn transport::Transport>,
    _log_gc: log_gc::LogGc,
}

impl Replication {
    /// Opens the Raft log, restores every group and starts the driver thread of a node
    /// without peers.
    pub fn start(config: ReplicationConfig, engine: Arc<Engine>) -> Result<Replication, ReplicationError> {
        Replication::start_with(config, engine, Arc::new(transport::NoPeers))
    }

    /// As [`Replication::start`], reaching other nodes through `transport`.
    pub fn start_with(
        config: ReplicationConfig,
        engine: Arc<Engine>,
        transport: Arc<dyn transport::Transport>,
    ) -> Result<Replication, ReplicationError> {
        let views = Arc::new(view::Views::default());
        let driver = driver::DriverHandle::start(&config, engine.clone(), views.clone(), transport.clone())?;
        let log_gc = log_gc::LogGc::start(
            config.log_gc_interval,
            config.log_gc_growth,
            engine.clone(),
            views.clone(),
            driver.clone(),
        );
        Ok(Replication {
            node_id: config.node_id,
            engine,
            views,
            driver,
            inflight: Arc::new(Semaphore::new(config.max_inflight_proposals)),
            inbound: Arc::new(Semaphore::new(MAX_INBOUND_BATCHES)),
            transport,
            _log_gc: log_gc,
        })
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The current cluster metadata.
    pub fn cluster(&self) -> Arc<ClusterMeta> {
        self.views.cluster()
    }

    /// The node leading group 0 (the controller), if known.
    pub fn controller(&self) -> Option<u64> {
        self.views.meta_leader()
    }

    /// Hands Raft messages from another node to the driver; waits while too many
    /// batches are queued (back-pressure on the sender's stream).
    pub async fn deliver(&self, messages: Vec<(u64, raft::eraftpb::Message)>) -> Result<(), ReplicationError> {
        let permit = self.inbound.clone().acquire_owned().await.map_err(|_| ReplicationError::Shutdown)?;
        self.driver.deliver(messages, permit)
    }

    /// The leader of a partition not hosted here, as its leader last reported it:
    /// (leader, epoch, in-sync replicas).
    pub fn remote_leader(&self, uid: u64) -> Option<(u64, i32, Vec<u64>)> {
        let cluster = self.views.cluster();
        let r = cluster.leaders.get(&uid)?;
        Some((r.leader, r.epoch as i32, r.isr.clone()))
    }

    /// Reports the partitions this node leads whose recorded leader, epoch or in-sync
    /// replicas differ, through group 0; returns how many were reported.
    pub async fn report_leaders(&self) -> Result<usize, ReplicationError> {
        let cluster = self.views.cluster();
        let changed: Vec<LeaderRecord> = self
            .views
            .partitions()
            .into_iter()
            .filter(|v| v.leader() == Some(self.node_id))
            .map(|v| LeaderRecord { uid: v.uid, leader: self.node_id, epoch: v.leader_epoch() as u64, isr: v.isr() })
            .filter(|r| cluster.leaders.get(&r.uid) != Some(r))
            .collect();
        if changed.is_empty() {
            return Ok(0);
        }
        let count = changed.len();
        self.propose_meta(MetaCommand::ReportLeaders(changed)).await?;
        Ok(count)
    }

    /// Records how far the leaders of groups allow this node to compact their logs.
    pub fn set_compact_floors(&self, floors: Vec<(u64, u64)>) -> Result<(), ReplicationError> {
        self.driver.set_floors(floors)
    }

    /// The live view of a partition hosted on this node.
    pub fn partition(&self, uid: u64) -> Option<Arc<PartitionView>> {
        self.views.partition(uid)
    }

    /// Proposes an append of `records` (already validated v2 batches, CRC included) and
    /// returns a future for its outcome. The proposal is queued before this returns, so
    /// calls made in order are applied in order. `records` goes into the Raft entry as
    /// it is (usually a slice of the request frame): nothing is copied on the way.
    pub async fn submit_append(
        &self,
        uid: u64,
        records: Bytes,
    ) -> Result<impl std::future::Future<Output = Result<AppendOutcome, ReplicationError>>, ReplicationError> {
        let payload = command::encode_partition(&PartitionCommand::Append(records));
        let rx = self.submit(uid, payload).await?;
        Ok(async move {
            match rx.await.map_err(|_| ReplicationError::Shutdown)?? {
                Applied::Append(result) => result.map_err(ReplicationError::Append),
                other => Err(ReplicationError::Internal(format!("unexpected apply result {other:?}"))),
            }
        })
    }

    /// Moves the log start of a partition forward; returns the new log start.
    pub async fn trim(&self, uid: u64, log_start_offset: i64) -> Result<i64, ReplicationError> {
        let payload = command::encode_partition(&PartitionCommand::Trim { log_start_offset });
        match self.submit(uid, payload).await?.await.map_err(|_| ReplicationError::Shutdown)?? {
            Applied::Trim(start) => Ok(start),
            other => Err(ReplicationError::Internal(format!("unexpected apply result {other:?}"))),
        }
    }

    /// Proposes a consumer-group change to `__consumer_offsets` partition `uid`; the
    /// proposal is queued before this returns, and the future resolves on apply.
    pub async fn submit_group(
        &self,
        uid: u64,
        cmd: groups::GroupCommand,
    ) -> Result<impl std::future::Future<Output = Result<(), ReplicationError>>, ReplicationError> {
        let payload = command::encode_partition(&PartitionCommand::Group(cmd));
        let rx = self.submit(uid, payload).await?;
        Ok(async move {
            match rx.await.map_err(|_| ReplicationError::Shutdown)?? {
                Applied::Group => Ok(()),
                other => Err(ReplicationError::Internal(format!("unexpected apply result {other:?}"))),
            }
        })
    }

    /// [`Replication::submit_group`], waiting for the apply.
    pub async fn propose_group(&self, uid: u64, cmd: groups::GroupCommand) -> Result<(), ReplicationError> {
        self.submit_group(uid, cmd).await?.await
    }

    /// The store, for reads of applied state (group rows). Blocking: RocksDB reads.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Proposes a metadata change through group 0 and waits until it is applied, on
    /// the group-0 leader: here, or forwarded to it. Retries while there is no leader.
    pub async fn propose_meta(&self, cmd: MetaCommand) -> Result<MetaOutcome, ReplicationError> {
        let deadline = tokio::time::Instant::now() + META_PROPOSAL_TIMEOUT;
        loop {
            let result = match self.views.meta_leader() {
                Some(leader) if leader != self.node_id => {
                    self.transport.forward_meta(leader, command::encode_meta(&cmd)).await
                }
                _ => self.propose_meta_here(cmd.clone()).await,
            };
            match result {
                Err(ReplicationError::NotLeader) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    /// Asks the cluster to add this node to group 0 as a learner reachable at
    /// `rpc_addr`, through any of the nodes `known` (they pass it on to the leader).
    /// Answers `Joined` (at once when this node is already a member, so it runs at every
    /// start) and connects to every node the answer lists.
    pub async fn join(&self, rpc_addr: &str, known: &[u64]) -> Result<MetaOutcome, ReplicationError> {
        let cmd = command::encode_meta(&MetaCommand::AddNode { id: self.node_id, rpc_addr: rpc_addr.to_string() });
        let deadline = tokio::time::Instant::now() + META_PROPOSAL_TIMEOUT;
        loop {
            for &node in known.iter().filter(|v| **v != self.node_id) {
                match self.transport.forward_meta(node, cmd.clone()).await {
                    Err(ReplicationError::NotLeader) => continue,
                    Ok(MetaOutcome::Joined(addrs)) => {
                        for (id, addr) in &addrs {
                            self.transport.add_peer(*id, addr);
                        }
                        return Ok(MetaOutcome::Joined(addrs));
                    }
                    other => return other,
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ReplicationError::NotLeader);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The first index still in a group's Raft log here (0 is the metadata group);
    /// `None` when the log holds no entries (never written, or compacted to its end).
    pub fn first_log_index(&self, group: u64) -> Option<u64> {
        self.driver.first_log_index(group)
    }

    /// Metadata snapshots this node installed since it started.
    pub fn snapshots_installed(&self) -> u64 {
        self.views.snapshots_installed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Group 0's configuration as this node applied it: (voters, learners).
    pub fn members(&self) -> (Vec<u64>, Vec<u64>) {
        self.views.meta_members()
    }

    /// Proposes a metadata change to group 0 on this node (NotLeader if it does not lead).
    pub async fn propose_meta_here(&self, cmd: MetaCommand) -> Result<MetaOutcome, ReplicationError> {
        let payload = EntryPayload::from_data(command::encode_meta(&cmd));
        match self.submit(0, payload).await?.await.map_err(|_| ReplicationError::Shutdown)?? {
            Applied::Meta(outcome) => Ok(outcome),
            other => Err(ReplicationError::Internal(format!("unexpected apply result {other:?}"))),
        }
    }

    async fn submit(
        &self,
        group: u64,
        payload: EntryPayload,
    ) -> Result<oneshot::Receiver<driver::ApplyResult>, ReplicationError> {
        let permit = self.inflight.clone().acquire_owned().await.map_err(|_| ReplicationError::Shutdown)?;
        let (tx, rx) = oneshot::channel();
        self.driver.propose(group, payload, tx, permit)?;
        Ok(rx)
    }

    /// Appends whole batches of `uid` from the one containing `from` to `out`, up to the
    /// high watermark. Blocking (RocksDB reads): call from a blocking context.
    pub fn read(
        &self,
        uid: u64,
        from: i64,
        max_bytes: usize,
        min_one: bool,
        out: &mut Vec<u8>,
    ) -> Result<ReadOutcome, ReplicationError> {
        let view = self.views.partition(uid).ok_or(ReplicationError::UnknownPartition)?;
        view.read(&self.engine, from, max_bytes, min_one, out)
    }

    /// The stored batches that can hold the first record with a timestamp `>= timestamp`
    /// (or, with `None`, the greatest timestamp), concatenated, in offset order.
    ///
    /// The time index has an entry only for batches that raised the partition's maximum
    /// timestamp, so the answer can also lie in the unindexed batches after the indexed
    /// one: this returns the indexed batch through the next indexed one (or the high
    /// watermark), at most `MAX_TIMESTAMP_SCAN_BYTES`. The first batch may start before
    /// the log start (a trim inside it): callers skip records below the log start.
    pub fn batches_by_timestamp(&self, uid: u64, timestamp: Option<i64>) -> Result<Option<Vec<u8>>, ReplicationError> {
        let view = self.views.partition(uid).ok_or(ReplicationError::UnknownPartition)?;
        let entry = match timestamp {
            Some(ts) => self.engine.time_index_seek(uid, ts)?,
            None => self.engine.time_index_last(uid)?,
        };
        let Some((indexed_ts, base)) = entry else { return Ok(None) };
        let end = match timestamp {
            Some(_) => self.engine.time_index_seek(uid, indexed_ts.saturating_add(1))?.map(|(_, next)| next + 1),
            None => None,
        };
        let end = end.unwrap_or(i64::MAX).min(view.high_watermark());
        let mut out = Vec::new();
        self.engine.read_batches(uid, base, end, MAX_TIMESTAMP_SCAN_BYTES, true, &mut out)?;
        Ok(Some(out).filter(|b| !b.is_empty()))
    }

    /// Leader epochs of a partition with the offset each began at.
    pub fn epoch_starts(&self, uid: u64) -> Result<Vec<(i64, i64)>, ReplicationError> {
        Ok(self.engine.epoch_starts(uid)?)
    }

    /// Stored batch sizes of `uid` from its log start (for size-based retention).
    pub fn batch_sizes(&self, uid: u64) -> Result<Vec<(i64, usize)>, ReplicationError> {
        let view = self.views.partition(uid).ok_or(ReplicationError::UnknownPartition)?;
        Ok(self.engine.batch_sizes(uid, view.log_start_offset(), view.high_watermark())?)
    }

    /// Hands leadership of every replicated group this node leads to a follower and
    /// waits (at most `timeout`) until it leads none, so clients fail over before the
    /// node stops instead of after an election timeout.
    pub async fn step_down(&self, timeout: Duration) {
        if self.driver.step_down().is_err() {
            return;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            let leads_any =
                self.views.partitions().iter().any(|v| v.leader() == Some(self.node_id) && v.replicas.len() > 1);
            if !leads_any {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the driver after the current round and flushes applied state.
    pub fn shutdown(&self) {
        self.driver.shutdown();
        if let Err(e) = self.engine.flush() {
            tracing::error!(error = %e, "flush at shutdown failed");
        }
    }
}

impl Drop for Replication {
    fn drop(&mut self) {
        self.driver.shutdown();
    }
}
