//! Fetch (key 1): whole batches up to the high watermark, with long polling
//! (max_wait_ms / min_bytes) and the response and partition byte limits.
//!
//! Fetch sessions (KIP-227): Chronik does not keep sessions; it answers every request
//! as a full fetch with session id 0, which tells clients to keep sending full
//! requests. An incremental request for a session id we never issued gets
//! FETCH_SESSION_ID_NOT_FOUND.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chronik_replication::{PartitionView, ReplicationError};
use futures::future::{select_all, FutureExt};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ResponseKind};

use super::{util, Reply};
use crate::broker::Broker;
use crate::errors;

/// One partition to read, resolved up front.
struct Wanted {
    topic: usize,
    partition: i32,
    fetch_offset: i64,
    max_bytes: usize,
    target: Result<Arc<PartitionView>, ResponseError>,
}

struct Read {
    error: Option<ResponseError>,
    high_watermark: i64,
    log_start_offset: i64,
    records: Bytes,
}

impl Read {
    fn failed(error: ResponseError, high_watermark: i64, log_start_offset: i64) -> Read {
        Read { error: Some(error), high_watermark, log_start_offset, records: Bytes::new() }
    }
}

pub(crate) fn handle(broker: &Arc<Broker>, version: i16, request: FetchRequest) -> Reply {
    let broker = broker.clone();
    Reply::Later(Box::pin(async move { Some(ResponseKind::Fetch(fetch(broker, version, request).await)) }))
}

/// First Fetch version with client metadata (KIP-392): like Kafka, a replica that is not
/// the leader serves such fetches from its own applied (so committed) data.
const FOLLOWER_FETCH_VERSION: i16 = 11;

async fn fetch(broker: Arc<Broker>, version: i16, request: FetchRequest) -> FetchResponse {
    let mut response = FetchResponse::default();
    if request.session_id != 0 {
        response.error_code = ResponseError::FetchSessionIdNotFound.code();
        return response;
    }
    let cluster = broker.replication.cluster();
    let mut names = Vec::new();
    let mut wanted = Vec::new();
    for (t, topic) in request.topics.iter().enumerate() {
        let name = topic.topic.0.as_str().to_string();
        let meta = cluster.topics.get(&name);
        for p in &topic.partitions {
            let target = util::partition_uid(meta, p.partition).and_then(|uid| {
                let view = broker.replication.partition(uid).ok_or(ResponseError::NotLeaderOrFollower)?;
                util::check_leader_epoch(p.current_leader_epoch, view.leader_epoch())?;
                if version < FOLLOWER_FETCH_VERSION && view.leader() != Some(broker.config.node_id as u64) {
                    return Err(ResponseError::NotLeaderOrFollower);
                }
                Ok(view)
            });
            wanted.push(Wanted {
                topic: t,
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                target,
            });
        }
        names.push(name);
    }

    let deadline = tokio::time::Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if request.max_bytes <= 0 { usize::MAX } else { request.max_bytes as usize };
    let views: Vec<Arc<PartitionView>> = wanted.iter().filter_map(|w| w.target.as_ref().ok().cloned()).collect();
    let reads = loop {
        // Register for changes before reading, so an append in between is not missed.
        let mut changes: Vec<_> = views.iter().map(|v| Box::pin(v.changed())).collect();
        for c in &mut changes {
            c.as_mut().enable();
        }
        let reads = read_all(&broker, &wanted, max_bytes).await;
        let bytes: usize = reads.iter().map(|r| r.records.len()).sum();
        let errors = reads.iter().any(|r| r.error.is_some());
        if bytes >= min_bytes || errors || changes.is_empty() || tokio::time::Instant::now() >= deadline {
            break reads;
        }
        let any_change = select_all(changes.into_iter().map(|c| c.boxed()));
        if tokio::time::timeout_at(deadline, any_change).await.is_err() {
            break read_all(&broker, &wanted, max_bytes).await;
        }
    };

    for name in &names {
        response.responses.push(FetchableTopicResponse::default().with_topic(util::topic_name(name)));
    }
    for (w, read) in wanted.iter().zip(reads) {
        let mut part = PartitionData::default()
            .with_partition_index(w.partition)
            .with_high_watermark(read.high_watermark)
            .with_last_stable_offset(read.high_watermark)
            .with_log_start_offset(read.log_start_offset)
            .with_preferred_read_replica(BrokerId(-1));
        if let Some(e) = read.error {
            part.error_code = e.code();
        }
        part.aborted_transactions = (request.isolation_level == 1).then(Vec::new);
        part.records = Some(read.records);
        response.responses[w.topic].partitions.push(part);
    }
    response
}

/// Reads every partition once, within the response byte budget (KIP-74: the first
/// batch of the first partition with data is returned even if it alone is larger).
/// All record sets go into one pooled buffer; each partition's is a slice of it.
async fn read_all(broker: &Arc<Broker>, wanted: &[Wanted], max_bytes: usize) -> Vec<Read> {
    let jobs: Vec<_> = wanted
        .iter()
        .map(|w| (w.target.as_ref().map(|v| v.uid).map_err(|e| *e), w.fetch_offset, w.max_bytes))
        .collect();
    let broker = broker.clone();
    let result = tokio::task::spawn_blocking(move || {
        let wanted_bytes = jobs.iter().fold(0usize, |sum, job| sum.saturating_add(job.2));
        let mut buf = broker.fetch_buffers.take(wanted_bytes.min(max_bytes).min(MAX_FETCH_RESERVE));
        let mut budget = max_bytes;
        let mut first = true;
        let mut reads: Vec<(Read, std::ops::Range<usize>)> = jobs
            .into_iter()
            .map(|(target, offset, partition_max)| {
                let start = buf.len();
                let read = match target {
                    Ok(uid) => read_one(&broker, uid, offset, partition_max.min(budget), first, &mut buf),
                    Err(e) => Read::failed(e, -1, -1),
                };
                if buf.len() > start {
                    first = false;
                }
                budget = budget.saturating_sub(buf.len() - start);
                (read, start..buf.len())
            })
            .collect();
        let records = broker.fetch_buffers.share(buf);
        for (read, range) in &mut reads {
            read.records = records.slice(range.clone());
        }
        reads.into_iter().map(|(read, _)| read).collect::<Vec<_>>()
    })
    .await;
    result.unwrap_or_else(|_| wanted.iter().map(|_| Read::failed(ResponseError::UnknownServerError, -1, -1)).collect())
}

/// The most one Fetch reserves up front; a larger answer grows its buffer as it goes.
const MAX_FETCH_RESERVE: usize = 64 << 20;

fn read_one(broker: &Broker, uid: u64, offset: i64, limit: usize, min_one: bool, buf: &mut Vec<u8>) -> Read {
    match broker.replication.read(uid, offset, limit, min_one, buf) {
        Ok(outcome) => Read {
            error: None,
            high_watermark: outcome.high_watermark,
            log_start_offset: outcome.log_start_offset,
            records: Bytes::new(),
        },
        Err(e) => {
            let (hw, start) = match &e {
                ReplicationError::OffsetOutOfRange { high_watermark, log_start, .. } => (*high_watermark, *log_start),
                _ => (-1, -1),
            };
            Read::failed(errors::replication(&e), hw, start)
        }
    }
}
