//! ConsumerGroupDescribe (key 69, KIP-848): members, epochs and assignments of
//! consumer-protocol groups. Classic groups answer GROUP_ID_NOT_FOUND, which tells
//! admin clients to use DescribeGroups instead.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::{Assignment, DescribedGroup, Member, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, GroupId};

use super::util;
use crate::broker::Broker;
use crate::coordinator::consumer::{ConsumerGroup, Tp};
use crate::coordinator::Group;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    _version: i16,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let mut response = ConsumerGroupDescribeResponse::default();
    for group_id in req.group_ids {
        response.groups.push(describe(broker, group_id).await);
    }
    response
}

async fn describe(broker: &Arc<Broker>, group_id: GroupId) -> DescribedGroup {
    let described = DescribedGroup::default().with_group_id(group_id.clone());
    let coordinator = &broker.coordinator;
    let owner = match coordinator.owner(&group_id) {
        Ok(owner) => owner,
        Err(e) => return described.with_error_code(e.code()),
    };
    let names: BTreeMap<uuid::Uuid, String> =
        coordinator.topics().into_iter().map(|(name, (id, _))| (id, name)).collect();
    let live = coordinator.peek(&group_id, owner, |g| match g {
        Group::Consumer(g) => Some(live_group(g, described.clone(), &names)),
        Group::Classic(_) => None,
    });
    match live {
        Some(Some(found)) => return found,
        Some(None) => return not_found(described, "is a classic group"),
        None => {}
    }
    match coordinator.stored_group(owner.uid, &group_id).await {
        Ok(Some(record)) if record.group_type == "consumer" => described
            .with_group_state(util::str_bytes("Empty"))
            .with_group_epoch(record.generation)
            .with_assignment_epoch(record.generation)
            .with_assignor_name(util::str_bytes("uniform")),
        Ok(Some(_)) => not_found(described, "is a classic group"),
        Ok(None) => not_found(described, "does not exist"),
        Err(e) => described.with_error_code(e.code()),
    }
}

fn not_found(described: DescribedGroup, why: &str) -> DescribedGroup {
    let message = format!("group {} {why}", described.group_id.as_str());
    described.with_error_code(ResponseError::GroupIdNotFound.code()).with_error_message(Some(util::str_bytes(&message)))
}

fn live_group(g: &ConsumerGroup, described: DescribedGroup, names: &BTreeMap<uuid::Uuid, String>) -> DescribedGroup {
    let assignment = |tps: &BTreeSet<Tp>| {
        let mut topics: BTreeMap<uuid::Uuid, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in tps {
            topics.entry(*topic).or_default().push(*partition);
        }
        let topic_partitions = topics
            .into_iter()
            .map(|(id, partitions)| {
                let name = names.get(&id).map(String::as_str).unwrap_or("");
                TopicPartitions::default()
                    .with_topic_id(id)
                    .with_topic_name(util::topic_name(name))
                    .with_partitions(partitions)
            })
            .collect();
        Assignment::default().with_topic_partitions(topic_partitions)
    };
    let members = g
        .members
        .values()
        .map(|m| {
            Member::default()
                .with_member_id(util::str_bytes(&m.id))
                .with_instance_id(m.instance_id.as_deref().map(util::str_bytes))
                .with_rack_id(m.rack_id.as_deref().map(util::str_bytes))
                .with_member_epoch(m.epoch)
                .with_client_id(util::str_bytes(&m.client_id))
                .with_client_host(util::str_bytes(&m.client_host))
                .with_subscribed_topic_names(m.subscribed.iter().map(|t| util::topic_name(t)).collect())
                .with_assignment(assignment(&m.assigned))
                .with_target_assignment(assignment(&g.target.get(&m.id).cloned().unwrap_or_default()))
                .with_member_type(1)
        })
        .collect();
    described
        .with_group_state(util::str_bytes(g.state()))
        .with_group_epoch(g.epoch)
        .with_assignment_epoch(g.assignment_epoch)
        .with_assignor_name(util::str_bytes("uniform"))
        .with_members(members)
}
