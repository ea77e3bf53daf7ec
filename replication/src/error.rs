use thiserror::Error;

/// Why an append was refused at apply (the same answer on every replica).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AppendError {
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    #[error("out of order sequence number")]
    OutOfOrderSequence,
    #[error("producer epoch is older than the current one")]
    InvalidProducerEpoch,
}

#[derive(Debug, Clone, Error)]
pub enum ReplicationError {
    #[error("partition is not hosted on this node")]
    UnknownPartition,
    #[error("this node is not the leader")]
    NotLeader,
    #[error("offset {offset} is out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange { offset: i64, log_start: i64, high_watermark: i64 },
    #[error("append refused: {0}")]
    Append(AppendError),
    #[error("replication is shutting down")]
    Shutdown,
    #[error("storage: {0}")]
    Storage(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<chronik_engine::Error> for ReplicationError {
    fn from(e: chronik_engine::Error) -> Self {
        ReplicationError::Storage(e.to_string())
    }
}

impl From<raft_engine::Error> for ReplicationError {
    fn from(e: raft_engine::Error) -> Self {
        ReplicationError::Storage(e.to_string())
    }
}

impl From<raft::Error> for ReplicationError {
    fn from(e: raft::Error) -> Self {
        ReplicationError::Internal(e.to_string())
    }
}
