//! DescribeGroups (key 15): state, protocol and members of groups.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};

use super::util;
use crate::broker::Broker;
use crate::coordinator::classic::{ClassicGroup, Phase};
use crate::coordinator::Group;

pub(crate) async fn handle(broker: &Arc<Broker>, version: i16, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut response = DescribeGroupsResponse::default();
    for group_id in req.groups {
        response.groups.push(describe(broker, version, group_id).await);
    }
    response
}

async fn describe(broker: &Arc<Broker>, version: i16, group_id: GroupId) -> DescribedGroup {
    let described = DescribedGroup::default().with_group_id(group_id.clone());
    let owner = match broker.coordinator.owner(&group_id) {
        Ok(owner) => owner,
        Err(e) => return described.with_error_code(e.code()),
    };
    if let Some(live) = broker.coordinator.peek(&group_id, owner, |g| match g {
        Group::Classic(g) => live_group(g, described.clone()),
        // KIP-848 groups are described by ConsumerGroupDescribe; here only their state.
        Group::Consumer(g) => described
            .clone()
            .with_group_state(util::str_bytes(g.state()))
            .with_protocol_type(util::str_bytes("consumer")),
    }) {
        return live;
    }
    match broker.coordinator.stored_group(owner.uid, &group_id).await {
        Ok(Some(record)) => described
            .with_group_state(util::str_bytes(Phase::Empty.name()))
            .with_protocol_type(util::str_bytes(&record.protocol_type)),
        // A group that does not exist is "Dead"; v6 adds an explicit error (KIP-1043).
        Ok(None) if version >= 6 => {
            described.with_group_state(util::str_bytes("Dead")).with_error_code(ResponseError::GroupIdNotFound.code())
        }
        Ok(None) => described.with_group_state(util::str_bytes("Dead")),
        Err(e) => described.with_error_code(e.code()),
    }
}

fn live_group(g: &ClassicGroup, described: DescribedGroup) -> DescribedGroup {
    let protocol = g.protocol.clone().unwrap_or_default();
    let stable = g.phase == Phase::Stable;
    let members = g
        .members
        .values()
        .map(|m| {
            let member = DescribedGroupMember::default()
                .with_member_id(util::str_bytes(&m.id))
                .with_group_instance_id(m.instance_id.as_deref().map(util::str_bytes))
                .with_client_id(util::str_bytes(&m.client_id))
                .with_client_host(util::str_bytes(&m.client_host));
            // Metadata and assignments are only meaningful once the group is stable.
            match stable {
                true => member.with_member_metadata(m.metadata(&protocol)).with_member_assignment(m.assignment.clone()),
                false => member,
            }
        })
        .collect();
    described
        .with_group_state(util::str_bytes(g.phase.name()))
        .with_protocol_type(util::str_bytes(&g.protocol_type))
        .with_protocol_data(util::str_bytes(&protocol))
        .with_members(members)
}
