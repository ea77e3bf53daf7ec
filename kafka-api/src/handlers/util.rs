//! Small helpers shared by handlers.

use std::collections::BTreeMap;
use std::sync::Arc;

use chronik_replication::command::MetaCommand;
use chronik_replication::topic_config;
use chronik_replication::{placement, MetaOutcome, NodeInfo, TopicMeta};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::errors;

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

/// Kafka's topic name rule: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub(crate) fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The partition's uid, or UNKNOWN_TOPIC_OR_PARTITION.
pub(crate) fn partition_uid(topic: Option<&Arc<TopicMeta>>, partition: i32) -> Result<u64, ResponseError> {
    let topic = topic.ok_or(ResponseError::UnknownTopicOrPartition)?;
    usize::try_from(partition)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .map(|p| p.uid)
        .ok_or(ResponseError::UnknownTopicOrPartition)
}

/// The cluster id: the one group 0 agreed on, or this node's own before that.
pub(crate) fn cluster_id(broker: &Broker) -> String {
    broker.replication.cluster().cluster_id.clone().unwrap_or_else(|| broker.config.cluster_id.clone())
}

/// The nodes replicas can be placed on: every registered node, and this one. This node
/// is always described at the Kafka address it was started with: its registration
/// catches up through the metadata group, and until then (a restored or moved node, or a
/// metadata group without quorum) the recorded address may be another process's.
pub(crate) fn known_nodes(broker: &Broker) -> Vec<NodeInfo> {
    let mut nodes: Vec<NodeInfo> = broker.replication.cluster().nodes.values().cloned().collect();
    let me = broker.config.node_id as u64;
    let (host, port) = (broker.config.advertised_host.clone(), broker.config.advertised_port as u16);
    match nodes.iter_mut().find(|n| n.id == me) {
        Some(node) => (node.kafka_host, node.kafka_port) = (host, port),
        None => {
            nodes.push(NodeInfo { id: me, kafka_host: host, kafka_port: port, rack: None, dc: None, rpc_addr: None })
        }
    }
    nodes
}

/// Checks a manual replica assignment: every partition has the same number of distinct
/// replicas, all on known nodes.
pub(crate) fn check_assignment(broker: &Broker, assignment: &[Vec<i32>]) -> Result<Vec<Vec<u64>>, String> {
    let nodes = known_nodes(broker);
    let width = assignment.first().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(assignment.len());
    for (i, replicas) in assignment.iter().enumerate() {
        let mut ids: Vec<u64> = Vec::with_capacity(replicas.len());
        for &r in replicas {
            let Some(node) = nodes.iter().find(|n| n.id as i64 == r as i64) else {
                return Err(format!("partition {i}: broker {r} is not a node of this cluster"));
            };
            if ids.contains(&node.id) {
                return Err(format!("partition {i}: broker {r} is listed twice"));
            }
            ids.push(node.id);
        }
        if ids.is_empty() || ids.len() != width {
            return Err("every partition needs the same, non-zero number of replicas".into());
        }
        out.push(ids);
    }
    Ok(out)
}

/// Creates a topic through the metadata group; returns the Kafka error if refused.
/// Replicas come from `assignment` when given, otherwise from rack-aware placement.
pub(crate) async fn create_topic(
    broker: &Broker,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
    validate_only: bool,
    assignment: Option<Vec<Vec<u64>>>,
) -> Result<(), (ResponseError, Option<String>)> {
    if !valid_topic_name(name) {
        return Err((ResponseError::InvalidTopicException, Some(format!("invalid topic name {name:?}"))));
    }
    if partitions < 1 {
        return Err((ResponseError::InvalidPartitions, Some("number of partitions must be at least 1".into())));
    }
    let nodes = known_nodes(broker);
    if replication_factor < 1 || replication_factor as usize > nodes.len() {
        return Err((
            ResponseError::InvalidReplicationFactor,
            Some(format!("replication factor must be between 1 and {} (live nodes)", nodes.len())),
        ));
    }
    for (key, value) in &configs {
        topic_config::validate(key, value).map_err(|m| (ResponseError::InvalidConfig, Some(m)))?;
    }
    if validate_only {
        return match broker.replication.cluster().topics.contains_key(name) {
            true => Err((ResponseError::TopicAlreadyExists, None)),
            false => Ok(()),
        };
    }
    let replicas = match assignment {
        Some(replicas) => replicas,
        None => {
            let start = broker.replication.cluster().topics.values().map(|t| t.partitions.len()).sum();
            placement::assign(&nodes, partitions as usize, replication_factor as usize, start)
        }
    };
    let command =
        MetaCommand::CreateTopic { name: name.to_string(), topic_id: *uuid_v4().as_bytes(), replicas, configs };
    propose_meta(broker, command).await
}

/// Proposes a metadata command and maps a refusal to its Kafka error.
pub(crate) async fn propose_meta(broker: &Broker, command: MetaCommand) -> Result<(), (ResponseError, Option<String>)> {
    match broker.replication.propose_meta(command).await {
        Ok(MetaOutcome::Rejected(r)) => Err((errors::meta_rejection(&r), None)),
        Ok(_) => Ok(()),
        Err(e) => Err((errors::replication(&e), Some(e.to_string()))),
    }
}

/// A random (version 4) UUID for a new topic; randomness belongs to the proposer.
pub(crate) fn uuid_v4() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

/// Waits until the partitions of `name` have leaders here (a new topic's groups
/// elect themselves right after creation), for at most `timeout`.
pub(crate) async fn await_leaders(broker: &Broker, name: &str, timeout: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let ready = broker.replication.cluster().topics.get(name).is_some_and(|t| {
            t.partitions.iter().all(|p| broker.replication.partition(p.uid).is_some_and(|v| v.leader().is_some()))
        });
        if ready || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Checks a request's `current_leader_epoch` (-1: not given) against ours.
pub(crate) fn check_leader_epoch(requested: i32, ours: i32) -> Result<(), ResponseError> {
    match requested {
        -1 => Ok(()),
        r if r > ours => Err(ResponseError::UnknownLeaderEpoch),
        r if r < ours => Err(ResponseError::FencedLeaderEpoch),
        _ => Ok(()),
    }
}

/// The uid and view of a partition this node leads, or the Kafka error to answer.
pub(crate) fn leader_view(
    broker: &Broker,
    topic: Option<&Arc<TopicMeta>>,
    partition: i32,
) -> Result<(u64, Arc<chronik_replication::PartitionView>), ResponseError> {
    let uid = partition_uid(topic, partition)?;
    let view = broker.replication.partition(uid).ok_or(ResponseError::NotLeaderOrFollower)?;
    if view.leader() != Some(broker.config.node_id as u64) {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    Ok((uid, view))
}

/// Names that occur more than once in a request.
pub(crate) fn duplicates<'a>(names: impl IntoIterator<Item = &'a str>) -> std::collections::HashSet<&'a str> {
    let mut seen = std::collections::HashSet::new();
    names.into_iter().filter(|n| !seen.insert(*n)).collect()
}

/// DescribeConfigs `config_type` of a topic or broker config key (STRING when unknown).
pub(crate) fn config_type(key: &str) -> i8 {
    const STRING: i8 = 2;
    const INT: i8 = 3;
    const LONG: i8 = 5;
    const LIST: i8 = 7;
    match key {
        k if k.ends_with("retention.ms") || k.ends_with("retention.bytes") => LONG,
        "max.message.bytes" | "message.max.bytes" | "min.insync.replicas" => INT,
        k if k.ends_with("cleanup.policy") => LIST,
        _ => STRING,
    }
}

/// Kafka's `config_source` values.
pub(crate) const SOURCE_TOPIC: i8 = 1;
pub(crate) const SOURCE_STATIC_BROKER: i8 = 4;
pub(crate) const SOURCE_DEFAULT: i8 = 5;

/// A deadline-bounded wait for the leaders of several topics.
pub(crate) async fn await_all_leaders(broker: &Broker, names: &[String], timeout: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    for name in names {
        await_leaders(broker, name, deadline.saturating_duration_since(tokio::time::Instant::now())).await;
    }
}

#[cfg(test)]
mod helper_tests {
    use super::*;

    #[test]
    fn leader_epoch_checks() {
        assert_eq!(check_leader_epoch(-1, 5), Ok(()));
        assert_eq!(check_leader_epoch(5, 5), Ok(()));
        assert_eq!(check_leader_epoch(6, 5), Err(ResponseError::UnknownLeaderEpoch));
        assert_eq!(check_leader_epoch(4, 5), Err(ResponseError::FencedLeaderEpoch));
    }

    #[test]
    fn finds_duplicates() {
        let d = duplicates(["a", "b", "a", "c", "a"]);
        assert_eq!(d.len(), 1);
        assert!(d.contains("a"));
    }

    #[test]
    fn config_types() {
        assert_eq!(config_type("retention.ms"), 5);
        assert_eq!(config_type("log.retention.bytes"), 5);
        assert_eq!(config_type("max.message.bytes"), 3);
        assert_eq!(config_type("cleanup.policy"), 7);
        assert_eq!(config_type("other"), 2);
    }
}
