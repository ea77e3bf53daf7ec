//! OffsetFetch (key 9): committed offsets of one group (v1-7) or several (v8+);
//! partitions without a commit answer offset -1.

use std::sync::Arc;

use chronik_replication::groups::CommittedOffset;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse};

use super::util;
use crate::broker::Broker;

/// (topic, partitions); `None` asks for every committed offset of the group.
type Wanted = Option<Vec<(String, Vec<i32>)>>;

pub(crate) async fn handle(broker: &Arc<Broker>, version: i16, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    if version >= 8 {
        for group in req.groups {
            let wanted: Wanted =
                group.topics.map(|ts| ts.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect());
            let found = fetch(broker, &group.group_id, wanted).await;
            response.groups.push(group_response(group.group_id, found));
        }
        return response;
    }
    let wanted: Wanted =
        req.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.to_string(), t.partition_indexes.clone())).collect());
    match fetch(broker, &req.group_id, wanted).await {
        Ok(topics) => {
            response.topics = topics
                .into_iter()
                .map(|(topic, offsets)| {
                    let partitions = offsets
                        .into_iter()
                        .map(|o| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(o.partition)
                                .with_committed_offset(o.offset)
                                .with_committed_leader_epoch(o.leader_epoch)
                                .with_metadata(Some(util::str_bytes(o.metadata.as_deref().unwrap_or(""))))
                        })
                        .collect();
                    OffsetFetchResponseTopic::default().with_name(util::topic_name(&topic)).with_partitions(partitions)
                })
                .collect();
        }
        // v1 has no group-level error: it goes on every partition asked for.
        Err(e) if version == 1 => {
            response.topics = req_topics_with_error(&req, e);
        }
        Err(e) => response.error_code = e.code(),
    }
    response
}

fn req_topics_with_error(req: &OffsetFetchRequest, e: ResponseError) -> Vec<OffsetFetchResponseTopic> {
    req.topics
        .iter()
        .flatten()
        .map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(-1)
                        .with_error_code(e.code())
                })
                .collect();
            OffsetFetchResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions)
        })
        .collect()
}

fn group_response(
    group_id: GroupId,
    found: Result<Vec<(String, Vec<CommittedOffset>)>, ResponseError>,
) -> OffsetFetchResponseGroup {
    let mut group = OffsetFetchResponseGroup::default().with_group_id(group_id);
    match found {
        Ok(topics) => {
            group.topics = topics
                .into_iter()
                .map(|(topic, offsets)| {
                    let partitions = offsets
                        .into_iter()
                        .map(|o| {
                            OffsetFetchResponsePartitions::default()
                                .with_partition_index(o.partition)
                                .with_committed_offset(o.offset)
                                .with_committed_leader_epoch(o.leader_epoch)
                                .with_metadata(Some(util::str_bytes(o.metadata.as_deref().unwrap_or(""))))
                        })
                        .collect();
                    OffsetFetchResponseTopics::default().with_name(util::topic_name(&topic)).with_partitions(partitions)
                })
                .collect();
        }
        Err(e) => group.error_code = e.code(),
    }
    group
}

/// The committed offsets of `group`, grouped by topic in request order (or all).
async fn fetch(
    broker: &Arc<Broker>,
    group: &str,
    wanted: Wanted,
) -> Result<Vec<(String, Vec<CommittedOffset>)>, ResponseError> {
    let owner = broker.coordinator.owner(group)?;
    let committed = broker.coordinator.committed(owner.uid, group).await?;
    let Some(wanted) = wanted else {
        let mut topics: Vec<(String, Vec<CommittedOffset>)> = Vec::new();
        for o in committed {
            match topics.last_mut() {
                Some((topic, offsets)) if *topic == o.topic => offsets.push(o),
                _ => topics.push((o.topic.clone(), vec![o])),
            }
        }
        return Ok(topics);
    };
    Ok(wanted
        .into_iter()
        .map(|(topic, partitions)| {
            let offsets = partitions
                .into_iter()
                .map(|p| {
                    committed.iter().find(|o| o.topic == topic && o.partition == p).cloned().unwrap_or(
                        CommittedOffset {
                            topic: topic.clone(),
                            partition: p,
                            offset: -1,
                            leader_epoch: -1,
                            metadata: None,
                            commit_timestamp: -1,
                        },
                    )
                })
                .collect();
            (topic, offsets)
        })
        .collect())
}
