//! ListOffsets (key 2): the earliest, latest, max-timestamp or first-at-timestamp
//! offset of each partition.

use std::sync::Arc;

use bytes::Bytes;
use chronik_replication::record_batch::BatchHeader;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::{RecordBatchDecoder, TimestampType};

use super::util;
use crate::broker::Broker;
use crate::errors;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

pub(crate) async fn handle(broker: &Arc<Broker>, version: i16, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let cluster = broker.replication.cluster();
    let mut response = ListOffsetsResponse::default();
    for topic in req.topics {
        let name = topic.name.0.as_str();
        let mut result = ListOffsetsTopicResponse::default();
        result.name = util::topic_name(name);
        for p in topic.partitions {
            let mut out = ListOffsetsPartitionResponse::default();
            out.partition_index = p.partition_index;
            let answer = match util::leader_view(broker, cluster.topics.get(name), p.partition_index) {
                Ok((uid, view)) => match util::check_leader_epoch(p.current_leader_epoch, view.leader_epoch()) {
                    Ok(()) => {
                        if version >= 4 {
                            out.leader_epoch = view.leader_epoch();
                        }
                        lookup(broker, version, uid, &view, p.timestamp).await
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match answer {
                Ok(found) => (out.offset, out.timestamp) = found.unwrap_or((-1, -1)),
                Err(e) => {
                    out.error_code = errors::code(&e);
                    out.leader_epoch = -1;
                }
            }
            result.partitions.push(out);
        }
        response.topics.push(result);
    }
    response
}

/// The (offset, timestamp) answering `timestamp`; `None` when no record matches.
async fn lookup(
    broker: &Arc<Broker>,
    version: i16,
    uid: u64,
    view: &chronik_replication::PartitionView,
    timestamp: i64,
) -> Result<Option<(i64, i64)>, ResponseError> {
    let target = match timestamp {
        LATEST => return Ok(Some((view.high_watermark(), -1))),
        EARLIEST | EARLIEST_LOCAL => return Ok(Some((view.log_start_offset(), -1))),
        MAX_TIMESTAMP if version >= 7 => None,
        ts if ts >= 0 => Some(ts),
        _ => return Err(ResponseError::InvalidRequest),
    };
    let (start, end) = (view.log_start_offset(), view.high_watermark());
    let b = broker.clone();
    let batch = tokio::task::spawn_blocking(move || b.replication.batches_by_timestamp(uid, target))
        .await
        .map_err(|_| ResponseError::UnknownServerError)?
        .map_err(|e| errors::replication(&e))?;
    let Some(batch) = batch else { return Ok(None) };
    Ok(find_record(batch, target, start, end))
}

/// In stored batches (concatenated, in offset order): the first record at or after
/// `target`, or (with `None`) the first record with the greatest timestamp; only records
/// in `[start, end)` count.
fn find_record(batches: Vec<u8>, target: Option<i64>, start: i64, end: i64) -> Option<(i64, i64)> {
    let mut rest = Bytes::from(batches);
    let mut best: Option<(i64, i64)> = None;
    while !rest.is_empty() {
        let (len, max_timestamp) = BatchHeader::parse(&rest).map(|h| (h.len(), h.max_timestamp())).ok()?;
        let set = RecordBatchDecoder::decode(&mut rest.split_to(len)).ok()?;
        for r in set.records.iter().filter(|r| (start..end).contains(&r.offset)) {
            let ts = if r.timestamp_type == TimestampType::LogAppend { max_timestamp } else { r.timestamp };
            match target {
                Some(t) if ts >= t => return Some((r.offset, ts)),
                Some(_) => {}
                // Strictly greater: keep the first record with the maximum.
                None if best.is_none_or(|b| ts > b.1) => best = Some((r.offset, ts)),
                None => {}
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

    fn batch(base: i64, timestamps: &[i64]) -> Vec<u8> {
        let records: Vec<Record> = timestamps
            .iter()
            .enumerate()
            .map(|(i, ts)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: i as i32,
                timestamp: *ts,
                key: None,
                value: Some(Bytes::from_static(b"v")),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions { version: 2, compression: Compression::None };
        RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
        buf.to_vec()
    }

    #[test]
    fn finds_first_record_at_or_after_timestamp() {
        let b = batch(10, &[100, 300, 200, 300]);
        assert_eq!(find_record(b.clone(), Some(150), 0, 14), Some((11, 300)));
        assert_eq!(find_record(b.clone(), Some(100), 0, 14), Some((10, 100)));
        assert_eq!(find_record(b.clone(), Some(400), 0, 14), None);
        // Records before the log start or at the high watermark do not count.
        assert_eq!(find_record(b.clone(), Some(150), 12, 14), Some((12, 200)));
        assert_eq!(find_record(b, Some(150), 0, 11), None);
    }

    #[test]
    fn max_timestamp_takes_the_first_maximum() {
        let b = batch(10, &[100, 300, 200, 300]);
        assert_eq!(find_record(b.clone(), None, 0, 14), Some((11, 300)));
        assert_eq!(find_record(b.clone(), None, 12, 14), Some((13, 300)));
        assert_eq!(find_record(b, None, 14, 20), None);
    }

    #[test]
    fn later_unindexed_batches_are_searched_too() {
        // After a trim the index may point at a batch (max 1000) whose records are gone;
        // the answer lies in a later batch that never raised the maximum.
        let mut batches = batch(0, &[1000]);
        batches.extend(batch(10, &[500]));
        batches.extend(batch(20, &[900]));
        assert_eq!(find_record(batches.clone(), Some(800), 10, 30), Some((20, 900)));
        assert_eq!(find_record(batches, None, 10, 30), Some((20, 900)));
    }

    #[test]
    fn garbage_finds_nothing() {
        assert_eq!(find_record(vec![1, 2, 3], None, 0, 10), None);
    }
}
