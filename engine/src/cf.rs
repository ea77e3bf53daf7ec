//! Column-family names: the closed vocabulary of what a node stores.

/// Node id, cluster id, format version.
pub const META: &str = "meta";
/// The metadata group's state machine: topics, configs, counters.
pub const CLUSTER: &str = "cluster";
/// Record batches: partition uid ++ base offset -> batch bytes.
pub const LOG: &str = "log";
/// partition uid ++ max timestamp ++ base offset -> empty.
pub const TIME_INDEX: &str = "time_index";
/// partition uid -> state row; partition uid ++ producer id -> producer state.
pub const PARTITION: &str = "partition";
/// offsets-partition uid ++ group row key -> consumer group rows (committed offsets,
/// group records). The row keys below the uid are defined by replication's group machine.
pub const GROUPS: &str = "groups";
/// transactional id -> transaction state.
pub const TXN: &str = "txn";

pub const ALL: &[&str] = &[META, CLUSTER, LOG, TIME_INDEX, PARTITION, GROUPS, TXN];
