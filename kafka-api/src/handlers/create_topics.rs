//! CreateTopics (key 19): creates topics through the metadata group and waits briefly
//! for their partitions to elect leaders.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::util;
use crate::broker::Broker;
use crate::errors;

pub(crate) async fn handle(broker: &Arc<Broker>, version: i16, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let duplicates: Vec<String> =
        util::duplicates(req.topics.iter().map(|t| t.name.0.as_str())).into_iter().map(String::from).collect();
    let mut response = CreateTopicsResponse::default();
    let mut created = Vec::new();
    for topic in &req.topics {
        let name = topic.name.0.as_str();
        let mut result = CreatableTopicResult::default();
        result.name = util::topic_name(name);
        result.error_message = None;
        if duplicates.iter().any(|d| d == name) {
            if response.topics.iter().any(|r| r.name.0.as_str() == name) {
                continue;
            }
            result.error_code = errors::code(&ResponseError::InvalidRequest);
            result.error_message =
                Some(util::str_bytes(&format!("topic {name:?} appears more than once in the request")));
            response.topics.push(result);
            continue;
        }
        match create(broker, topic, req.validate_only).await {
            Ok((partitions, replication_factor, configs)) => {
                if version >= 5 {
                    result.num_partitions = partitions;
                    result.replication_factor = replication_factor;
                    result.configs = Some(described(broker, &configs));
                }
                if !req.validate_only {
                    if let Some(meta) = broker.replication.cluster().topics.get(name) {
                        result.topic_id = uuid::Uuid::from_bytes(meta.id);
                    }
                    created.push(name.to_string());
                }
            }
            Err((e, message)) => {
                let message = match (e, message) {
                    (ResponseError::TopicAlreadyExists, None) => Some(format!("Topic '{name}' already exists.")),
                    (_, m) => m,
                };
                result.error_code = errors::code(&e);
                result.error_message = message.as_deref().map(util::str_bytes);
            }
        }
        response.topics.push(result);
    }
    util::await_all_leaders(broker, &created, Duration::from_secs(5)).await;
    response
}

type Created = (i32, i16, BTreeMap<String, String>);

/// Resolves defaults and manual assignments, then creates (or only validates) the topic.
async fn create(
    broker: &Broker,
    topic: &CreatableTopic,
    validate_only: bool,
) -> Result<Created, (ResponseError, Option<String>)> {
    let (mut partitions, mut replication_factor) = (topic.num_partitions, topic.replication_factor);
    let mut assignment = None;
    if !topic.assignments.is_empty() {
        if partitions != -1 || replication_factor != -1 {
            let m = "numPartitions and replicationFactor must be -1 when replica assignments are given";
            return Err((ResponseError::InvalidRequest, Some(m.into())));
        }
        if !topic.assignments.iter().enumerate().all(|(i, a)| a.partition_index == i as i32) {
            let m = format!("assignments must cover partitions 0..{} in order", topic.assignments.len());
            return Err((ResponseError::InvalidReplicaAssignment, Some(m)));
        }
        let wanted: Vec<Vec<i32>> =
            topic.assignments.iter().map(|a| a.broker_ids.iter().map(|b| b.0).collect()).collect();
        let replicas =
            util::check_assignment(broker, &wanted).map_err(|m| (ResponseError::InvalidReplicaAssignment, Some(m)))?;
        partitions = i32::try_from(topic.assignments.len()).unwrap_or(i32::MAX);
        replication_factor = replicas.first().map_or(1, |r| r.len() as i16);
        assignment = Some(replicas);
    }
    if partitions == -1 {
        partitions = broker.config.num_partitions;
    }
    if replication_factor == -1 {
        replication_factor = broker.config.default_replication_factor;
    }
    let mut configs = BTreeMap::new();
    for c in &topic.configs {
        let Some(value) = &c.value else {
            return Err((
                ResponseError::InvalidConfig,
                Some(format!("null value not supported for topic config {}", c.name)),
            ));
        };
        configs.insert(c.name.to_string(), value.to_string());
    }
    let name = topic.name.0.as_str();
    util::create_topic(broker, name, partitions, replication_factor, configs.clone(), validate_only, assignment)
        .await?;
    Ok((partitions, replication_factor, configs))
}

/// A topic's configs as CreateTopics v5+ reports them.
fn described(broker: &Broker, configs: &BTreeMap<String, String>) -> Vec<CreatableTopicConfigs> {
    broker
        .config
        .topic_defaults
        .describe(configs)
        .into_iter()
        .map(|c| {
            let mut out = CreatableTopicConfigs::default();
            out.name = util::str_bytes(c.name);
            out.value = Some(util::str_bytes(&c.value));
            out.config_source = if c.is_default { util::SOURCE_DEFAULT } else { util::SOURCE_TOPIC };
            out
        })
        .collect()
}
