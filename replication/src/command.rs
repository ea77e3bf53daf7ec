//! Commands carried in Raft entries, and their encoding.
//!
//! An entry's data is one tag byte and a body, except for `Append`: its data is the
//! Kafka `records` bytes exactly as received (a slice of the request, never copied
//! before the Raft log) and its tag is the entry's context. Applying an append needs
//! no decoding step; metadata and group commands are small and encoded as JSON for
//! readability in `chronik dump`. Appends written with the tag in their data (before
//! 2026-11-30) still decode.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::groups::GroupCommand;

const APPEND: u8 = 1;
const TRIM: u8 = 2;
const META: u8 = 3;
const GROUP: u8 = 4;

/// A command for a partition group.
#[derive(Debug, Clone, PartialEq)]
pub enum PartitionCommand {
    /// Append one or more v2 record batches at the log end.
    Append(Bytes),
    /// Move the log start offset forward (DeleteRecords, retention).
    Trim { log_start_offset: i64 },
    /// A consumer-group change (only on `__consumer_offsets` partitions), as JSON.
    Group(GroupCommand),
}

/// A command for the metadata group (group 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaCommand {
    CreateTopic {
        name: String,
        topic_id: [u8; 16],
        /// Replica node ids of each partition, in partition order.
        replicas: Vec<Vec<u64>>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        /// The partition count the proposer saw; a concurrent change makes apply refuse.
        current_count: usize,
        /// Replicas of each new partition.
        replicas: Vec<Vec<u64>>,
    },
    AlterTopicConfigs {
        name: String,
        /// With `replace`, configs not in `set` return to their defaults (AlterConfigs).
        replace: bool,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    },
    AllocateProducerId,
    /// A node announces (or updates) its Kafka address, rack and data centre.
    RegisterNode(crate::metadata::NodeInfo),
    /// Leaders report the partitions they lead, so nodes without a replica can answer
    /// Metadata. Older epochs than the recorded one are ignored at apply.
    ReportLeaders(Vec<crate::metadata::LeaderRecord>),
    /// Sets the cluster id if none is set yet: the first node to propose names the cluster.
    InitCluster {
        cluster_id: String,
    },
    /// Membership of group 0 (proposed as Raft configuration changes, see
    /// [`MetaCommand::membership`]): a node joins as a learner at `rpc_addr`...
    AddNode {
        id: u64,
        rpc_addr: String,
    },
    /// ...a learner becomes a voter...
    PromoteNode {
        id: u64,
    },
    /// ...or a node leaves the cluster.
    RemoveNode {
        id: u64,
    },
}

impl MetaCommand {
    /// The Raft configuration change a membership command is carried by, if it is one.
    pub fn membership(&self) -> Option<raft::eraftpb::ConfChange> {
        use raft::eraftpb::{ConfChange, ConfChangeType};
        let (change_type, node_id) = match self {
            MetaCommand::AddNode { id, .. } => (ConfChangeType::AddLearnerNode, *id),
            MetaCommand::PromoteNode { id } => (ConfChangeType::AddNode, *id),
            MetaCommand::RemoveNode { id } => (ConfChangeType::RemoveNode, *id),
            _ => return None,
        };
        let mut cc = ConfChange::default();
        cc.set_change_type(change_type);
        cc.node_id = node_id;
        Some(cc)
    }
}

/// What a proposal puts in its Raft entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntryPayload {
    pub context: Bytes,
    pub data: Bytes,
}

impl EntryPayload {
    /// A payload carried in the data alone, with no context (all but appends).
    pub fn from_data(data: Vec<u8>) -> EntryPayload {
        EntryPayload { context: Bytes::new(), data: data.into() }
    }
}

pub fn encode_partition(command: &PartitionCommand) -> EntryPayload {
    let tagged = |tag: u8, body: &[u8]| {
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(tag);
        out.extend_from_slice(body);
        EntryPayload::from_data(out)
    };
    match command {
        PartitionCommand::Append(records) => {
            EntryPayload { context: Bytes::from_static(&[APPEND]), data: records.clone() }
        }
        PartitionCommand::Trim { log_start_offset } => tagged(TRIM, &log_start_offset.to_be_bytes()),
        // Serializing these plain data types cannot fail.
        PartitionCommand::Group(cmd) => tagged(GROUP, &serde_json::to_vec(cmd).unwrap_or_default()),
    }
}

/// Decodes a partition entry from its context and data; `None` if it is not one.
pub fn decode_partition(context: &[u8], data: &Bytes) -> Option<PartitionCommand> {
    if context == [APPEND] {
        return Some(PartitionCommand::Append(data.clone()));
    }
    match *data.first()? {
        APPEND => Some(PartitionCommand::Append(data.slice(1..))),
        TRIM => {
            let raw: [u8; 8] = data.get(1..9)?.try_into().ok()?;
            Some(PartitionCommand::Trim { log_start_offset: i64::from_be_bytes(raw) })
        }
        GROUP => serde_json::from_slice(&data[1..]).ok().map(PartitionCommand::Group),
        _ => None,
    }
}

pub fn encode_meta(command: &MetaCommand) -> Vec<u8> {
    let mut out = vec![META];
    // Serializing these plain data types cannot fail.
    out.extend(serde_json::to_vec(command).unwrap_or_default());
    out
}

pub fn decode_meta(data: &[u8]) -> Option<MetaCommand> {
    match data.split_first()? {
        (&META, body) => serde_json::from_slice(body).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_commands_round_trip() {
        for cmd in [
            PartitionCommand::Append(Bytes::from_static(b"batch bytes")),
            PartitionCommand::Trim { log_start_offset: 42 },
            PartitionCommand::Group(GroupCommand::DeleteGroup { group: "g".into() }),
        ] {
            let payload = encode_partition(&cmd);
            assert_eq!(decode_partition(&payload.context, &payload.data), Some(cmd));
        }
        // An append is its records, untouched; one with the tag in its data still decodes.
        let records = Bytes::from_static(b"batch bytes");
        let append = encode_partition(&PartitionCommand::Append(records.clone()));
        assert_eq!(append.data.as_ptr(), records.as_ptr());
        let tagged = Bytes::from_static(b"\x01batch bytes");
        assert_eq!(decode_partition(&[], &tagged), Some(PartitionCommand::Append(records)));
        assert_eq!(decode_partition(&[], &Bytes::from_static(&[TRIM, 1])), None);
        assert_eq!(decode_partition(&[], &Bytes::new()), None);
        assert_eq!(decode_partition(&[], &Bytes::from_static(b"\x04{")), None);
    }

    #[test]
    fn meta_commands_round_trip() {
        let cmd = MetaCommand::CreateTopic {
            name: "t".into(),
            topic_id: [7; 16],
            replicas: vec![vec![1], vec![1]],
            configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
        };
        assert_eq!(decode_meta(&encode_meta(&cmd)), Some(cmd));
        assert_eq!(decode_meta(b"\x03{not json"), None);
    }
}
