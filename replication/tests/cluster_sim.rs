//! An in-process cluster: several `Replication` nodes (each with its own raft-engine and
//! RocksDB) whose Raft messages travel through a simulated network that drops, delays,
//! cuts and isolates. Fault choices come from one seed, printed at the start of every
//! test; `CHRONIK_SEED=<n>` replays them (thread timing is still real).
//!
//! What is proven (Raft paper §5.2 elections, §5.3/§5.4 log matching and leader
//! completeness, thesis §6.2 check-quorum):
//! - a lossy, reordering network still elects one leader and every replica converges
//!   to byte-identical logs;
//! - an isolated leader stops acknowledging, the rest elect a new leader and go on, and
//!   the old leader rejoins and catches up;
//! - a minority partition cannot commit; after healing its uncommitted entries vanish
//!   and all replicas hold the same offsets.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chronik_engine::Engine;
use chronik_replication::command::{self, MetaCommand};
use chronik_replication::transport::{BoxFuture, Transport};
use chronik_replication::{MetaOutcome, MetaRejection, Replication, ReplicationConfig, ReplicationError};
use chronik_tests::raw::TestBatch;
use raft::eraftpb::Message;

/// splitmix64: a tiny seeded generator, enough to choose faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The simulated network shared by all nodes of one test.
struct Net {
    rng: Mutex<Rng>,
    nodes: Mutex<HashMap<u64, Weak<Replication>>>,
    /// Directed links that deliver nothing.
    cut: Mutex<HashSet<(u64, u64)>>,
    drop_per_mille: AtomicU32,
    max_delay_ms: AtomicU64,
    runtime: tokio::runtime::Handle,
}

impl Net {
    fn new(seed: u64) -> Arc<Net> {
        Arc::new(Net {
            rng: Mutex::new(Rng(seed)),
            nodes: Mutex::new(HashMap::new()),
            cut: Mutex::new(HashSet::new()),
            drop_per_mille: AtomicU32::new(0),
            max_delay_ms: AtomicU64::new(0),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    fn node(&self, id: u64) -> Option<Arc<Replication>> {
        self.nodes.lock().expect("nodes").get(&id).and_then(Weak::upgrade)
    }

    fn is_cut(&self, from: u64, to: u64) -> bool {
        self.cut.lock().expect("cut").contains(&(from, to))
    }

    /// Cuts every link between `side` and the other nodes of `all`, both ways.
    fn partition(&self, side: &[u64], all: &[u64]) {
        let mut cut = self.cut.lock().expect("cut");
        for a in side {
            for b in all.iter().filter(|b| !side.contains(b)) {
                cut.insert((*a, *b));
                cut.insert((*b, *a));
            }
        }
    }

    fn heal(&self) {
        self.cut.lock().expect("cut").clear();
    }
}

/// One node's end of the network.
struct Link {
    from: u64,
    net: Arc<Net>,
}

impl Transport for Link {
    fn send(&self, to: u64, messages: Vec<(u64, Message)>) {
        if self.net.is_cut(self.from, to) {
            return;
        }
        let (kept, delay) = {
            let mut rng = self.net.rng.lock().expect("rng");
            let drop = self.net.drop_per_mille.load(Ordering::Relaxed) as u64;
            let kept: Vec<_> = messages.into_iter().filter(|_| rng.next() % 1000 >= drop).collect();
            let max_delay = self.net.max_delay_ms.load(Ordering::Relaxed);
            let delay = if max_delay == 0 { 0 } else { rng.next() % (max_delay + 1) };
            (kept, Duration::from_millis(delay))
        };
        if kept.is_empty() {
            return;
        }
        let net = self.net.clone();
        let from = self.from;
        self.net.runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            // A link cut while the message was in flight loses it.
            if net.is_cut(from, to) {
                return;
            }
            if let Some(target) = net.node(to) {
                let _ = target.deliver(kept).await;
            }
        });
    }

    fn forward_meta(&self, to: u64, data: Vec<u8>) -> BoxFuture<Result<MetaOutcome, ReplicationError>> {
        let net = self.net.clone();
        let from = self.from;
        Box::pin(async move {
            if net.is_cut(from, to) {
                return Err(ReplicationError::NotLeader);
            }
            let target = net.node(to).ok_or(ReplicationError::NotLeader)?;
            let cmd = command::decode_meta(&data).ok_or(ReplicationError::Internal("bad command".into()))?;
            target.propose_meta_here(cmd).await
        })
    }
}

struct Sim {
    seed: u64,
    net: Arc<Net>,
    ids: Vec<u64>,
    nodes: HashMap<u64, Arc<Replication>>,
    _dirs: Vec<tempfile::TempDir>,
    /// Next producer sequence per partition (see [`Sim::append`]).
    sequences: Mutex<HashMap<u64, i32>>,
}

impl Sim {
    fn start(size: u64) -> Sim {
        Sim::start_with(size, |_| {})
    }

    fn start_with(size: u64, configure: impl Fn(&mut ReplicationConfig)) -> Sim {
        let seed = std::env::var("CHRONIK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
        println!("cluster simulation seed: {seed} (replay with CHRONIK_SEED={seed})");
        let net = Net::new(seed);
        let ids: Vec<u64> = (1..=size).collect();
        let mut sim =
            Sim { seed, net, ids: ids.clone(), nodes: HashMap::new(), _dirs: Vec::new(), sequences: Mutex::default() };
        for &id in &ids {
            sim.add_node(id, &ids, &configure);
        }
        sim
    }

    /// Starts node `id` configured as a node of the cluster `all` (whose first three
    /// are the metadata voters).
    fn add_node(&mut self, id: u64, all: &[u64], configure: &impl Fn(&mut ReplicationConfig)) {
        self.start_node(id, configure, |c| c.with_cluster(all));
    }

    /// Starts node `id` as a node joining the running cluster (`--join`).
    fn join_node(&mut self, id: u64, configure: &impl Fn(&mut ReplicationConfig)) {
        let all: Vec<u64> = self.ids.iter().copied().chain([id]).collect();
        self.start_node(id, configure, |c| c.joining(&all));
    }

    fn start_node(
        &mut self,
        id: u64,
        configure: &impl Fn(&mut ReplicationConfig),
        membership: impl FnOnce(ReplicationConfig) -> ReplicationConfig,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Arc::new(Engine::open(&dir.path().join("db")).expect("engine"));
        let mut config = membership(ReplicationConfig::new(id, dir.path().join("raft")));
        config.tick_interval = Duration::from_millis(20);
        configure(&mut config);
        let link = Arc::new(Link { from: id, net: self.net.clone() });
        let node = Arc::new(Replication::start_with(config, engine, link).expect("start node"));
        self.net.nodes.lock().expect("nodes").insert(id, Arc::downgrade(&node));
        self.nodes.insert(id, node);
        self._dirs.push(dir);
    }

    fn node(&self, id: u64) -> &Arc<Replication> {
        &self.nodes[&id]
    }

    /// Creates a one-partition topic replicated on every node; returns the partition uid.
    async fn create_topic(&self, name: &str) -> u64 {
        let create = MetaCommand::CreateTopic {
            name: name.into(),
            topic_id: [1; 16],
            replicas: vec![self.ids.clone()],
            configs: Default::default(),
        };
        let outcome = self.node(self.ids[1]).propose_meta(create).await;
        assert_eq!(outcome.expect("create topic"), MetaOutcome::Done, "seed {}", self.seed);
        // The leader applied it; wait until every node did.
        for _ in 0..1000 {
            let uids: Vec<Option<u64>> = self
                .ids
                .iter()
                .map(|id| self.node(*id).cluster().topics.get(name).map(|t| t.partitions[0].uid))
                .collect();
            if let Some(Some(uid)) = uids.first().filter(|_| uids.iter().all(Option::is_some)) {
                return *uid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("topic {name} not applied everywhere; seed {}", self.seed);
    }

    /// The node that leads `uid` and serves it, among `among`.
    fn leader(&self, uid: u64, among: &[u64]) -> Option<u64> {
        among.iter().copied().find(|id| self.node(*id).partition(uid).is_some_and(|v| v.leader() == Some(*id)))
    }

    async fn wait_leader(&self, uid: u64, among: &[u64]) -> u64 {
        for _ in 0..1500 {
            if let Some(leader) = self.leader(uid, among) {
                return leader;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no leader for {uid} among {among:?}; seed {}", self.seed);
    }

    /// Appends one batch of `count` records through whichever node of `among` leads,
    /// retrying across elections; returns its base offset. It writes as an idempotent
    /// producer: an answer lost with a leader does not mean the entry was, and a retry
    /// of a batch that did commit gets the first copy's offset instead of a second copy.
    async fn append(&self, uid: u64, among: &[u64], count: usize) -> i64 {
        let values = vec![b"record".as_slice(); count];
        let sequence = *self.sequences.lock().expect("sequences").get(&uid).unwrap_or(&0);
        let batch = TestBatch { producer_id: 1, producer_epoch: 0, base_sequence: sequence, ..TestBatch::default() };
        let records = batch.encode(&values);
        for _ in 0..300 {
            let leader = self.wait_leader(uid, among).await;
            let Ok(pending) = self.node(leader).submit_append(uid, records.clone()).await else { continue };
            match tokio::time::timeout(Duration::from_secs(5), pending).await {
                Ok(Ok(outcome)) => {
                    self.sequences.lock().expect("sequences").insert(uid, sequence + count as i32);
                    return outcome.base_offset;
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        panic!("append never committed; seed {}", self.seed);
    }

    /// Waits until every node of `among` applied up to `high_watermark`, then checks
    /// their logs are byte-identical.
    async fn assert_converged(&self, uid: u64, among: &[u64], high_watermark: i64) {
        for _ in 0..3000 {
            if among
                .iter()
                .all(|id| self.node(*id).partition(uid).is_some_and(|v| v.high_watermark() >= high_watermark))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let logs: Vec<(u64, i64, Vec<u8>)> = among
            .iter()
            .map(|id| {
                let node = self.node(*id);
                let mut out = Vec::new();
                let read = node.read(uid, 0, usize::MAX, true, &mut out).expect("read replica");
                (*id, read.high_watermark, out)
            })
            .collect();
        for (id, hw, log) in &logs {
            assert_eq!(*hw, high_watermark, "node {id} high watermark; seed {}", self.seed);
            assert_eq!(log, &logs[0].2, "node {id} log differs from node {}; seed {}", logs[0].0, self.seed);
        }
    }

    fn shutdown(self) {
        for node in self.nodes.values() {
            node.shutdown();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_reordering_network_still_elects_and_converges() {
    let sim = Sim::start(3);
    sim.net.drop_per_mille.store(100, Ordering::Relaxed);
    sim.net.max_delay_ms.store(15, Ordering::Relaxed);
    let uid = sim.create_topic("lossy").await;
    let mut next = 0;
    for i in 0..40 {
        let base = sim.append(uid, &sim.ids, 1 + i % 3).await;
        assert_eq!(base, next, "offsets stay dense; seed {}", sim.seed);
        next = base + 1 + (i % 3) as i64;
    }
    sim.assert_converged(uid, &sim.ids.clone(), next).await;
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_steps_down_and_rejoins() {
    let sim = Sim::start(3);
    let uid = sim.create_topic("isolate").await;
    let mut next = sim.append(uid, &sim.ids, 5).await + 5;
    let old = sim.wait_leader(uid, &sim.ids).await;
    let old_epoch = sim.node(old).partition(uid).expect("view").leader_epoch();
    let rest: Vec<u64> = sim.ids.iter().copied().filter(|id| *id != old).collect();
    sim.net.partition(&[old], &sim.ids);

    // The isolated leader cannot commit: its proposal fails instead of being acknowledged.
    let values = vec![b"lost".as_slice(); 3];
    let stranded = TestBatch::default().encode(&values);
    if let Ok(pending) = sim.node(old).submit_append(uid, stranded.clone()).await {
        let outcome = tokio::time::timeout(Duration::from_secs(30), pending).await;
        assert!(
            matches!(outcome, Ok(Err(_))),
            "an isolated leader must not acknowledge: {outcome:?}; seed {}",
            sim.seed
        );
    }

    // The majority elects a new leader in a later term and keeps writing.
    let new = sim.wait_leader(uid, &rest).await;
    assert_ne!(new, old);
    assert!(sim.node(new).partition(uid).expect("view").leader_epoch() > old_epoch);
    for _ in 0..10 {
        next = sim.append(uid, &rest, 2).await + 2;
    }

    // Rejoin: the old leader catches up to the same log.
    sim.net.heal();
    sim.assert_converged(uid, &sim.ids.clone(), next).await;
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_partition_cannot_commit_and_converges_after_healing() {
    let sim = Sim::start(5);
    let uid = sim.create_topic("split").await;
    let mut next = sim.append(uid, &sim.ids, 4).await + 4;
    let leader = sim.wait_leader(uid, &sim.ids).await;
    // The leader and one follower on the minority side, three nodes on the other.
    let minority: Vec<u64> = vec![leader, sim.ids.iter().copied().find(|id| *id != leader).expect("follower")];
    let majority: Vec<u64> = sim.ids.iter().copied().filter(|id| !minority.contains(id)).collect();
    sim.net.partition(&minority, &sim.ids);

    let values = vec![b"minority".as_slice(); 2];
    let stranded = TestBatch::default().encode(&values);
    if let Ok(pending) = sim.node(leader).submit_append(uid, stranded.clone()).await {
        let outcome = tokio::time::timeout(Duration::from_secs(30), pending).await;
        assert!(matches!(outcome, Ok(Err(_))), "a minority must not acknowledge: {outcome:?}; seed {}", sim.seed);
    }
    for _ in 0..10 {
        next = sim.append(uid, &majority, 3).await + 3;
    }

    sim.net.heal();
    sim.assert_converged(uid, &sim.ids.clone(), next).await;
    sim.shutdown();
}

/// Waits until `check` holds, polling; panics with `what` after 15 s.
async fn eventually(seed: u64, what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not reached; seed {seed}");
}

/// Proposes `cmd` through `node`, retrying refusals that say to retry (a learner still
/// catching up, leadership moving).
async fn membership(node: &Replication, cmd: MetaCommand) -> MetaOutcome {
    for _ in 0..100 {
        match node.propose_meta(cmd.clone()).await.expect("membership change") {
            MetaOutcome::Rejected(MetaRejection::Membership(reason)) if reason.contains("retry") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            outcome => return outcome,
        }
    }
    panic!("{cmd:?} kept asking to retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_from_a_snapshot_then_is_promoted_and_removed() {
    // A short log-compaction interval: group 0's log is compacted before node 4 joins,
    // so node 4 can only catch up from a snapshot.
    let fast_gc = |c: &mut ReplicationConfig| c.log_gc_interval = Duration::from_millis(100);
    let mut sim = Sim::start_with(3, fast_gc);
    let uid = sim.create_topic("before-join").await;
    sim.append(uid, &sim.ids, 5).await;
    for i in 0..20 {
        let cmd = MetaCommand::AlterTopicConfigs {
            name: "before-join".into(),
            replace: false,
            set: [("retention.ms".to_string(), format!("{}", 1000 + i))].into(),
            delete: Vec::new(),
        };
        assert_eq!(sim.node(1).propose_meta(cmd).await.expect("alter"), MetaOutcome::Done);
    }
    let seed = sim.seed;
    // (Only leaders compact here: this simulated network does not carry the floors a
    // leader shares with its followers.)
    let nodes: Vec<_> = sim.ids.iter().map(|id| sim.node(*id).clone()).collect();
    eventually(seed, "group 0's log compacted", || {
        nodes.iter().any(|node| node.first_log_index(0).is_none_or(|first| first > 20))
    })
    .await;

    let all = [1, 2, 3, 4];
    sim.join_node(4, &fast_gc);
    let joined = sim.node(4).join("node-4:9093", &[1, 2, 3]).await.expect("join");
    assert!(matches!(joined, MetaOutcome::Joined(_)), "{joined:?}; seed {seed}");
    let node4 = sim.node(4).clone();
    eventually(seed, "node 4 has the metadata", || {
        node4
            .cluster()
            .topics
            .get("before-join")
            .is_some_and(|t| t.configs.get("retention.ms").map(String::as_str) == Some("1019"))
    })
    .await;
    assert!(node4.snapshots_installed() >= 1, "node 4 caught up from a snapshot; seed {seed}");
    assert_eq!(node4.cluster().peers.get(&4).map(String::as_str), Some("node-4:9093"));
    let node1 = sim.node(1).clone();
    eventually(seed, "node 4 is a learner", || node1.members().1.contains(&4)).await;
    // Joining again (a restart) changes nothing.
    let again = sim.node(4).join("node-4:9093", &[1, 2, 3]).await.expect("join");
    assert!(
        matches!(&again, MetaOutcome::Joined(addrs) if addrs.get(&4).map(String::as_str) == Some("node-4:9093")),
        "{again:?}"
    );

    assert_eq!(membership(sim.node(2), MetaCommand::PromoteNode { id: 4 }).await, MetaOutcome::Done);
    for id in all {
        let node = sim.node(id).clone();
        eventually(seed, "node 4 is a voter everywhere", || node.members().0.contains(&4)).await;
    }

    // Node 4 hosts a new partition and replicates it.
    let create = MetaCommand::CreateTopic {
        name: "after-join".into(),
        topic_id: [2; 16],
        replicas: vec![vec![4, 1, 2]],
        configs: Default::default(),
    };
    assert_eq!(sim.node(3).propose_meta(create).await.expect("create"), MetaOutcome::Done);
    eventually(seed, "node 4 opened its partition", || node4.cluster().topics.contains_key("after-join")).await;
    let new_uid = node4.cluster().topics["after-join"].partitions[0].uid;
    let base = sim.append(new_uid, &[4, 1, 2], 7).await;
    sim.assert_converged(new_uid, &[4, 1, 2], base + 7).await;

    // A node holding replicas cannot be removed; once they are gone it can.
    let refused = membership(sim.node(1), MetaCommand::RemoveNode { id: 4 }).await;
    let MetaOutcome::Rejected(MetaRejection::Membership(reason)) = refused else { panic!("{refused:?}") };
    assert!(reason.contains("after-join-0"), "{reason}");
    let delete = MetaCommand::DeleteTopic { name: "after-join".into() };
    assert_eq!(sim.node(1).propose_meta(delete).await.expect("delete"), MetaOutcome::Done);
    assert_eq!(membership(sim.node(1), MetaCommand::RemoveNode { id: 4 }).await, MetaOutcome::Done);
    for id in [1, 2, 3] {
        let node = sim.node(id).clone();
        eventually(seed, "node 4 is gone", || {
            let (voters, learners) = node.members();
            voters == [1, 2, 3] && learners.is_empty() && !node.cluster().nodes.contains_key(&4)
        })
        .await;
    }
    // The remaining three still commit metadata and data with node 4 stopped.
    sim.nodes.remove(&4).expect("node 4").shutdown();
    let cmd = MetaCommand::AlterTopicConfigs {
        name: "before-join".into(),
        replace: false,
        set: [("retention.ms".to_string(), "5".to_string())].into(),
        delete: Vec::new(),
    };
    assert_eq!(sim.node(2).propose_meta(cmd).await.expect("alter after removal"), MetaOutcome::Done);
    let next = sim.append(uid, &sim.ids, 1).await;
    sim.assert_converged(uid, &sim.ids.clone(), next + 1).await;
    sim.shutdown();
}
