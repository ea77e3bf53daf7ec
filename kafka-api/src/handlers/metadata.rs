//! Metadata (key 3): brokers, and topics with their partitions' leaders and epochs.
//! Unknown topics are created when auto-creation is on and the client allows it.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};

use super::util;
use crate::broker::Broker;
use crate::coordinator::OFFSETS_TOPIC;

pub(crate) async fn handle(broker: &Arc<Broker>, version: i16, request: MetadataRequest) -> MetadataResponse {
    let config = &broker.config;
    // From v10 a topic can be asked for by id alone (KIP-848 clients do); an unknown id
    // answers UNKNOWN_TOPIC_ID.
    let mut unknown_ids = Vec::new();
    let requested: Option<Vec<String>> = request.topics.map(|topics| {
        let cluster = broker.replication.cluster();
        topics
            .into_iter()
            .filter_map(|t| match t.name {
                Some(name) => Some(name.0.as_str().to_string()),
                None => {
                    let found = cluster.topics.values().find(|m| uuid::Uuid::from_bytes(m.id) == t.topic_id);
                    if found.is_none() {
                        unknown_ids.push(t.topic_id);
                    }
                    found.map(|m| m.name.clone())
                }
            })
            .collect()
    });
    // Before v4 a client cannot opt out of auto-creation.
    let allow_create = config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    if let (Some(names), true) = (&requested, allow_create) {
        for name in names {
            if !broker.replication.cluster().topics.contains_key(name) && util::valid_topic_name(name) {
                let created = util::create_topic(
                    broker,
                    name,
                    config.num_partitions,
                    config.default_replication_factor,
                    Default::default(),
                    false,
                    None,
                )
                .await;
                if created.is_ok() {
                    util::await_leaders(broker, name, Duration::from_secs(5)).await;
                }
            }
        }
    }

    let cluster = broker.replication.cluster();
    let names: Vec<String> = requested.unwrap_or_else(|| cluster.topics.keys().cloned().collect());
    let mut response = MetadataResponse::default();
    response.brokers = util::known_nodes(broker)
        .into_iter()
        .map(|n| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(n.id as i32))
                .with_host(util::str_bytes(&n.kafka_host))
                .with_port(n.kafka_port as i32)
                .with_rack(n.rack.as_deref().map(util::str_bytes))
        })
        .collect();
    response.cluster_id = Some(util::str_bytes(&util::cluster_id(broker)));
    response.controller_id = BrokerId(broker.replication.controller().map_or(-1, |c| c as i32));
    response.topics = names
        .iter()
        .map(|name| {
            let mut topic = MetadataResponseTopic::default().with_name(Some(util::topic_name(name)));
            let Some(meta) = cluster.topics.get(name) else {
                let code = if util::valid_topic_name(name) {
                    ResponseError::UnknownTopicOrPartition
                } else {
                    ResponseError::InvalidTopicException
                };
                return topic.with_error_code(code.code());
            };
            topic.topic_id = uuid::Uuid::from_bytes(meta.id);
            topic.is_internal = name == OFFSETS_TOPIC;
            topic.partitions = meta
                .partitions
                .iter()
                .enumerate()
                .map(|(index, p)| {
                    let ids = |nodes: &[u64]| nodes.iter().map(|r| BrokerId(*r as i32)).collect::<Vec<_>>();
                    let mut partition = MetadataResponsePartition::default()
                        .with_partition_index(index as i32)
                        .with_replica_nodes(ids(&p.replicas))
                        .with_isr_nodes(ids(&p.replicas));
                    // Leader and epoch: this node's replica knows them first. In-sync replicas:
                    // only the leader computes them; other nodes use its last report.
                    let me = broker.config.node_id as u64;
                    let local =
                        broker.replication.partition(p.uid).and_then(|v| Some((v.leader()?, v.leader_epoch(), v)));
                    let reported = broker.replication.remote_leader(p.uid);
                    let leader = match (local, reported) {
                        (Some((l, epoch, v)), _) if l == me => Some((l, epoch, v.isr())),
                        (Some((l, epoch, _)), Some((r, _, isr))) if r == l => Some((l, epoch, isr)),
                        (Some((l, epoch, _)), _) => Some((l, epoch, p.replicas.clone())),
                        (None, reported) => reported,
                    };
                    match leader {
                        Some((leader, epoch, isr)) => {
                            partition.leader_id = BrokerId(leader as i32);
                            partition.leader_epoch = epoch;
                            partition.isr_nodes = ids(&isr);
                        }
                        None => {
                            partition.leader_id = BrokerId(-1);
                            partition.error_code = ResponseError::LeaderNotAvailable.code();
                        }
                    }
                    partition
                })
                .collect();
            topic
        })
        .collect();
    response.topics.extend(unknown_ids.into_iter().map(|id| {
        MetadataResponseTopic::default().with_topic_id(id).with_error_code(ResponseError::UnknownTopicId.code())
    }));
    response
}
