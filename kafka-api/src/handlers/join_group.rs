//! JoinGroup (key 11): a member (re)joins its group; answered when the rebalance
//! completes, with every member's metadata for the elected leader.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, RequestHeader, ResponseKind};

use super::{now, util, Reply};
use crate::broker::Broker;
use crate::coordinator::classic::{Answer, JoinOutcome, JoinRequest};

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    version: i16,
    header: &RequestHeader,
    peer: SocketAddr,
    req: JoinGroupRequest,
) -> Reply {
    let config = &broker.config.groups;
    let session_timeout = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
    let member_id = req.member_id.to_string();
    if req.group_id.is_empty() {
        return now(ResponseKind::JoinGroup(error(version, ResponseError::InvalidGroupId, &member_id)));
    }
    if session_timeout < config.min_session_timeout || session_timeout > config.max_session_timeout {
        return now(ResponseKind::JoinGroup(error(version, ResponseError::InvalidSessionTimeout, &member_id)));
    }
    let request = JoinRequest {
        member_id: member_id.clone(),
        instance_id: req.group_instance_id.map(|s| s.to_string()),
        client_id: header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
        session_timeout,
        // JoinGroup v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout: match version {
            0 => session_timeout,
            _ => Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64),
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata)).collect(),
        requires_known_member_id: version >= 4,
    };
    match broker.coordinator.with_group(&req.group_id, |group, at| group.join(request, at)).await {
        Err(e) => now(ResponseKind::JoinGroup(error(version, e, &member_id))),
        Ok(Answer::Now(outcome)) => now(ResponseKind::JoinGroup(response(version, outcome))),
        Ok(Answer::Later(rx)) => Reply::Later(Box::pin(async move {
            let response = match rx.await {
                Ok(outcome) => response(version, outcome),
                // The group was dropped (this node stopped coordinating it).
                Err(_) => error(version, ResponseError::NotCoordinator, &member_id),
            };
            Some(ResponseKind::JoinGroup(response))
        })),
    }
}

fn error(version: i16, error: ResponseError, member_id: &str) -> JoinGroupResponse {
    response(version, JoinOutcome::error(error, member_id))
}

fn response(version: i16, o: JoinOutcome) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default()
        .with_error_code(o.error.map_or(0, |e| e.code()))
        .with_generation_id(o.generation)
        .with_protocol_type(o.protocol_type.map(|p| util::str_bytes(&p)))
        .with_leader(util::str_bytes(&o.leader))
        .with_member_id(util::str_bytes(&o.member_id));
    // The protocol name is nullable only from v7 on.
    response.protocol_name = match (o.protocol, version) {
        (Some(p), _) => Some(util::str_bytes(&p)),
        (None, 7..) => None,
        (None, _) => Some(util::str_bytes("")),
    };
    response.members = o
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(util::str_bytes(&id))
                .with_group_instance_id(instance.map(|i| util::str_bytes(&i)))
                .with_metadata(metadata)
        })
        .collect();
    response
}
