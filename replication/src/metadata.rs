//! The metadata group's state machine: topics, their partitions and configs, and
//! id counters. Rows live in the `cluster` column family as JSON; the whole state is
//! also held in memory as an immutable [`ClusterMeta`] that readers share.

use std::collections::BTreeMap;
use std::sync::Arc;

use chronik_engine::{Engine, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::command::MetaCommand;

const TOPIC_PREFIX: &[u8] = b"topic/";
const NODE_PREFIX: &[u8] = b"node/";
const LEADER_PREFIX: &[u8] = b"leader/";
/// RPC addresses of nodes that joined after start-up (the `--peers` list has the rest).
const PEER_PREFIX: &[u8] = b"peer/";
/// Group 0's Raft configuration (protobuf `ConfState`) as of the applied index, written
/// with each configuration change so a snapshot of these rows is self-consistent.
pub const CONF_STATE_KEY: &[u8] = b"raft/conf_state";
const CLUSTER_ID_KEY: &[u8] = b"cluster_id";
const NEXT_UID_KEY: &[u8] = b"next/uid";
const NEXT_PRODUCER_ID_KEY: &[u8] = b"next/producer_id";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// Node-wide id of the partition: its Raft group id and its key prefix in storage.
    pub uid: u64,
    pub replicas: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: [u8; 16],
    pub partitions: Vec<PartitionMeta>,
    /// Only the configs set on the topic; defaults come from the broker.
    pub configs: BTreeMap<String, String>,
}

/// A node as it registered itself through group 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: u64,
    /// Kafka address given to clients.
    pub kafka_host: String,
    pub kafka_port: u16,
    pub rack: Option<String>,
    pub dc: Option<String>,
    /// Where other nodes reach this node's Raft and admin gRPC (its `--peers` entry), so
    /// a node that joined with a partial peer list learns every address.
    #[serde(default)]
    pub rpc_addr: Option<String>,
}

/// A partition's leader as last reported by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub uid: u64,
    pub leader: u64,
    /// The Raft term (leader epoch).
    pub epoch: u64,
    pub isr: Vec<u64>,
}

/// A consistent view of the cluster metadata.
#[derive(Debug, Clone, Default)]
pub struct ClusterMeta {
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    /// Registered nodes by id.
    pub nodes: BTreeMap<u64, NodeInfo>,
    /// Reported partition leaders by partition uid.
    pub leaders: BTreeMap<u64, LeaderRecord>,
    /// RPC addresses of nodes added at runtime, by id.
    pub peers: BTreeMap<u64, String>,
    /// The id every node reports to clients, once a node has set it.
    pub cluster_id: Option<String>,
    next_uid: u64,
    next_producer_id: i64,
}

/// What applying a metadata command produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaOutcome {
    Done,
    /// A node is a member of group 0; here is where every node is (id -> RPC address),
    /// so a node that joined knowing only some of them can reach them all.
    Joined(BTreeMap<u64, String>),
    ProducerId(i64),
    Rejected(MetaRejection),
}

/// Why the metadata group refused a command (decided deterministically at apply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaRejection {
    TopicExists,
    UnknownTopic,
    InvalidPartitions(String),
    /// A membership change that cannot be made, and why.
    Membership(String),
}

/// Partition groups that appeared or vanished because of a command.
#[derive(Debug, Default)]
pub struct MetaEffects {
    pub created: Vec<PartitionMeta>,
    pub deleted: Vec<u64>,
    /// Nodes to open (id, RPC address) or close connections to.
    pub peers_added: Vec<(u64, String)>,
    pub peers_removed: Vec<u64>,
}

impl ClusterMeta {
    pub fn load(engine: &Engine) -> chronik_engine::Result<ClusterMeta> {
        let mut meta = ClusterMeta { next_uid: 1, next_producer_id: 1000, ..Default::default() };
        for (_, value) in engine.cluster_scan(TOPIC_PREFIX)? {
            if let Ok(topic) = serde_json::from_slice::<TopicMeta>(&value) {
                meta.topics.insert(topic.name.clone(), Arc::new(topic));
            }
        }
        for (_, value) in engine.cluster_scan(NODE_PREFIX)? {
            if let Ok(node) = serde_json::from_slice::<NodeInfo>(&value) {
                meta.nodes.insert(node.id, node);
            }
        }
        for (_, value) in engine.cluster_scan(LEADER_PREFIX)? {
            if let Ok(record) = serde_json::from_slice::<LeaderRecord>(&value) {
                meta.leaders.insert(record.uid, record);
            }
        }
        for (key, value) in engine.cluster_scan(PEER_PREFIX)? {
            if let (Some(id), Ok(addr)) = (decode_u64(&key[PEER_PREFIX.len()..]), String::from_utf8(value)) {
                meta.peers.insert(id, addr);
            }
        }
        if let Some(raw) = engine.cluster_get(CLUSTER_ID_KEY)? {
            meta.cluster_id = String::from_utf8(raw).ok();
        }
        if let Some(raw) = engine.cluster_get(NEXT_UID_KEY)? {
            meta.next_uid = decode_u64(&raw).unwrap_or(meta.next_uid);
        }
        if let Some(raw) = engine.cluster_get(NEXT_PRODUCER_ID_KEY)? {
            meta.next_producer_id = decode_u64(&raw).map_or(meta.next_producer_id, |v| v as i64);
        }
        Ok(meta)
    }

    /// The RPC address of every node known here: registered nodes and joined ones.
    pub fn peer_addrs(&self) -> BTreeMap<u64, String> {
        let mut addrs = self.peers.clone();
        for node in self.nodes.values() {
            if let Some(addr) = &node.rpc_addr {
                addrs.insert(node.id, addr.clone());
            }
        }
        addrs
    }

    /// Partitions with a replica on node `id`, as `topic-partition` names.
    pub fn replicas_on(&self, id: u64) -> Vec<String> {
        let mut found = Vec::new();
        for topic in self.topics.values() {
            for (index, p) in topic.partitions.iter().enumerate() {
                if p.replicas.contains(&id) {
                    found.push(format!("{}-{index}", topic.name));
                }
            }
        }
        found
    }

    pub fn topic_by_uid(&self, uid: u64) -> Option<(&Arc<TopicMeta>, i32)> {
        self.topics.values().find_map(|t| {
            let index = t.partitions.iter().position(|p| p.uid == uid)?;
            Some((t, index as i32))
        })
    }

    /// Applies `command`, recording rows in `wb` and the groups to start or stop in `effects`.
    pub fn apply(&mut self, command: MetaCommand, wb: &mut WriteBatch<'_>, effects: &mut MetaEffects) -> MetaOutcome {
        match command {
            MetaCommand::CreateTopic { name, topic_id, replicas, configs } => {
                if self.topics.contains_key(&name) {
                    return MetaOutcome::Rejected(MetaRejection::TopicExists);
                }
                if replicas.is_empty() {
                    return MetaOutcome::Rejected(MetaRejection::InvalidPartitions("a topic needs a partition".into()));
                }
                let partitions = self.new_partitions(replicas, wb, effects);
                let topic = TopicMeta { name: name.clone(), id: topic_id, partitions, configs };
                self.put_topic(topic, wb);
                MetaOutcome::Done
            }
            MetaCommand::DeleteTopic { name } => {
                let Some(topic) = self.topics.remove(&name) else {
                    return MetaOutcome::Rejected(MetaRejection::UnknownTopic);
                };
                wb.delete_cluster(&topic_key(&name));
                for p in &topic.partitions {
                    if self.leaders.remove(&p.uid).is_some() {
                        wb.delete_cluster(&leader_key(p.uid));
                    }
                    wb.delete_partition(p.uid);
                    effects.deleted.push(p.uid);
                }
                MetaOutcome::Done
            }
            MetaCommand::CreatePartitions { name, current_count, replicas } => {
                let Some(topic) = self.topics.get(&name) else {
                    return MetaOutcome::Rejected(MetaRejection::UnknownTopic);
                };
                let mut topic = TopicMeta::clone(topic);
                if replicas.is_empty() || topic.partitions.len() != current_count {
                    return MetaOutcome::Rejected(MetaRejection::InvalidPartitions(format!(
                        "topic already has {} partitions",
                        topic.partitions.len()
                    )));
                }
                topic.partitions.extend(self.new_partitions(replicas, wb, effects));
                self.put_topic(topic, wb);
                MetaOutcome::Done
            }
            MetaCommand::AlterTopicConfigs { name, replace, set, delete } => {
                let Some(topic) = self.topics.get(&name) else {
                    return MetaOutcome::Rejected(MetaRejection::UnknownTopic);
                };
                let mut topic = TopicMeta::clone(topic);
                if replace {
                    topic.configs.clear();
                }
                for key in delete {
                    topic.configs.remove(&key);
                }
                topic.configs.extend(set);
                self.put_topic(topic, wb);
                MetaOutcome::Done
            }
            MetaCommand::RegisterNode(node) => {
                if let Some(addr) = &node.rpc_addr {
                    effects.peers_added.push((node.id, addr.clone()));
                }
                let key = [NODE_PREFIX, &node.id.to_be_bytes()].concat();
                wb.put_cluster(&key, &serde_json::to_vec(&node).unwrap_or_default());
                self.nodes.insert(node.id, node);
                MetaOutcome::Done
            }
            MetaCommand::ReportLeaders(records) => {
                for record in records {
                    let hosted = self.topic_by_uid(record.uid).is_some();
                    let newer = self.leaders.get(&record.uid).is_none_or(|r| r.epoch <= record.epoch);
                    if hosted && newer {
                        wb.put_cluster(&leader_key(record.uid), &serde_json::to_vec(&record).unwrap_or_default());
                        self.leaders.insert(record.uid, record);
                    }
                }
                MetaOutcome::Done
            }
            MetaCommand::InitCluster { cluster_id } => {
                if self.cluster_id.is_none() {
                    wb.put_cluster(CLUSTER_ID_KEY, cluster_id.as_bytes());
                    self.cluster_id = Some(cluster_id);
                }
                MetaOutcome::Done
            }
            MetaCommand::AddNode { id, rpc_addr } => {
                wb.put_cluster(&peer_key(id), rpc_addr.as_bytes());
                effects.peers_added.push((id, rpc_addr.clone()));
                self.peers.insert(id, rpc_addr);
                MetaOutcome::Joined(self.peer_addrs())
            }
            MetaCommand::PromoteNode { .. } => MetaOutcome::Done,
            MetaCommand::RemoveNode { id } => {
                wb.delete_cluster(&peer_key(id));
                wb.delete_cluster(&[NODE_PREFIX, &id.to_be_bytes()].concat());
                self.peers.remove(&id);
                self.nodes.remove(&id);
                effects.peers_removed.push(id);
                MetaOutcome::Done
            }
            MetaCommand::AllocateProducerId => {
                let id = self.next_producer_id;
                self.next_producer_id += 1;
                wb.put_cluster(NEXT_PRODUCER_ID_KEY, &(self.next_producer_id as u64).to_be_bytes());
                MetaOutcome::ProducerId(id)
            }
        }
    }

    fn new_partitions(
        &mut self,
        replicas: Vec<Vec<u64>>,
        wb: &mut WriteBatch<'_>,
        effects: &mut MetaEffects,
    ) -> Vec<PartitionMeta> {
        let partitions: Vec<PartitionMeta> = replicas
            .into_iter()
            .map(|replicas| {
                let uid = self.next_uid;
                self.next_uid += 1;
                PartitionMeta { uid, replicas }
            })
            .collect();
        wb.put_cluster(NEXT_UID_KEY, &self.next_uid.to_be_bytes());
        effects.created.extend(partitions.iter().cloned());
        partitions
    }

    fn put_topic(&mut self, topic: TopicMeta, wb: &mut WriteBatch<'_>) {
        // Serializing plain data cannot fail.
        wb.put_cluster(&topic_key(&topic.name), &serde_json::to_vec(&topic).unwrap_or_default());
        self.topics.insert(topic.name.clone(), Arc::new(topic));
    }
}

fn topic_key(name: &str) -> Vec<u8> {
    [TOPIC_PREFIX, name.as_bytes()].concat()
}

fn peer_key(id: u64) -> Vec<u8> {
    [PEER_PREFIX, &id.to_be_bytes()].concat()
}

fn leader_key(uid: u64) -> Vec<u8> {
    [LEADER_PREFIX, &uid.to_be_bytes()].concat()
}

fn decode_u64(raw: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(raw.try_into().ok()?))
}
