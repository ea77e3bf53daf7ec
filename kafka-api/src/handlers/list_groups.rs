//! ListGroups (key 16): the groups this node coordinates, filtered by state (v4+)
//! and type (v5+: "classic" or "consumer").

use std::sync::Arc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::util;
use crate::broker::Broker;

pub(crate) async fn handle(broker: &Arc<Broker>, _version: i16, req: ListGroupsRequest) -> ListGroupsResponse {
    let mut response = ListGroupsResponse::default();
    let groups = match broker.coordinator.list().await {
        Ok(groups) => groups,
        Err(e) => return response.with_error_code(e.code()),
    };
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    response.groups = groups
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
        .filter(|g| types.is_empty() || types.iter().any(|t| t == g.group_type))
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(util::str_bytes(&g.name)))
                .with_protocol_type(util::str_bytes(&g.protocol_type))
                .with_group_state(util::str_bytes(g.state))
                .with_group_type(util::str_bytes(g.group_type))
        })
        .collect();
    response
}
