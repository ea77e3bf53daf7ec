//! ConsumerGroupHeartbeat (key 68, KIP-848): join, stay, and leave a group whose
//! assignment the coordinator computes; each answer carries the member's new
//! assignment when it changed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, RequestHeader};

use super::util;
use crate::broker::Broker;
use crate::coordinator::consumer::{Heartbeat, Tp};

/// The server-side assignors accepted (both map to the one uniform, sticky assignor).
const ASSIGNORS: &[&str] = &["uniform", "range"];

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    _version: i16,
    header: &RequestHeader,
    peer: SocketAddr,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let response = ConsumerGroupHeartbeatResponse::default();
    let refuse = |e: ResponseError, message: &str| {
        tracing::debug!(group = %req.group_id.as_str(), error = ?e, message, "ConsumerGroupHeartbeat refused");
        response.clone().with_error_code(e.code()).with_error_message(Some(util::str_bytes(message)))
    };
    if req.group_id.is_empty() {
        return refuse(ResponseError::InvalidRequest, "the group id is empty");
    }
    // librdkafka sends an empty regex next to topic names.
    if req.subscribed_topic_regex.as_ref().is_some_and(|r| !r.is_empty()) {
        return refuse(ResponseError::InvalidRequest, "regular-expression subscriptions are not supported yet");
    }
    if let Some(assignor) = req.server_assignor.as_ref().filter(|a| !ASSIGNORS.contains(&a.as_str())) {
        return refuse(ResponseError::UnsupportedAssignor, &format!("unknown server assignor {assignor}"));
    }
    let member_id = match req.member_id.is_empty() {
        // Version 0 lets the coordinator name the member.
        true => uuid::Uuid::new_v4().to_string(),
        false => req.member_id.to_string(),
    };
    let heartbeat = Heartbeat {
        member_id,
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.map(|i| i.to_string()),
        rack_id: req.rack_id.map(|r| r.to_string()),
        client_id: header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
        rebalance_timeout: (req.rebalance_timeout_ms >= 0)
            .then(|| Duration::from_millis(req.rebalance_timeout_ms as u64)),
        subscribed: req.subscribed_topic_names.map(|names| names.iter().map(|n| n.to_string()).collect()),
        owned: req
            .topic_partitions
            .map(|tps| tps.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p))).collect()),
    };
    let coordinator = &broker.coordinator;
    let topics = coordinator.topics();
    let outcome = coordinator
        .with_consumer_group(&req.group_id, |group, at| group.heartbeat(heartbeat, &topics, at))
        .await
        .and_then(|r| r);
    match outcome {
        Err(e) => {
            tracing::debug!(group = %req.group_id.as_str(), error = ?e, "ConsumerGroupHeartbeat failed");
            response.with_error_code(e.code())
        }
        Ok(o) => response
            .with_member_id(Some(util::str_bytes(&o.member_id)))
            .with_member_epoch(o.member_epoch)
            .with_heartbeat_interval_ms(coordinator.config.consumer_heartbeat_interval.as_millis() as i32)
            .with_assignment(o.assignment.map(|tps| Assignment::default().with_topic_partitions(by_topic(&tps)))),
    }
}

fn by_topic(tps: &[Tp]) -> Vec<TopicPartitions> {
    let mut topics: BTreeMap<uuid::Uuid, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in tps {
        topics.entry(*topic).or_default().push(*partition);
    }
    topics
        .into_iter()
        .map(|(topic_id, partitions)| TopicPartitions::default().with_topic_id(topic_id).with_partitions(partitions))
        .collect()
}
