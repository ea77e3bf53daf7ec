//! OffsetDelete (key 47): deletes committed offsets of topics the group does not
//! consume (GROUP_SUBSCRIBED_TO_TOPIC for those it does).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use chronik_replication::groups::GroupCommand;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{ConsumerProtocolSubscription, OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::protocol::Decodable;

use super::util;
use crate::broker::Broker;
use crate::coordinator::classic::ClassicGroup;
use crate::coordinator::Group;

/// The topics a group's members consume: `None` if a subscription cannot be read
/// (then every topic counts as consumed, which errs on keeping offsets).
fn subscribed_topics(group: &Group) -> Option<HashSet<String>> {
    match group {
        Group::Classic(g) => classic_subscriptions(g),
        Group::Consumer(g) => Some(g.members.values().flat_map(|m| m.subscribed.iter().cloned()).collect()),
    }
}

fn classic_subscriptions(group: &ClassicGroup) -> Option<HashSet<String>> {
    let protocol = group.protocol.clone().unwrap_or_default();
    let mut topics = HashSet::new();
    if group.protocol_type != "consumer" {
        return (group.members.is_empty()).then_some(topics);
    }
    for member in group.members.values() {
        let mut metadata: Bytes = member.metadata(&protocol);
        if metadata.remaining() < 2 {
            return None;
        }
        let version = metadata.get_i16().min(3);
        let subscription = ConsumerProtocolSubscription::decode(&mut metadata, version).ok()?;
        topics.extend(subscription.topics.iter().map(|t| t.to_string()));
    }
    Some(topics)
}

pub(crate) async fn handle(broker: &Arc<Broker>, _version: i16, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let mut response = OffsetDeleteResponse::default();
    let coordinator = &broker.coordinator;
    let owner = match coordinator.owner(&req.group_id) {
        Ok(owner) => owner,
        Err(e) => return response.with_error_code(e.code()),
    };
    let record = match coordinator.stored_group(owner.uid, &req.group_id).await {
        Ok(Some(record)) => record,
        Ok(None) => return response.with_error_code(ResponseError::GroupIdNotFound.code()),
        Err(e) => return response.with_error_code(e.code()),
    };
    let subscribed = match coordinator.peek(&req.group_id, owner, subscribed_topics) {
        Some(subscribed) => subscribed,
        None => match coordinator.check_settled(owner, &record) {
            Ok(()) => Some(HashSet::new()),
            Err(e) => return response.with_error_code(e.code()),
        },
    };
    let cluster = broker.replication.cluster();
    let mut deleted = Vec::new();
    let mut topics = Vec::new();
    for topic in &req.topics {
        let name = topic.name.to_string();
        let meta = cluster.topics.get(&name);
        let consumed = subscribed.as_ref().is_none_or(|s| s.contains(&name));
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                let error = match util::partition_uid(meta, p.partition_index) {
                    Err(e) => Some(e),
                    Ok(_) if consumed => Some(ResponseError::GroupSubscribedToTopic),
                    Ok(_) => {
                        deleted.push((name.clone(), p.partition_index));
                        None
                    }
                };
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(error.map_or(0, |e| e.code()))
            })
            .collect();
        topics.push(OffsetDeleteResponseTopic::default().with_name(topic.name.clone()).with_partitions(partitions));
    }
    if !deleted.is_empty() {
        let command = GroupCommand::DeleteOffsets { group: req.group_id.to_string(), partitions: deleted };
        if let Err(e) = coordinator.propose(owner, command).await {
            return response.with_error_code(e.code());
        }
    }
    response.topics = topics;
    response
}
