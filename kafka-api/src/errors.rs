//! The one table from internal errors to Kafka error codes.

use chronik_replication::{AppendError, MetaRejection, ReplicationError};
use kafka_protocol::error::ResponseError;

pub(crate) fn code(e: &ResponseError) -> i16 {
    e.code()
}

/// The Kafka error for a failed partition operation.
pub(crate) fn replication(e: &ReplicationError) -> ResponseError {
    match e {
        ReplicationError::UnknownPartition => ResponseError::UnknownTopicOrPartition,
        ReplicationError::NotLeader => ResponseError::NotLeaderOrFollower,
        ReplicationError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        ReplicationError::Append(AppendError::CorruptBatch(_)) => ResponseError::CorruptMessage,
        ReplicationError::Append(AppendError::OutOfOrderSequence) => ResponseError::OutOfOrderSequenceNumber,
        ReplicationError::Append(AppendError::InvalidProducerEpoch) => ResponseError::InvalidProducerEpoch,
        ReplicationError::Shutdown => ResponseError::NotLeaderOrFollower,
        ReplicationError::Storage(_) => ResponseError::KafkaStorageError,
        ReplicationError::Internal(_) => ResponseError::UnknownServerError,
    }
}

pub(crate) fn meta_rejection(r: &MetaRejection) -> ResponseError {
    match r {
        MetaRejection::TopicExists => ResponseError::TopicAlreadyExists,
        MetaRejection::UnknownTopic => ResponseError::UnknownTopicOrPartition,
        MetaRejection::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        MetaRejection::Membership(_) => ResponseError::InvalidRequest,
    }
}
