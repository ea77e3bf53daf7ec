//! DescribeCluster (key 60): the cluster id, the controller and the brokers (this node).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::util;
use crate::broker::Broker;

/// Operations on the cluster resource a client may perform (there are no ACLs):
/// CREATE 3, ALTER 4, CLUSTER_ACTION 7, DESCRIBE 8, DESCRIBE_CONFIGS 10,
/// ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12.
const CLUSTER_OPERATIONS: i32 = 1 << 3 | 1 << 4 | 1 << 7 | 1 << 8 | 1 << 10 | 1 << 11 | 1 << 12;

/// `endpoint_type` of brokers (2 would be controllers).
const BROKERS: i8 = 1;

pub(crate) fn handle(broker: &Arc<Broker>, version: i16, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let mut response = DescribeClusterResponse::default();
    response.cluster_id = util::str_bytes(&util::cluster_id(broker));
    response.controller_id = BrokerId(broker.replication.controller().map_or(-1, |c| c as i32));
    response.brokers = util::known_nodes(broker)
        .into_iter()
        .map(|n| {
            let mut b = DescribeClusterBroker::default();
            b.broker_id = BrokerId(n.id as i32);
            b.host = util::str_bytes(&n.kafka_host);
            b.port = n.kafka_port as i32;
            b.rack = n.rack.as_deref().map(util::str_bytes);
            b
        })
        .collect();
    response.endpoint_type = BROKERS;
    if version >= 1 && req.endpoint_type != BROKERS {
        response.error_code = ResponseError::MismatchedEndpointType.code();
        response.error_message = Some(util::str_bytes("this is a broker endpoint; ask for endpoint type 1"));
    }
    response.cluster_authorized_operations =
        if req.include_cluster_authorized_operations { CLUSTER_OPERATIONS } else { i32::MIN };
    response
}
