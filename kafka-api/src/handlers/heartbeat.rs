//! Heartbeat (key 12): keeps a member's session alive and tells it about rebalances.

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::broker::Broker;

pub(crate) async fn handle(broker: &Arc<Broker>, _version: i16, req: HeartbeatRequest) -> HeartbeatResponse {
    let instance_id = req.group_instance_id.as_ref().map(|s| s.to_string());
    let result = broker
        .coordinator
        .with_group(&req.group_id, |group, at| {
            group.heartbeat(&req.member_id, instance_id.as_deref(), req.generation_id, at)
        })
        .await
        .and_then(|r| r);
    HeartbeatResponse::default().with_error_code(result.err().map_or(0, |e| e.code()))
}
