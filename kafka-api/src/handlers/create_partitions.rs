//! CreatePartitions (key 37): raises a topic's partition count; new partitions get the
//! topic's replication factor, placed like new topics (or as assigned).

use std::sync::Arc;
use std::time::Duration;

use chronik_replication::command::MetaCommand;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::util;
use crate::broker::Broker;
use crate::coordinator::OFFSETS_TOPIC;
use crate::errors;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    _version: i16,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let duplicates: Vec<String> =
        util::duplicates(req.topics.iter().map(|t| t.name.0.as_str())).into_iter().map(String::from).collect();
    let mut response = CreatePartitionsResponse::default();
    let mut grown = Vec::new();
    for topic in &req.topics {
        let name = topic.name.0.as_str();
        let outcome = if duplicates.iter().any(|d| d == name) {
            if response.results.iter().any(|r| r.name.0.as_str() == name) {
                continue;
            }
            Err((ResponseError::InvalidRequest, Some(format!("topic {name:?} appears more than once in the request"))))
        } else {
            grow(broker, topic, req.validate_only).await
        };
        let mut result = CreatePartitionsTopicResult::default();
        result.name = util::topic_name(name);
        match outcome {
            Ok(()) if !req.validate_only => grown.push(name.to_string()),
            Ok(()) => {}
            Err((e, message)) => {
                result.error_code = errors::code(&e);
                result.error_message = message.as_deref().map(util::str_bytes);
            }
        }
        response.results.push(result);
    }
    util::await_all_leaders(broker, &grown, Duration::from_secs(5)).await;
    response
}

async fn grow(
    broker: &Broker,
    topic: &CreatePartitionsTopic,
    validate_only: bool,
) -> Result<(), (ResponseError, Option<String>)> {
    let name = topic.name.0.as_str();
    if name == OFFSETS_TOPIC {
        // Groups map to partitions by count: growing it would hide every committed offset.
        return Err((ResponseError::InvalidTopicException, Some(format!("{OFFSETS_TOPIC} is internal"))));
    }
    let current = {
        let cluster = broker.replication.cluster();
        let meta = cluster.topics.get(name).ok_or((ResponseError::UnknownTopicOrPartition, None))?;
        i32::try_from(meta.partitions.len()).unwrap_or(i32::MAX)
    };
    if topic.count <= current {
        let m = match topic.count == current {
            true => format!("Topic already has {current} partitions."),
            false => {
                format!("Topic currently has {current} partitions, which is higher than the requested {}.", topic.count)
            }
        };
        return Err((ResponseError::InvalidPartitions, Some(m)));
    }
    let added = (topic.count - current) as usize;
    let replication_factor = broker
        .replication
        .cluster()
        .topics
        .get(name)
        .and_then(|t| t.partitions.first())
        .map_or(1, |p| p.replicas.len());
    let mut replicas = None;
    if let Some(assignments) = &topic.assignments {
        if assignments.len() != added {
            let m = format!(
                "Increasing the number of partitions by {added} but {} assignments provided.",
                assignments.len()
            );
            return Err((ResponseError::InvalidReplicaAssignment, Some(m)));
        }
        let wanted: Vec<Vec<i32>> = assignments.iter().map(|a| a.broker_ids.iter().map(|b| b.0).collect()).collect();
        let checked =
            util::check_assignment(broker, &wanted).map_err(|m| (ResponseError::InvalidReplicaAssignment, Some(m)))?;
        replicas = Some(checked);
    }
    if validate_only {
        return Ok(());
    }
    let replicas = replicas.unwrap_or_else(|| {
        let nodes = util::known_nodes(broker);
        let start = broker.replication.cluster().topics.values().map(|t| t.partitions.len()).sum();
        chronik_replication::placement::assign(&nodes, added, replication_factor, start)
    });
    let command = MetaCommand::CreatePartitions { name: name.to_string(), current_count: current as usize, replicas };
    util::propose_meta(broker, command).await
}
