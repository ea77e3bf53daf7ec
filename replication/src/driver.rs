//! The Raft driver: one thread that owns every group's `RawNode`.
//!
//! A round: take all queued proposals, tick if due, collect the `Ready` of every group,
//! stage all their entries and hard states in ONE raft-engine batch, hand it to the
//! `raft-persist` thread (one write, one fsync) unless a write is in flight, apply all
//! committed entries in ONE RocksDB write (no WAL: raft-engine holds the log), then
//! answer the proposals and publish the new offsets. The batch staged while a write is
//! in flight goes next: that is the group commit, and the apply of one round overlaps
//! the fsync of the next. raft-rs' asynchronous ready keeps this safe: entries count
//! as persisted (and so commit, and apply) only once `on_persist_ready` says so.
//!
//! With peers, a round follows raft-rs' documented order: a leader's messages go out
//! before the fsync (appends to followers run in parallel with the leader's own write),
//! messages that depend on persisted state (votes, append responses) only after it,
//! and the light ready's messages after `advance`. All messages of a round for one
//! node travel as one batch through the [`Transport`], which never blocks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chronik_engine::{Durability, Engine, PartitionState, WriteBatch};
use crossbeam_channel::{unbounded, Receiver, Sender};
use parking_lot::Mutex;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, Entry, EntryType, Message, MessageType, Snapshot};
use raft::{ProgressState, RawNode, SnapshotStatus, StateRole};
use raft_engine::LogBatch;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::command::{self, EntryPayload, MetaCommand, PartitionCommand};
use crate::groups;
use crate::metadata::{ClusterMeta, MetaEffects, MetaOutcome, MetaRejection, PartitionMeta, CONF_STATE_KEY};
use crate::partition::PartitionMachine;
use crate::persist::{Persisted, Persister};
use crate::storage::{GroupStorage, LogEngine};
use crate::transport::Transport;
use crate::view::{PartitionView, Views};
use crate::{logger, metrics, AppendError, AppendOutcome, ReplicationConfig, ReplicationError};

const META_GROUP: u64 = 0;
/// Apply writes a round to RocksDB in batches of about this size, each with the state
/// rows of the entries it holds. One batch for a whole round (tens of MiB under load)
/// took fresh pages from the kernel every round: zeroing them was 8-10% of the node's
/// samples at 16 partitions; batches of a few MiB reuse the allocator's memory.
const APPLY_CHUNK_BYTES: usize = 4 << 20;
/// Proposals taken from the queue per round at most, so ticks are never starved.
const MAX_PROPOSALS_PER_ROUND: usize = 8192;
/// Proposal bytes taken per round at most: raft-engine refuses a write over 2 GiB, and
/// smaller rounds keep latency even.
const MAX_PROPOSAL_BYTES_PER_ROUND: usize = 64 << 20;
/// Rounds allowed to replay the log at start-up.
const MAX_REPLAY_ROUNDS: usize = 100_000;
/// Ticks between checks that hand leadership back to a partition's preferred replica.
const PREFERRED_LEADER_CHECK_TICKS: u64 = 50;
/// Ticks between leaders telling followers how far every replica has the log.
const FLOOR_SHARE_TICKS: u64 = 50;

/// What applying one proposal produced.
#[derive(Debug)]
pub enum Applied {
    Append(Result<AppendOutcome, AppendError>),
    Trim(i64),
    Group,
    Meta(MetaOutcome),
}

pub(crate) type ApplyResult = Result<Applied, ReplicationError>;
type Reply = oneshot::Sender<ApplyResult>;

enum Msg {
    Propose {
        group: u64,
        payload: EntryPayload,
        reply: Reply,
        permit: OwnedSemaphorePermit,
    },
    /// Messages from other nodes; the permit bounds what waits in the channel.
    Raft {
        messages: Vec<(u64, Message)>,
        _permit: OwnedSemaphorePermit,
    },
    /// Compact each (group, applied index) pair's log; `done` is dropped once that is
    /// written.
    Compact {
        applied: Vec<(u64, u64)>,
        done: Sender<()>,
    },
    /// (group, index) pairs from leaders: every replica has the log up to the index.
    Floors(Vec<(u64, u64)>),
    /// Hand every led replicated group to its most caught-up follower (before shutdown).
    StepDown,
    Shutdown,
}

impl Msg {
    /// Bytes this message adds to a round.
    fn len(&self) -> usize {
        match self {
            Msg::Propose { payload, .. } => payload.data.len(),
            _ => 0,
        }
    }
}

/// Readies whose raft-engine write is staged or in flight, and their messages that
/// promise persisted state (votes, append responses): sent once the write is durable.
#[derive(Default)]
struct Persisting {
    readies: Vec<(u64, u64)>,
    messages: Vec<(u64, Vec<Message>)>,
    /// Whether the write needs an fsync (entries, term or vote); a commit index alone
    /// does not: a restart recomputes it.
    sync: bool,
}

/// A proposal waiting for its entry to be applied.
struct Pending {
    index: u64,
    term: u64,
    reply: Reply,
    _permit: OwnedSemaphorePermit,
}

enum Machine {
    Meta(ClusterMeta),
    Partition(PartitionMachine),
}

struct Group {
    node: RawNode<GroupStorage>,
    machine: Machine,
    pending: VecDeque<Pending>,
    view: Option<Arc<PartitionView>>,
    applied: Arc<AtomicU64>,
    /// Term of the last applied entry: a new leader serves once it applied its own.
    applied_term: u64,
    /// Voters; the first is the preferred leader.
    voters: Vec<u64>,
    /// When each follower last caught up with the leader's log end (leader only).
    caught_up_at: HashMap<u64, Instant>,
    /// The leader's last index at the previous tick; a follower at or past it is caught up.
    last_index_mark: u64,
    /// On a follower: the index every replica has, as the leader last said (0: unknown).
    compact_floor: u64,
}

#[derive(Clone)]
pub(crate) struct DriverHandle {
    tx: Sender<Msg>,
    log: Arc<LogEngine>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl DriverHandle {
    pub fn start(
        config: &ReplicationConfig,
        engine: Arc<Engine>,
        views: Arc<Views>,
        transport: Arc<dyn Transport>,
    ) -> Result<DriverHandle, ReplicationError> {
        let log = Arc::new(crate::storage::open_log(&config.raft_dir, config.raft_log_files)?);
        let handle_log = log.clone();
        let persister = Persister::start(log.clone())
            .map_err(|e| ReplicationError::Internal(format!("cannot start the raft log writer: {e}")))?;
        let (tx, rx) = unbounded();
        let mut driver = Driver {
            node_id: config.node_id,
            tick_interval: config.tick_interval,
            election_tick: config.election_tick,
            replica_lag_time: config.replica_lag_time,
            meta_voters: config.meta_voters.clone(),
            meta_learners: config.meta_learners.clone(),
            meta_joining: config.meta_joining,
            transport,
            outbox: HashMap::new(),
            ticks: 0,
            log,
            engine,
            views,
            groups: BTreeMap::new(),
            rx,
            pending_log: LogBatch::default(),
            round_log: LogBatch::default(),
            spare_log: LogBatch::default(),
            persister,
            staged: Persisting::default(),
            in_flight: None,
            replies: Vec::new(),
            to_clean: Vec::new(),
            fsyncs: 0,
        };
        driver.restore()?;
        let thread = std::thread::Builder::new()
            .name("raft-driver".into())
            .spawn(move || driver.run())
            .map_err(|e| ReplicationError::Internal(format!("cannot start the raft driver: {e}")))?;
        Ok(DriverHandle { tx, log: handle_log, thread: Arc::new(Mutex::new(Some(thread))) })
    }

    pub fn propose(
        &self,
        group: u64,
        payload: EntryPayload,
        reply: Reply,
        permit: OwnedSemaphorePermit,
    ) -> Result<(), ReplicationError> {
        self.tx.send(Msg::Propose { group, payload, reply, permit }).map_err(|_| ReplicationError::Shutdown)
    }

    pub fn deliver(&self, messages: Vec<(u64, Message)>, permit: OwnedSemaphorePermit) -> Result<(), ReplicationError> {
        self.tx.send(Msg::Raft { messages, _permit: permit }).map_err(|_| ReplicationError::Shutdown)
    }

    /// The first index still in group `group`'s log; `None` when it holds no entries.
    pub fn first_log_index(&self, group: u64) -> Option<u64> {
        self.log.first_index(group)
    }

    pub fn step_down(&self) -> Result<(), ReplicationError> {
        self.tx.send(Msg::StepDown).map_err(|_| ReplicationError::Shutdown)
    }

    pub fn set_floors(&self, floors: Vec<(u64, u64)>) -> Result<(), ReplicationError> {
        self.tx.send(Msg::Floors(floors)).map_err(|_| ReplicationError::Shutdown)
    }

    /// Compacts each (group, applied index) pair's log as far as every replica allows,
    /// then purges the files nothing needs any more. Called from the log GC thread: a
    /// purge may rewrite the entries of groups held back by a lagging replica, which
    /// must not stall the driver's rounds (and so its heartbeats).
    pub fn compact(&self, applied: Vec<(u64, u64)>) -> Result<(), ReplicationError> {
        let (done, written) = crossbeam_channel::bounded(0);
        self.tx.send(Msg::Compact { applied, done }).map_err(|_| ReplicationError::Shutdown)?;
        // Disconnected, not a message: the driver drops `done` after the write (or stops).
        let _ = written.recv();
        if let Err(e) = self.log.purge_expired_files() {
            tracing::warn!(error = %e, "raft log purge failed");
        }
        Ok(())
    }

    /// Stops the driver after its current round and waits for it.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Msg::Shutdown);
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

struct Driver {
    node_id: u64,
    tick_interval: Duration,
    election_tick: usize,
    replica_lag_time: Duration,
    meta_voters: Vec<u64>,
    meta_learners: Vec<u64>,
    meta_joining: bool,
    transport: Arc<dyn Transport>,
    /// Messages of the current round, per destination node.
    outbox: HashMap<u64, Vec<(u64, Message)>>,
    ticks: u64,
    log: Arc<LogEngine>,
    engine: Arc<Engine>,
    views: Arc<Views>,
    groups: BTreeMap<u64, Group>,
    rx: Receiver<Msg>,
    /// raft-engine writes made between rounds (new groups, compaction), persisted with
    /// the next round's write.
    pending_log: LogBatch,
    /// The raft-engine batch being staged; it and `spare_log` swap with the write in
    /// flight, so their buffers are reused.
    round_log: LogBatch,
    spare_log: LogBatch,
    persister: Persister,
    /// What `round_log` holds for raft-rs.
    staged: Persisting,
    /// What the write in flight holds for raft-rs (at most one write is in flight).
    in_flight: Option<Persisting>,
    replies: Vec<(Reply, ApplyResult)>,
    /// Groups of deleted partitions whose raft-engine regions are removed once the
    /// deletion is flushed to RocksDB (removing them earlier could strand a restart).
    to_clean: Vec<u64>,
    fsyncs: u64,
}

impl Driver {
    /// Opens group 0 and every partition group the metadata places on this node.
    fn restore(&mut self) -> Result<(), ReplicationError> {
        let meta = ClusterMeta::load(&self.engine)?;
        let partitions: Vec<PartitionMeta> = meta.topics.values().flat_map(|t| t.partitions.iter().cloned()).collect();
        self.views.set_cluster(Arc::new(meta.clone()));
        for (id, addr) in &meta.peer_addrs() {
            self.transport.add_peer(*id, addr);
        }
        let (voters, learners) = (self.meta_voters.clone(), self.meta_learners.clone());
        self.open_group(META_GROUP, &voters, &learners, Machine::Meta(meta))?;
        let node_id = self.node_id;
        for p in partitions.iter().filter(|p| p.replicas.contains(&node_id)) {
            self.open_partition(p)?;
        }
        // Persist bootstrap state before any proposal can be acknowledged.
        self.log.write(&mut self.pending_log, true)?;
        // Re-apply what raft-engine committed beyond the flushed state before anyone
        // reads: otherwise a reader would see offsets below what was acknowledged.
        for _ in 0..MAX_REPLAY_ROUNDS {
            if self.in_flight.is_none()
                && self
                    .groups
                    .values()
                    .all(|g| !g.node.has_ready() && g.node.raft.raft_log.applied >= g.node.raft.raft_log.committed)
            {
                return Ok(());
            }
            self.round()?;
            self.wait_persisted()?;
        }
        Err(ReplicationError::Internal(format!("log replay did not finish in {MAX_REPLAY_ROUNDS} rounds")))
    }

    fn open_partition(&mut self, p: &PartitionMeta) -> Result<(), ReplicationError> {
        let machine = PartitionMachine::load(&self.engine, p.uid)?;
        self.open_group(p.uid, &p.replicas, &[], Machine::Partition(machine))
    }

    fn open_group(
        &mut self,
        id: u64,
        voters: &[u64],
        learners: &[u64],
        machine: Machine,
    ) -> Result<(), ReplicationError> {
        let (applied, applied_term) = match &machine {
            Machine::Partition(m) => (m.state.applied_index, m.state.applied_term),
            Machine::Meta(_) => self.engine.partition_state(id)?.map_or((0, 0), |s| (s.applied_index, s.applied_term)),
        };
        let (mut storage, fresh) = match GroupStorage::load(id, self.log.clone())? {
            Some(storage) => (storage, false),
            None => {
                // Founding members start group 0's log after index 1, which no log holds:
                // a node that joins later can only start from a snapshot, which carries
                // the configuration it cannot otherwise know.
                let start = u64::from(id == META_GROUP && !self.meta_joining);
                let storage =
                    GroupStorage::bootstrap(id, self.log.clone(), voters, learners, start, &mut self.pending_log)?;
                (storage, true)
            }
        };
        if id == META_GROUP {
            storage.serve_snapshots(self.engine.clone());
            // The configuration as of the applied index (later changes are re-applied).
            if let Some(raw) = self.engine.cluster_get(CONF_STATE_KEY)? {
                let conf = raft::eraftpb::ConfState::parse_from_bytes(&raw)
                    .map_err(|e| ReplicationError::Internal(format!("corrupt group 0 configuration: {e}")))?;
                storage.set_conf_state(conf, &mut self.pending_log)?;
            }
        }
        if applied > raft::Storage::last_index(&storage)? {
            // An installed snapshot whose log truncation was not persisted before a crash.
            storage.reset_to(applied, applied_term, &mut self.pending_log)?;
        }
        storage.ensure_committed(applied);
        let voters: Vec<u64> = raft::Storage::initial_state(&storage)?.conf_state.voters;
        let config = raft::Config {
            id: self.node_id,
            election_tick: self.election_tick,
            heartbeat_tick: (self.election_tick / 4).max(1),
            applied,
            max_size_per_msg: 1 << 20,
            max_committed_size_per_ready: 256 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let mut node = RawNode::new(&config, storage, &logger::raft_logger(id))?;
        if voters == [self.node_id] || (fresh && voters.first() == Some(&self.node_id)) {
            // A single voter elects itself at once; a new group's preferred replica
            // starts the first election instead of waiting out a timeout.
            node.campaign()?;
        }
        let view = matches!(machine, Machine::Partition(_)).then(|| Arc::new(PartitionView::new(id, voters.to_vec())));
        let applied_cell = self.views.applied_cell(id);
        applied_cell.store(applied, Ordering::Release);
        let group = Group {
            node,
            machine,
            pending: VecDeque::new(),
            view,
            applied: applied_cell,
            applied_term,
            voters: voters.to_vec(),
            caught_up_at: HashMap::new(),
            last_index_mark: 0,
            compact_floor: 0,
        };
        if let (Some(view), Machine::Partition(m)) = (&group.view, &group.machine) {
            // A leader elected just now serves only once its first entry is applied.
            let leader = serving_leader(&group, self.node_id);
            view.publish(m.state.next_offset, m.state.log_start_offset, group.node.raft.term, leader);
            self.views.insert_partition(view.clone());
        }
        self.groups.insert(id, group);
        Ok(())
    }

    fn run(mut self) {
        let mut next_tick = Instant::now() + self.tick_interval;
        let done = self.persister.done.clone();
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            // raft-engine refuses a write over 2 GiB: a full staged batch waits for the
            // write in flight instead of taking more proposals.
            let staged_full =
                self.in_flight.is_some() && self.round_log.approximate_size() >= MAX_PROPOSAL_BYTES_PER_ROUND;
            let outcome = if staged_full {
                self.wait_persisted().map(|()| true)
            } else {
                crossbeam_channel::select! {
                    recv(self.rx) -> msg => Ok(msg.is_ok_and(|msg| self.take_in(msg))),
                    recv(done) -> persisted => match persisted {
                        Ok(persisted) => self.persisted(persisted).map(|()| true),
                        Err(_) => Err(ReplicationError::Internal("the raft log writer stopped".into())),
                    },
                    default(timeout) => Ok(true),
                }
            };
            match outcome {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => fail(e),
            }
            if Instant::now() >= next_tick {
                for group in self.groups.values_mut() {
                    // raft-rs makes a lone voter leader at once, which requires its whole
                    // log persisted: a follower's election timer waits out its write.
                    let raft = &group.node.raft;
                    if raft.state == StateRole::Leader || raft.raft_log.persisted >= raft.raft_log.last_index() {
                        group.node.tick();
                    }
                }
                self.after_tick();
                next_tick = Instant::now() + self.tick_interval;
            }
            if let Err(e) = self.round() {
                fail(e);
            }
        }
        self.finish();
    }

    /// Handles `first` and what else is queued, up to a round's share; false means stop.
    fn take_in(&mut self, first: Msg) -> bool {
        let mut bytes = first.len();
        if !self.handle(first) {
            return false;
        }
        let mut taken = 1;
        while taken < MAX_PROPOSALS_PER_ROUND && bytes < MAX_PROPOSAL_BYTES_PER_ROUND {
            let Ok(msg) = self.rx.try_recv() else { break };
            bytes += msg.len();
            if !self.handle(msg) {
                return false;
            }
            taken += 1;
        }
        true
    }

    /// Handles one message; false means stop.
    fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Propose { group, payload, reply, permit } => self.propose(group, payload, reply, permit),
            Msg::Raft { messages, _permit } => {
                metrics::RAFT_MESSAGES_RECEIVED.inc_by(messages.len() as u64);
                for (id, message) in messages {
                    // Messages for a group not (yet) hosted here are dropped; the leader resends.
                    if let Some(group) = self.groups.get_mut(&id) {
                        let _ = group.node.step(message);
                    }
                }
            }
            Msg::Compact { applied, done: _done } => self.compact(applied),
            Msg::StepDown => {
                for group in self.groups.values_mut() {
                    if group.node.raft.state != StateRole::Leader || group.voters.len() < 2 {
                        continue;
                    }
                    let me = self.node_id;
                    let best =
                        group.node.raft.prs().iter().filter(|(id, _)| **id != me).max_by_key(|(_, pr)| pr.matched);
                    if let Some((&to, _)) = best {
                        group.node.transfer_leader(to);
                    }
                }
            }
            Msg::Floors(floors) => {
                for (id, index) in floors {
                    if let Some(group) = self.groups.get_mut(&id) {
                        group.compact_floor = group.compact_floor.max(index);
                    }
                }
            }
            Msg::Shutdown => return false,
        }
        true
    }

    fn propose(&mut self, id: u64, payload: EntryPayload, reply: Reply, permit: OwnedSemaphorePermit) {
        let Some(group) = self.groups.get_mut(&id) else {
            let _ = reply.send(Err(ReplicationError::UnknownPartition));
            return;
        };
        if group.node.raft.state != StateRole::Leader {
            let _ = reply.send(Err(ReplicationError::NotLeader));
            return;
        }
        let membership = match &group.machine {
            Machine::Meta(meta) => command::decode_meta(&payload.data)
                .and_then(|cmd| cmd.membership().map(|cc| (check_membership(&mut group.node, meta, &cmd), cc))),
            Machine::Partition(_) => None,
        };
        let proposed = match membership {
            None => propose_entry(&mut group.node, payload),
            Some((Check::Propose, cc)) => group.node.propose_conf_change(payload.data.to_vec(), cc),
            Some((Check::Answer(outcome), _)) => {
                let _ = reply.send(Ok(Applied::Meta(outcome)));
                return;
            }
        };
        match proposed {
            Ok(()) => {
                let index = group.node.raft.raft_log.last_index();
                let term = group.node.raft.term;
                group.pending.push_back(Pending { index, term, reply, _permit: permit });
                metrics::PROPOSALS.inc();
            }
            Err(_) => {
                let _ = reply.send(Err(ReplicationError::NotLeader));
            }
        }
    }

    fn compact(&mut self, applied: Vec<(u64, u64)>) {
        // Its own batch: `pending_log` may hold writes (a deleted group's `Clean`) that
        // must follow the staged and in-flight ones; compaction only touches applied,
        // so long durable, entries.
        let mut batch = LogBatch::default();
        for (id, index) in applied {
            if let Some(group) = self.groups.get_mut(&id) {
                let Some(index) = replicated_floor(&group.node, index, group.compact_floor) else { continue };
                if let Err(e) = group.node.mut_store().compact(index, &mut batch) {
                    tracing::warn!(group = id, error = %e, "raft log compaction skipped");
                }
            }
        }
        // Synced: the purge that follows deletes files, and a crash must not keep the
        // deletions but lose the compaction record that allowed them.
        if let Err(e) = self.log.write(&mut batch, true) {
            tracing::warn!(error = %e, "raft log compaction write failed");
        }
    }

    fn round(&mut self) -> Result<(), ReplicationError> {
        // Bootstraps and configuration changes are synced, as every entry is.
        self.staged.sync |= !self.pending_log.is_empty();
        let log_batch = &mut self.round_log;
        log_batch.merge(&mut self.pending_log)?;
        // Every group that had a ready, with the committed entries it brought (maybe none).
        let mut readied = Vec::new();
        let mut installed_snapshot = false;
        for (id, group) in self.groups.iter_mut() {
            if !group.node.has_ready() {
                continue;
            }
            let mut ready = group.node.ready();
            if !ready.snapshot().is_empty() {
                // Only group 0 sends snapshots: to nodes that joined (see `open_group`).
                let snapshot: &Snapshot = ready.snapshot();
                crate::meta_snapshot::install(&self.engine, snapshot)?;
                group.node.mut_store().apply_snapshot(snapshot, log_batch)?;
                group.applied_term = snapshot.get_metadata().term;
                installed_snapshot = true;
                self.views.snapshots_installed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(group = id, index = snapshot.get_metadata().index, "installed a metadata snapshot");
            }
            // A leader's messages may leave before its own write (Raft thesis 10.2.1).
            queue_messages(&mut self.outbox, *id, ready.take_messages());
            let store = group.node.mut_store();
            store.append(ready.entries(), log_batch)?;
            if let Some(hs) = ready.hs() {
                store.set_hard_state(hs, log_batch)?;
            }
            self.staged.sync |= ready.must_sync();
            let persisted_messages = ready.take_persisted_messages();
            if !persisted_messages.is_empty() {
                self.staged.messages.push((*id, persisted_messages));
            }
            self.staged.readies.push((*id, ready.number()));
            // Committed entries are persisted ones only (raft-rs bounds them so).
            readied.push((*id, ready.take_committed_entries()));
            group.node.advance_append_async(ready);
        }
        flush_outbox(&mut self.outbox, self.transport.as_ref());
        if installed_snapshot {
            // raft-rs marks a snapshot applied only once it is persisted: write it now.
            self.persist_staged_now()?;
            self.reload_metadata()?;
        }
        self.submit();
        if readied.is_empty() {
            return Ok(());
        }
        metrics::ROUNDS.inc();

        let apply_timer = metrics::APPLY_SECONDS.start_timer();
        let engine = self.engine.clone();
        // Room for the round's records and an eighth more for keys and state rows (up to
        // a chunk and its last entry): a batch that outgrows its room copies all it holds.
        let bytes: usize = readied.iter().flat_map(|(_, entries)| entries).map(|e| e.data.len()).sum();
        let mut wb = engine.batch_with_capacity((bytes + bytes / 8 + 4096).min(2 * APPLY_CHUNK_BYTES));
        let mut touched = Vec::with_capacity(readied.len());
        for (id, entries) in readied {
            self.apply(id, entries, &mut wb)?;
            if let Some(group) = self.groups.get_mut(&id) {
                group.node.advance_apply();
                touched.push(id);
            }
        }
        engine.write(wb, Durability::Memtable)?;
        apply_timer.observe_duration();
        if !self.to_clean.is_empty() {
            engine.flush()?;
            for uid in self.to_clean.drain(..) {
                self.pending_log.add_command(uid, raft_engine::Command::Clean);
            }
        }

        self.flush_outbox();
        for id in touched {
            let Some(group) = self.groups.get_mut(&id) else { continue };
            let applied = group.node.raft.raft_log.applied;
            group.applied.store(applied, Ordering::Release);
            group.node.mut_store().evict_applied(applied);
            if group.node.raft.state != StateRole::Leader {
                // A deposed leader's proposals may still commit under the new leader, or
                // not: the client retries (idempotent producers deduplicate).
                for p in group.pending.drain(..) {
                    self.replies.push((p.reply, Err(ReplicationError::NotLeader)));
                }
                group.caught_up_at.clear();
            }
            let leader = serving_leader(group, self.node_id);
            if let (Some(view), Machine::Partition(m)) = (&group.view, &group.machine) {
                view.publish(m.state.next_offset, m.state.log_start_offset, group.node.raft.term, leader);
            }
            if id == META_GROUP {
                self.views.set_meta_leader(leader);
                let conf = group.node.raft.prs().conf().to_conf_state();
                let (mut voters, mut learners) = (conf.voters, conf.learners);
                voters.sort_unstable();
                learners.sort_unstable();
                self.views.set_meta_members(voters, learners);
            }
        }
        // Answer only after publishing, so a client that saw its ack can read its write.
        for (reply, result) in self.replies.drain(..) {
            let _ = reply.send(result);
        }
        Ok(())
    }

    /// Hands the staged batch to the writer unless a write is in flight.
    fn submit(&mut self) {
        if self.in_flight.is_some() || self.staged.readies.is_empty() && self.round_log.is_empty() {
            return;
        }
        let staged = std::mem::take(&mut self.staged);
        if self.round_log.is_empty() {
            // Nothing to write (messages only): durable as soon as what came before is.
            self.mark_persisted(staged);
            return;
        }
        let batch = std::mem::replace(&mut self.round_log, std::mem::take(&mut self.spare_log));
        self.persister.submit(batch, staged.sync);
        self.in_flight = Some(staged);
    }

    /// The write in flight finished: its entries and hard states are durable.
    fn persisted(&mut self, persisted: Persisted) -> Result<(), ReplicationError> {
        let written = persisted.result?;
        self.views.raft_log_written.fetch_add(written as u64, Ordering::Relaxed);
        if persisted.synced {
            self.fsyncs += 1;
            metrics::FSYNCS.inc();
        }
        self.spare_log = persisted.batch;
        if let Some(in_flight) = self.in_flight.take() {
            self.mark_persisted(in_flight);
        }
        Ok(())
    }

    /// Writes the staged batch and waits until it (and any write before it) is durable.
    fn persist_staged_now(&mut self) -> Result<(), ReplicationError> {
        self.wait_persisted()?;
        self.submit();
        self.wait_persisted()
    }

    /// Waits for the write in flight, if any, to finish.
    fn wait_persisted(&mut self) -> Result<(), ReplicationError> {
        if self.in_flight.is_none() {
            return Ok(());
        }
        let persisted = self.persister.done.recv().map_err(|_| ReplicationError::Shutdown)?;
        self.persisted(persisted)
    }

    /// Tells raft-rs what is durable, and sends the messages that waited for it.
    fn mark_persisted(&mut self, persisting: Persisting) {
        for (id, number) in persisting.readies {
            if let Some(group) = self.groups.get_mut(&id) {
                group.node.on_persist_ready(number);
            }
        }
        for (id, messages) in persisting.messages {
            queue_messages(&mut self.outbox, id, messages);
        }
        self.flush_outbox();
    }

    fn apply(&mut self, id: u64, entries: Vec<Entry>, wb: &mut WriteBatch<'_>) -> Result<(), ReplicationError> {
        metrics::APPLIED_ENTRIES.inc_by(entries.len() as u64);
        for entry in entries {
            let Some(group) = self.groups.get_mut(&id) else { return Ok(()) };
            group.applied_term = entry.term;
            let result = match &mut group.machine {
                Machine::Partition(m) => {
                    m.on_entry(entry.index, entry.term, wb);
                    let result = apply_partition(m, &self.engine, &entry, wb)?;
                    wb.put_partition_state(id, &m.state);
                    if wb.size_in_bytes() >= APPLY_CHUNK_BYTES {
                        wb.write_now()?;
                    }
                    result
                }
                Machine::Meta(meta) => {
                    let mut effects = MetaEffects::default();
                    let result = match entry.get_entry_type() {
                        EntryType::EntryConfChange => {
                            let result = apply_membership(
                                &mut group.node,
                                meta,
                                &entry,
                                wb,
                                &mut effects,
                                &mut self.pending_log,
                            )?;
                            group.voters = group.node.raft.prs().conf().to_conf_state().voters;
                            group.voters.sort_unstable();
                            result
                        }
                        _ => apply_meta(meta, &entry, wb, &mut effects),
                    };
                    let state =
                        PartitionState { applied_index: entry.index, applied_term: entry.term, ..Default::default() };
                    wb.put_partition_state(META_GROUP, &state);
                    self.views.set_cluster(Arc::new(meta.clone()));
                    self.apply_effects(effects)?;
                    result
                }
            };
            if let Some(group) = self.groups.get_mut(&id) {
                settle(&mut group.pending, &entry, result, &mut self.replies);
            }
        }
        Ok(())
    }

    /// Starts and stops partition groups after a metadata change.
    fn apply_effects(&mut self, effects: MetaEffects) -> Result<(), ReplicationError> {
        for (id, addr) in &effects.peers_added {
            self.transport.add_peer(*id, addr);
        }
        for &id in &effects.peers_removed {
            if id == self.node_id {
                tracing::warn!("this node was removed from the cluster; it can be stopped");
            } else {
                self.transport.remove_peer(id);
            }
        }
        for uid in effects.deleted {
            if let Some(mut group) = self.groups.remove(&uid) {
                for p in group.pending.drain(..) {
                    self.replies.push((p.reply, Err(ReplicationError::UnknownPartition)));
                }
            }
            self.views.remove_group(uid);
            self.to_clean.push(uid);
        }
        let node_id = self.node_id;
        for p in effects.created.iter().filter(|p| p.replicas.contains(&node_id)) {
            self.open_partition(p)?;
        }
        Ok(())
    }
}

impl Driver {
    /// Sends the round's messages, one batch per destination node.
    fn flush_outbox(&mut self) {
        flush_outbox(&mut self.outbox, self.transport.as_ref());
    }

    /// Per tick: the in-sync replicas of led partitions, and preferred-leader balancing.
    fn after_tick(&mut self) {
        self.ticks += 1;
        let now = Instant::now();
        let balance = self.ticks.is_multiple_of(PREFERRED_LEADER_CHECK_TICKS);
        let share_floors = self.ticks.is_multiple_of(FLOOR_SHARE_TICKS);
        let mut floors: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
        for (&id, group) in self.groups.iter_mut() {
            if group.node.raft.state != StateRole::Leader {
                continue;
            }
            if share_floors && id == META_GROUP {
                // A snapshot lost on the way would leave its follower waiting forever:
                // count it failed now and then, so raft-rs probes and sends it again.
                let waiting: Vec<u64> = group
                    .node
                    .raft
                    .prs()
                    .iter()
                    .filter(|(_, pr)| pr.state == ProgressState::Snapshot)
                    .map(|(id, _)| *id)
                    .collect();
                for to in waiting {
                    group.node.report_snapshot(to, SnapshotStatus::Failure);
                }
            }
            if share_floors && group.voters.len() > 1 {
                if let Some(floor) = group.node.raft.prs().iter().map(|(_, pr)| pr.matched).min() {
                    for &to in group.voters.iter().filter(|v| **v != self.node_id) {
                        floors.entry(to).or_default().push((id, floor));
                    }
                }
            }
            let last_index = group.node.raft.raft_log.last_index();
            let mark = std::mem::replace(&mut group.last_index_mark, last_index);
            let mut isr = Vec::with_capacity(group.voters.len());
            for &id in &group.voters {
                let caught_up = id == self.node_id
                    || group.node.raft.prs().get(id).is_some_and(|pr| pr.matched >= mark && pr.recent_active);
                let since = group.caught_up_at.entry(id).or_insert(now);
                if caught_up {
                    *since = now;
                }
                if now.duration_since(*since) <= self.replica_lag_time {
                    isr.push(id);
                }
            }
            if let Some(view) = &group.view {
                view.set_isr(isr);
            }
            let preferred = group.voters.first().copied().unwrap_or(self.node_id);
            // Group 0 has no preferred leader: its voters change at runtime.
            if balance && id != META_GROUP && preferred != self.node_id && group.node.raft.lead_transferee.is_none() {
                let ready = group.node.raft.prs().get(preferred).is_some_and(|pr| pr.matched == last_index);
                if ready {
                    group.node.transfer_leader(preferred);
                }
            }
        }
        for (to, floors) in floors {
            self.transport.send_floors(to, floors);
        }
    }

    /// After a metadata snapshot replaced the state: reload it, connect to its nodes
    /// and host the partitions it places here.
    fn reload_metadata(&mut self) -> Result<(), ReplicationError> {
        let meta = ClusterMeta::load(&self.engine)?;
        self.views.set_cluster(Arc::new(meta.clone()));
        let mut effects = MetaEffects { peers_added: meta.peer_addrs().into_iter().collect(), ..Default::default() };
        let hosted: Vec<u64> = self.groups.keys().copied().filter(|id| *id != META_GROUP).collect();
        let placed: Vec<PartitionMeta> = meta.topics.values().flat_map(|t| t.partitions.iter().cloned()).collect();
        effects.deleted = hosted.into_iter().filter(|uid| !placed.iter().any(|p| p.uid == *uid)).collect();
        effects.created = placed.into_iter().filter(|p| !self.groups.contains_key(&p.uid)).collect();
        if let Some(Group { machine: Machine::Meta(current), .. }) = self.groups.get_mut(&META_GROUP) {
            *current = meta;
        }
        self.apply_effects(effects)
    }

    fn finish(mut self) {
        // What is staged was not acknowledged, but group 0's configuration and deleted
        // groups' clean-ups ride there: write it before stopping.
        let staged = self.round_log.merge(&mut self.pending_log).map_err(ReplicationError::from);
        if let Err(e) = staged.and_then(|()| self.persist_staged_now()) {
            tracing::warn!(error = %e, "the raft log's last writes before stopping failed");
        }
        self.persister.stop();
        for group in self.groups.values_mut() {
            for p in group.pending.drain(..) {
                let _ = p.reply.send(Err(ReplicationError::Shutdown));
            }
        }
        tracing::info!(fsyncs = self.fsyncs, "raft driver stopped");
    }
}

/// Proposes a normal entry holding `payload` as it is: raft-rs' own `propose` takes
/// owned vectors, which would copy every produced batch once more.
fn propose_entry(node: &mut RawNode<GroupStorage>, payload: EntryPayload) -> raft::Result<()> {
    let entry = Entry { context: payload.context, data: payload.data, ..Default::default() };
    let mut message = Message { from: node.raft.id, ..Default::default() };
    message.set_msg_type(MessageType::MsgPropose);
    message.set_entries(vec![entry].into());
    node.raft.step(message)
}

/// A failed write to the Raft log or the store cannot be retried safely, and a node
/// without its driver would only look alive: stop the process so a supervisor restarts
/// it (recovery replays the log).
fn fail(e: ReplicationError) -> ! {
    tracing::error!(error = %e, "raft round failed; exiting");
    std::process::exit(1);
}

fn apply_partition(
    m: &mut PartitionMachine,
    engine: &Engine,
    entry: &Entry,
    wb: &mut WriteBatch<'_>,
) -> Result<Option<Applied>, ReplicationError> {
    if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
        return Ok(None);
    }
    Ok(match command::decode_partition(&entry.context, &entry.data) {
        Some(PartitionCommand::Append(records)) => Some(Applied::Append(m.append(&records, entry.term, wb))),
        Some(PartitionCommand::Trim { log_start_offset }) => {
            // Trim reads the store: write what this round applied so far first, so the
            // result does not depend on how entries were grouped into rounds.
            wb.write_now()?;
            Some(Applied::Trim(m.trim(engine, log_start_offset, wb)?))
        }
        Some(PartitionCommand::Group(cmd)) => {
            if matches!(cmd, groups::GroupCommand::ExpireOffsets { .. }) {
                // Expiry reads the rows: write what this round applied so far first.
                wb.write_now()?;
            }
            groups::apply(engine, m.uid, cmd, wb)?;
            Some(Applied::Group)
        }
        None => {
            tracing::error!(index = entry.index, "undecodable partition command skipped");
            None
        }
    })
}

/// What to do with a membership command at the group 0 leader.
enum Check {
    Propose,
    /// Nothing to change (already so), or refused: answer at once.
    Answer(MetaOutcome),
}

/// Decides whether a membership change can be proposed. Changes that are already in
/// effect answer at once (`Joined` for a member asking to join), so a node may ask to
/// join every time it starts.
fn check_membership(node: &mut RawNode<GroupStorage>, meta: &ClusterMeta, cmd: &MetaCommand) -> Check {
    let refuse = |reason: String| Check::Answer(MetaOutcome::Rejected(MetaRejection::Membership(reason)));
    let conf = node.raft.prs().conf().to_conf_state();
    let voter = |id: u64| conf.voters.contains(&id);
    let learner = |id: u64| conf.learners.contains(&id);
    if node.raft.has_pending_conf() {
        return refuse("another membership change is being applied; retry".into());
    }
    match *cmd {
        MetaCommand::AddNode { id, .. } if voter(id) || learner(id) => {
            Check::Answer(MetaOutcome::Joined(meta.peer_addrs()))
        }
        MetaCommand::PromoteNode { id } if voter(id) => Check::Answer(MetaOutcome::Done),
        MetaCommand::PromoteNode { id } if !learner(id) => {
            refuse(format!("node {id} is not a member; start it with --peers listing the cluster and it joins"))
        }
        MetaCommand::PromoteNode { id } => {
            let matched = node.raft.prs().get(id).map_or(0, |pr| pr.matched);
            let committed = node.raft.raft_log.committed;
            match matched >= committed {
                true => Check::Propose,
                false => refuse(format!("node {id} is still catching up (index {matched} of {committed}); retry")),
            }
        }
        MetaCommand::RemoveNode { id } if !voter(id) && !learner(id) => Check::Answer(MetaOutcome::Done),
        MetaCommand::RemoveNode { id } => {
            let hosted = meta.replicas_on(id);
            if !hosted.is_empty() {
                let shown = hosted.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
                return refuse(format!(
                    "node {id} holds {} partition replicas ({shown}{}); delete or move them first \
                     (partition reassignment is not built yet)",
                    hosted.len(),
                    if hosted.len() > 5 { ", ..." } else { "" }
                ));
            }
            if id == node.raft.id {
                // A leader cannot remove itself safely: hand leadership over first.
                if let Some(&next) = conf.voters.iter().find(|v| **v != id) {
                    node.transfer_leader(next);
                }
                return refuse(format!("node {id} leads the metadata group; leadership is moving, retry"));
            }
            if voter(id) && conf.voters.len() <= 1 {
                return refuse(format!("node {id} is the last voter of the metadata group"));
            }
            Check::Propose
        }
        _ => Check::Propose,
    }
}

/// Applies a committed membership change of group 0: the Raft configuration (persisted
/// with the round's log write and, as of this index, in the metadata rows) and the
/// metadata command carried in the entry's context (peer addresses).
fn apply_membership(
    node: &mut RawNode<GroupStorage>,
    meta: &mut ClusterMeta,
    entry: &Entry,
    wb: &mut WriteBatch<'_>,
    effects: &mut MetaEffects,
    log_batch: &mut LogBatch,
) -> Result<Option<Applied>, ReplicationError> {
    let refused = |reason: String| Ok(Some(Applied::Meta(MetaOutcome::Rejected(MetaRejection::Membership(reason)))));
    let (Ok(cc), Some(cmd)) = (ConfChange::parse_from_bytes(&entry.data), command::decode_meta(&entry.context)) else {
        tracing::error!(index = entry.index, "undecodable configuration change skipped");
        return refused("undecodable configuration change".into());
    };
    let conf = match node.apply_conf_change(&cc) {
        Ok(conf) => conf,
        Err(e) => {
            tracing::warn!(index = entry.index, error = %e, "configuration change refused by raft");
            return refused(e.to_string());
        }
    };
    tracing::info!(voters = ?conf.voters, learners = ?conf.learners, "metadata group configuration changed");
    if node.raft.state == StateRole::Leader && !conf.voters.contains(&node.raft.id) {
        // raft-rs lets a removed leader keep leading and then fails on its own missing
        // progress: step down now (same term, so the hard state stays valid).
        let term = node.raft.term;
        node.raft.become_follower(term, raft::INVALID_ID);
    }
    wb.put_cluster(CONF_STATE_KEY, &conf.write_to_bytes().map_err(|e| ReplicationError::Internal(e.to_string()))?);
    node.mut_store().set_conf_state(conf, log_batch)?;
    Ok(Some(Applied::Meta(meta.apply(cmd, wb, effects))))
}

fn apply_meta(
    meta: &mut ClusterMeta,
    entry: &Entry,
    wb: &mut WriteBatch<'_>,
    effects: &mut MetaEffects,
) -> Option<Applied> {
    if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
        return None;
    }
    match command::decode_meta(&entry.data) {
        Some(cmd) => Some(Applied::Meta(meta.apply(cmd, wb, effects))),
        None => {
            tracing::error!(index = entry.index, "undecodable metadata command skipped");
            None
        }
    }
}

fn flush_outbox(outbox: &mut HashMap<u64, Vec<(u64, Message)>>, transport: &dyn Transport) {
    for (to, messages) in outbox.iter_mut() {
        if !messages.is_empty() {
            transport.send(*to, std::mem::take(messages));
        }
    }
}

fn queue_messages(outbox: &mut HashMap<u64, Vec<(u64, Message)>>, group: u64, messages: Vec<Message>) {
    for m in messages {
        outbox.entry(m.to).or_default().push((group, m));
    }
}

/// The leader clients should use: this node once it leads AND has applied an entry of
/// its own term (before that its high watermark may lag the previous leader's, and a
/// reader must never see offsets go backwards), otherwise the leader Raft knows.
fn serving_leader(group: &Group, node_id: u64) -> u64 {
    let raft = &group.node.raft;
    match raft.state {
        StateRole::Leader if group.applied_term == raft.term => node_id,
        StateRole::Leader => 0,
        _ => raft.leader_id,
    }
}

/// How far a group's log may be compacted given `applied` (durable here): never past
/// what every replica has, since a replica behind a compacted log would need a snapshot
/// (not built yet). The leader knows every replica's matched index; a follower uses the
/// floor its leader last shared (a follower may lead later and must still have the
/// entries a lagging replica needs).
fn replicated_floor(node: &RawNode<GroupStorage>, applied: u64, shared_floor: u64) -> Option<u64> {
    let voters = node.raft.prs().conf().voters().ids().len();
    if voters <= 1 && node.raft.prs().conf().learners().is_empty() {
        return Some(applied);
    }
    let floor = match node.raft.state {
        StateRole::Leader => node.raft.prs().iter().map(|(_, pr)| pr.matched).min()?,
        _ => shared_floor,
    };
    Some(applied.min(floor)).filter(|f| *f > 0)
}

/// Answers the proposals settled by applying `entry`: the one that proposed it (same
/// index and term) gets the result; any older or overwritten one lost its entry.
fn settle(
    pending: &mut VecDeque<Pending>,
    entry: &Entry,
    result: Option<Applied>,
    replies: &mut Vec<(Reply, ApplyResult)>,
) {
    let mut result = result;
    while let Some(p) = pending.front() {
        if p.index > entry.index {
            break;
        }
        let Some(p) = pending.pop_front() else { break };
        let answer = match (p.index == entry.index && p.term == entry.term, result.take()) {
            (true, Some(applied)) => Ok(applied),
            _ => Err(ReplicationError::NotLeader),
        };
        replies.push((p.reply, answer));
    }
}
