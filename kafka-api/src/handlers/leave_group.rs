//! LeaveGroup (key 13): members leave (from v3 several at once, by member or
//! instance id); the rest of the group rebalances.

use std::sync::Arc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::util;
use crate::broker::Broker;

pub(crate) async fn handle(broker: &Arc<Broker>, version: i16, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = match version {
        0..=2 => vec![(req.member_id.to_string(), None)],
        _ => req
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|i| i.to_string())))
            .collect(),
    };
    let results = broker.coordinator.with_group(&req.group_id, |group, at| group.leave(&members, at)).await;
    let mut response = LeaveGroupResponse::default();
    let results = match results {
        Ok(results) => results,
        Err(e) => return response.with_error_code(e.code()),
    };
    if version <= 2 {
        response.error_code = results.first().and_then(|r| r.err()).map_or(0, |e| e.code());
        return response;
    }
    response.members = members
        .iter()
        .zip(results)
        .map(|((member_id, instance_id), result)| {
            MemberResponse::default()
                .with_member_id(util::str_bytes(member_id))
                .with_group_instance_id(instance_id.as_deref().map(util::str_bytes))
                .with_error_code(result.err().map_or(0, |e| e.code()))
        })
        .collect();
    response
}
