//! FindCoordinator (key 10): the node that leads a group's `__consumer_offsets`
//! partition. The internal topic is created on first use, as Kafka does.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::util;
use crate::broker::Broker;
use crate::coordinator::{partition_for, OFFSETS_TOPIC};

const GROUP_KEY: i8 = 0;
const TRANSACTION_KEY: i8 = 1;

pub(crate) async fn handle(broker: &Arc<Broker>, version: i16, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let keys: Vec<String> = match version {
        0..=3 => vec![req.key.to_string()],
        _ => req.coordinator_keys.iter().map(|k| k.to_string()).collect(),
    };
    let mut found = Vec::with_capacity(keys.len());
    for key in keys {
        let coordinator = match find(broker, req.key_type, &key).await {
            Ok((node_id, host, port)) => {
                Coordinator::default().with_node_id(BrokerId(node_id)).with_host(util::str_bytes(&host)).with_port(port)
            }
            Err((error, message)) => Coordinator::default()
                .with_node_id(BrokerId(-1))
                .with_port(-1)
                .with_error_code(error.code())
                .with_error_message(message.map(|m| util::str_bytes(&m))),
        };
        found.push(coordinator.with_key(util::str_bytes(&key)));
    }
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = found;
    } else if let Some(c) = found.pop() {
        response.error_code = c.error_code;
        response.error_message = c.error_message;
        response.node_id = c.node_id;
        response.host = c.host;
        response.port = c.port;
    }
    response
}

type Found = Result<(i32, String, i32), (ResponseError, Option<String>)>;

async fn find(broker: &Arc<Broker>, key_type: i8, key: &str) -> Found {
    match key_type {
        GROUP_KEY => {}
        TRANSACTION_KEY => {
            let message = "transactions are not supported by this broker yet".to_string();
            return Err((ResponseError::TransactionalIdAuthorizationFailed, Some(message)));
        }
        other => return Err((ResponseError::InvalidRequest, Some(format!("unknown coordinator key type {other}")))),
    }
    if key.is_empty() {
        return Err((ResponseError::InvalidGroupId, Some("the group id is empty".into())));
    }
    ensure_offsets_topic(broker).await?;
    let coordinator = &broker.coordinator;
    let topic = coordinator.offsets_topic().ok_or((ResponseError::CoordinatorNotAvailable, None))?;
    let index = partition_for(key, topic.partitions.len() as i32) as usize;
    let uid = topic.partitions.get(index).ok_or((ResponseError::CoordinatorNotAvailable, None))?.uid;
    // The leader as this node's replica knows it, else as the leader last reported it.
    let leader = broker
        .replication
        .partition(uid)
        .and_then(|v| v.leader())
        .or_else(|| broker.replication.remote_leader(uid).map(|(leader, _, _)| leader));
    match leader.and_then(|id| util::known_nodes(broker).into_iter().find(|n| n.id == id)) {
        Some(node) => Ok((node.id as i32, node.kafka_host, node.kafka_port as i32)),
        None => Err((ResponseError::CoordinatorNotAvailable, None)),
    }
}

/// Creates `__consumer_offsets` if it does not exist yet and waits for its leaders.
async fn ensure_offsets_topic(broker: &Arc<Broker>) -> Result<(), (ResponseError, Option<String>)> {
    if broker.coordinator.offsets_topic().is_some() {
        return Ok(());
    }
    let partitions = broker.config.groups.offsets_partitions;
    let rf = broker.config.default_replication_factor;
    match util::create_topic(broker, OFFSETS_TOPIC, partitions, rf, Default::default(), false, None).await {
        Ok(()) | Err((ResponseError::TopicAlreadyExists, _)) => {}
        Err((error, message)) => {
            tracing::warn!(?error, ?message, "cannot create {OFFSETS_TOPIC}");
            return Err((ResponseError::CoordinatorNotAvailable, message));
        }
    }
    util::await_leaders(broker, OFFSETS_TOPIC, Duration::from_secs(5)).await;
    Ok(())
}
