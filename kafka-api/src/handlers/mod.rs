//! The handler table: every supported API with its version range, and the dispatch
//! from a decoded request to its handler. ApiVersions is answered from this table.

mod alter_configs;
pub(crate) mod api_versions;
mod consumer_group_describe;
mod consumer_group_heartbeat;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sync_group;
mod util;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};

use crate::broker::Broker;
use crate::frame::ResponseFrame;

/// A response frame still being produced: `Ok(None)` sends nothing (acks=0); `Err`
/// means it could not be encoded, and the connection is closed rather than left waiting.
pub(crate) type PendingResponse = Pin<Box<dyn Future<Output = Result<Option<ResponseFrame>, ()>> + Send>>;

pub(crate) enum Reply {
    Now(Box<ResponseKind>),
    /// Completes later (produce waits for apply; fetch long-polls).
    Later(Pin<Box<dyn Future<Output = Option<ResponseKind>> + Send>>),
    Nothing,
}

fn now(response: ResponseKind) -> Reply {
    Reply::Now(Box::new(response))
}

/// Supported APIs and versions: (key, min, max).
const APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
];

/// The advertised (key, min, max) of every API, clipped to what `kafka-protocol` encodes.
pub fn supported_apis() -> Vec<(ApiKey, i16, i16)> {
    APIS.iter()
        .map(|&(key, min, max)| {
            let valid = key.valid_versions();
            (key, min.max(valid.min), max.min(valid.max))
        })
        .collect()
}

pub(crate) fn is_supported(key: ApiKey, version: i16) -> bool {
    supported_apis().iter().any(|&(k, min, max)| k == key && (min..=max).contains(&version))
}

pub(crate) async fn dispatch(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    peer: SocketAddr,
    request: RequestKind,
) -> Reply {
    let v = header.request_api_version;
    use RequestKind as R;
    use ResponseKind as S;
    match request {
        R::ApiVersions(r) => now(S::ApiVersions(api_versions::handle(v, r))),
        R::Metadata(r) => now(S::Metadata(metadata::handle(broker, v, r).await)),
        R::Produce(r) => produce::handle(broker, v, r).await,
        R::Fetch(r) => fetch::handle(broker, v, r),
        R::ListOffsets(r) => now(S::ListOffsets(list_offsets::handle(broker, v, r).await)),
        R::OffsetForLeaderEpoch(r) => now(S::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(broker, v, r))),
        R::CreateTopics(r) => now(S::CreateTopics(create_topics::handle(broker, v, r).await)),
        R::DeleteTopics(r) => now(S::DeleteTopics(delete_topics::handle(broker, v, r).await)),
        R::CreatePartitions(r) => now(S::CreatePartitions(create_partitions::handle(broker, v, r).await)),
        R::DeleteRecords(r) => now(S::DeleteRecords(delete_records::handle(broker, v, r).await)),
        R::DescribeConfigs(r) => now(S::DescribeConfigs(describe_configs::handle(broker, v, r))),
        R::AlterConfigs(r) => now(S::AlterConfigs(alter_configs::handle_alter(broker, v, r).await)),
        R::IncrementalAlterConfigs(r) => {
            now(S::IncrementalAlterConfigs(alter_configs::handle_incremental(broker, v, r).await))
        }
        R::DescribeCluster(r) => now(S::DescribeCluster(describe_cluster::handle(broker, v, r))),
        R::InitProducerId(r) => now(S::InitProducerId(init_producer_id::handle(broker, v, r).await)),
        R::FindCoordinator(r) => now(S::FindCoordinator(find_coordinator::handle(broker, v, r).await)),
        R::JoinGroup(r) => join_group::handle(broker, v, header, peer, r).await,
        R::SyncGroup(r) => sync_group::handle(broker, v, r).await,
        R::Heartbeat(r) => now(S::Heartbeat(heartbeat::handle(broker, v, r).await)),
        R::LeaveGroup(r) => now(S::LeaveGroup(leave_group::handle(broker, v, r).await)),
        R::OffsetCommit(r) => offset_commit::handle(broker, v, r).await,
        R::OffsetFetch(r) => now(S::OffsetFetch(offset_fetch::handle(broker, v, r).await)),
        R::DescribeGroups(r) => now(S::DescribeGroups(describe_groups::handle(broker, v, r).await)),
        R::ListGroups(r) => now(S::ListGroups(list_groups::handle(broker, v, r).await)),
        R::DeleteGroups(r) => now(S::DeleteGroups(delete_groups::handle(broker, v, r).await)),
        R::OffsetDelete(r) => now(S::OffsetDelete(offset_delete::handle(broker, v, r).await)),
        R::ConsumerGroupHeartbeat(r) => {
            now(S::ConsumerGroupHeartbeat(consumer_group_heartbeat::handle(broker, v, header, peer, r).await))
        }
        R::ConsumerGroupDescribe(r) => {
            now(S::ConsumerGroupDescribe(consumer_group_describe::handle(broker, v, r).await))
        }
        other => {
            // is_supported() admits only the keys above, so this is unreachable in practice.
            tracing::error!(request = ?std::mem::discriminant(&other), "request without a handler");
            Reply::Nothing
        }
    }
}
