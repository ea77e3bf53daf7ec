//! SyncGroup (key 14): the leader hands in every member's assignment; each member
//! gets its own once the leader's request arrives.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ResponseKind, SyncGroupRequest, SyncGroupResponse};

use super::{now, util, Reply};
use crate::broker::Broker;
use crate::coordinator::classic::Answer;

pub(crate) async fn handle(broker: &Arc<Broker>, _version: i16, req: SyncGroupRequest) -> Reply {
    let member_id = req.member_id.to_string();
    let instance_id = req.group_instance_id.as_ref().map(|s| s.to_string());
    let assignments: Vec<(String, Bytes)> =
        req.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect();
    let result = broker
        .coordinator
        .with_group(&req.group_id, |group, at| {
            let protocol = (group.protocol_type.clone(), group.protocol.clone());
            let type_mismatch = req.protocol_type.as_ref().is_some_and(|t| t.as_str() != protocol.0);
            let name_mismatch = req.protocol_name.as_ref().is_some_and(|n| Some(n.as_str()) != protocol.1.as_deref());
            if group.members.contains_key(&member_id) && (type_mismatch || name_mismatch) {
                return (Answer::Now(Err(ResponseError::InconsistentGroupProtocol)), protocol);
            }
            (group.sync(&member_id, instance_id.as_deref(), req.generation_id, assignments, at), protocol)
        })
        .await;
    let (answer, (protocol_type, protocol)) = match result {
        Ok(found) => found,
        Err(e) => return now(ResponseKind::SyncGroup(response(Err(e), None, None))),
    };
    let protocol_type = Some(protocol_type).filter(|t| !t.is_empty());
    match answer {
        Answer::Now(outcome) => now(ResponseKind::SyncGroup(response(outcome, protocol_type, protocol))),
        Answer::Later(rx) => Reply::Later(Box::pin(async move {
            let outcome = rx.await.unwrap_or(Err(ResponseError::NotCoordinator));
            Some(ResponseKind::SyncGroup(response(outcome, protocol_type, protocol)))
        })),
    }
}

fn response(
    outcome: Result<Bytes, ResponseError>,
    protocol_type: Option<String>,
    protocol: Option<String>,
) -> SyncGroupResponse {
    let mut response = SyncGroupResponse::default();
    match outcome {
        Ok(assignment) => {
            response.assignment = assignment;
            response.protocol_type = protocol_type.map(|t| util::str_bytes(&t));
            response.protocol_name = protocol.map(|p| util::str_bytes(&p));
        }
        Err(e) => response.error_code = e.code(),
    }
    response
}
