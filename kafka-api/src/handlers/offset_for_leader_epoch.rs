//! OffsetForLeaderEpoch (key 23): the end offset of a leader epoch, which consumers use
//! to detect log truncation.

use std::sync::Arc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::util;
use crate::broker::Broker;
use crate::errors;

pub(crate) fn handle(
    broker: &Arc<Broker>,
    _version: i16,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let cluster = broker.replication.cluster();
    let mut response = OffsetForLeaderEpochResponse::default();
    for topic in req.topics {
        let name = topic.topic.0.as_str();
        let mut result = OffsetForLeaderTopicResult::default();
        result.topic = util::topic_name(name);
        for p in topic.partitions {
            let mut out = EpochEndOffset::default();
            out.partition = p.partition;
            let answer = util::leader_view(broker, cluster.topics.get(name), p.partition).and_then(|(uid, view)| {
                util::check_leader_epoch(p.current_leader_epoch, view.leader_epoch())?;
                // A few keys in RocksDB: cheap enough to read here.
                let epochs = broker.replication.epoch_starts(uid).map_err(|e| errors::replication(&e))?;
                let current = i64::from(view.leader_epoch());
                Ok(epoch_end(&epochs, current, view.high_watermark(), i64::from(p.leader_epoch)))
            });
            match answer {
                Ok((epoch, end)) => (out.leader_epoch, out.end_offset) = (epoch, end),
                Err(e) => out.error_code = errors::code(&e),
            }
            result.partitions.push(out);
        }
        response.topics.push(result);
    }
    response
}

/// Kafka's end-offset rule over `epochs` (epoch, start offset), ascending, with the
/// current epoch ending at the high watermark: the largest epoch `<= requested` and the
/// start of the next epoch; an epoch below all known ones answers itself with the first
/// start; one above the current epoch is undefined (-1, -1).
fn epoch_end(epochs: &[(i64, i64)], current: i64, high_watermark: i64, requested: i64) -> (i32, i64) {
    const UNDEFINED: (i32, i64) = (-1, -1);
    if requested < 0 || requested > current {
        return UNDEFINED;
    }
    if requested == current {
        return (epoch_i32(current), high_watermark);
    }
    let next = epochs.iter().find(|e| e.0 > requested);
    let end = next.map_or(high_watermark, |e| e.1);
    match epochs.iter().rev().find(|e| e.0 <= requested) {
        Some(floor) => (epoch_i32(floor.0), end),
        None => (epoch_i32(requested), end),
    }
}

fn epoch_i32(epoch: i64) -> i32 {
    i32::try_from(epoch).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::epoch_end;

    const EPOCHS: &[(i64, i64)] = &[(2, 0), (3, 10), (5, 25)];

    #[test]
    fn current_epoch_ends_at_the_high_watermark() {
        assert_eq!(epoch_end(EPOCHS, 5, 40, 5), (5, 40));
        // The current epoch may have no recorded start yet.
        assert_eq!(epoch_end(EPOCHS, 6, 40, 6), (6, 40));
        assert_eq!(epoch_end(EPOCHS, 7, 40, 6), (5, 40));
    }

    #[test]
    fn past_epochs_end_where_the_next_began() {
        assert_eq!(epoch_end(EPOCHS, 5, 40, 2), (2, 10));
        assert_eq!(epoch_end(EPOCHS, 5, 40, 3), (3, 25));
        // Epoch 4 never started: the floor is 3, ending where 5 began.
        assert_eq!(epoch_end(EPOCHS, 5, 40, 4), (3, 25));
    }

    #[test]
    fn unknown_epochs() {
        assert_eq!(epoch_end(EPOCHS, 5, 40, 1), (1, 0));
        assert_eq!(epoch_end(EPOCHS, 5, 40, 6), (-1, -1));
        assert_eq!(epoch_end(EPOCHS, 5, 40, -1), (-1, -1));
        assert_eq!(epoch_end(&[], 1, 0, 1), (1, 0));
    }
}
