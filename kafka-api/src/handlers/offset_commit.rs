//! OffsetCommit (key 8): checks the member and generation, then proposes the offsets
//! to the group's `__consumer_offsets` partition and answers once applied.

use std::sync::Arc;

use chronik_replication::groups::{CommittedOffset, GroupCommand};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, ResponseKind};

use super::{now, util, Reply};
use crate::broker::Broker;
use crate::coordinator::{not_coordinator, now_ms, Group};

/// Kafka's offset.metadata.max.bytes.
const MAX_METADATA_BYTES: usize = 4096;

pub(crate) async fn handle(broker: &Arc<Broker>, _version: i16, req: OffsetCommitRequest) -> Reply {
    let instance_id = req.group_instance_id.as_ref().map(|s| s.to_string());
    let generation = req.generation_id_or_member_epoch;
    let turn = broker.coordinator.commit_turn().await;
    let checked = broker
        .coordinator
        .with_loaded(&req.group_id, |group, at| match group {
            Group::Classic(g) => g.check_commit(&req.member_id, instance_id.as_deref(), generation, at),
            // Offsets of an empty group can be committed by anyone (assign() consumers).
            Group::Consumer(g) if g.members.is_empty() && generation < 0 && req.member_id.is_empty() => Ok(()),
            Group::Consumer(g) => g.check_commit(&req.member_id, generation, at),
        })
        .await
        .and_then(|r| r)
        .and_then(|()| broker.coordinator.owner(&req.group_id));
    let owner = match checked {
        Ok(owner) => owner,
        Err(e) => return now(ResponseKind::OffsetCommit(every_partition(&req, Err(e)))),
    };

    let cluster = broker.replication.cluster();
    let timestamp = now_ms();
    let mut offsets = Vec::new();
    // Per partition: None = part of the proposal, Some(error) = refused here.
    let mut refused: Vec<Vec<Option<ResponseError>>> = Vec::new();
    for topic in &req.topics {
        let meta = cluster.topics.get(topic.name.as_str());
        refused.push(
            topic
                .partitions
                .iter()
                .map(|p| {
                    if let Err(e) = util::partition_uid(meta, p.partition_index) {
                        return Some(e);
                    }
                    if p.committed_metadata.as_ref().is_some_and(|m| m.len() > MAX_METADATA_BYTES) {
                        return Some(ResponseError::OffsetMetadataTooLarge);
                    }
                    offsets.push(CommittedOffset {
                        topic: topic.name.to_string(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        commit_timestamp: timestamp,
                    });
                    None
                })
                .collect(),
        );
    }
    if offsets.is_empty() {
        return now(ResponseKind::OffsetCommit(answer(&req, &refused, Ok(()))));
    }
    let command = GroupCommand::Commit { group: req.group_id.to_string(), offsets };
    let submitted = broker.replication.submit_group(owner.uid, command).await;
    drop(turn);
    match submitted {
        Err(e) => now(ResponseKind::OffsetCommit(answer(&req, &refused, Err(not_coordinator(&e))))),
        Ok(applied) => Reply::Later(Box::pin(async move {
            let result = applied.await.map_err(|e| not_coordinator(&e));
            Some(ResponseKind::OffsetCommit(answer(&req, &refused, result)))
        })),
    }
}

/// The response: each partition refused here keeps its error; the rest get `result`.
fn answer(
    req: &OffsetCommitRequest,
    refused: &[Vec<Option<ResponseError>>],
    result: Result<(), ResponseError>,
) -> OffsetCommitResponse {
    let mut response = OffsetCommitResponse::default();
    response.topics = req
        .topics
        .iter()
        .zip(refused)
        .map(|(topic, errors)| {
            let partitions = topic
                .partitions
                .iter()
                .zip(errors)
                .map(|(p, refused)| {
                    let error = refused.or(result.err());
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.map_or(0, |e| e.code()))
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(topic.name.clone()).with_partitions(partitions)
        })
        .collect();
    response
}

fn every_partition(req: &OffsetCommitRequest, result: Result<(), ResponseError>) -> OffsetCommitResponse {
    let refused: Vec<Vec<Option<ResponseError>>> = req.topics.iter().map(|t| vec![None; t.partitions.len()]).collect();
    answer(req, &refused, result)
}
