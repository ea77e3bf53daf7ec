//! DeleteGroups (key 42): deletes empty groups with their committed offsets.

use std::sync::Arc;

use chronik_replication::groups::GroupCommand;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::broker::Broker;
use crate::coordinator::Group;

pub(crate) async fn handle(broker: &Arc<Broker>, _version: i16, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut response = DeleteGroupsResponse::default();
    for group in req.groups_names {
        let result = delete(broker, &group).await;
        response.results.push(
            DeletableGroupResult::default().with_group_id(group).with_error_code(result.err().map_or(0, |e| e.code())),
        );
    }
    response
}

async fn delete(broker: &Arc<Broker>, group: &str) -> Result<(), ResponseError> {
    let coordinator = &broker.coordinator;
    let owner = coordinator.owner(group)?;
    let live = coordinator.peek(group, owner, Group::has_members);
    if live == Some(true) {
        return Err(ResponseError::NonEmptyGroup);
    }
    let record = coordinator.stored_group(owner.uid, group).await?.ok_or(ResponseError::GroupIdNotFound)?;
    if live.is_none() {
        coordinator.check_settled(owner, &record)?;
    }
    coordinator.write_record(owner, GroupCommand::DeleteGroup { group: group.to_string() }).await?;
    coordinator.forget(group);
    Ok(())
}
