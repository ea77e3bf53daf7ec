//! The consumer-group state machine of `__consumer_offsets` partitions: committed
//! offsets and one record per group, stored as rows of the `groups` column family under
//! the partition's uid. Membership is not stored: it lives in the coordinator's memory
//! and members rejoin after a coordinator change.
//!
//! Row keys (after the uid): `len(group) u16 ++ group ++ 'g'` for the group record and
//! `len(group) u16 ++ group ++ 'o' ++ len(topic) u16 ++ topic ++ partition i32` for an
//! offset, so one prefix covers everything of a group and groups never interleave.

use chronik_engine::{Engine, WriteBatch};
use serde::{Deserialize, Serialize};

const GROUP_TAG: u8 = b'g';
const OFFSET_TAG: u8 = b'o';

/// A command for a `__consumer_offsets` partition. Timestamps come from the proposer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GroupCommand {
    /// Stores committed offsets.
    Commit {
        group: String,
        offsets: Vec<CommittedOffset>,
    },
    /// Stores the group's record (protocol type and generation) after a rebalance.
    PutGroup {
        group: String,
        record: GroupRecord,
    },
    DeleteOffsets {
        group: String,
        partitions: Vec<(String, i32)>,
    },
    /// Deletes the group record and every committed offset of the group.
    DeleteGroup {
        group: String,
    },
    /// Deletes the offsets committed (or left by the group becoming empty) at or before
    /// `cutoff_ms`, and the group if nothing is left. Decided at apply, so a commit that
    /// lands after the coordinator looked is kept.
    ExpireOffsets {
        group: String,
        cutoff_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp: i64,
}

/// What survives a coordinator change about a group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// "consumer" for consumers, "" for groups that only commit offsets.
    pub protocol_type: String,
    /// The last generation (classic) or group epoch (KIP-848) handed out.
    pub generation: i32,
    /// "consumer" for KIP-848 groups; empty (classic) otherwise.
    #[serde(default)]
    pub group_type: String,
    /// When the group last became empty (ms since the epoch); 0 while it has members.
    /// Offsets of an empty group expire a retention after the later of this and their commit.
    #[serde(default)]
    pub empty_since_ms: i64,
}

/// Applies `command` to partition `uid`. Only `ExpireOffsets` reads the store (the
/// caller writes what the round applied so far first); a group exists while it has a
/// record or a committed offset.
pub(crate) fn apply(
    engine: &Engine,
    uid: u64,
    command: GroupCommand,
    wb: &mut WriteBatch<'_>,
) -> chronik_engine::Result<()> {
    match command {
        GroupCommand::Commit { group, offsets } => {
            for o in &offsets {
                wb.put_group_row(uid, &offset_key(&group, &o.topic, o.partition), &encode_offset(o));
            }
        }
        GroupCommand::PutGroup { group, record } => put_group(uid, &group, &record, wb),
        GroupCommand::DeleteOffsets { group, partitions } => {
            for (topic, partition) in partitions {
                wb.delete_group_rows(uid, &offset_key(&group, &topic, partition));
            }
        }
        GroupCommand::DeleteGroup { group } => wb.delete_group_rows(uid, &group_prefix(&group)),
        GroupCommand::ExpireOffsets { group, cutoff_ms } => {
            let empty_since = read_group(engine, uid, &group)?.map_or(0, |r| r.empty_since_ms);
            let offsets = read_offsets(engine, uid, &group)?;
            let expired: Vec<&CommittedOffset> =
                offsets.iter().filter(|o| o.commit_timestamp.max(empty_since) <= cutoff_ms).collect();
            if expired.len() == offsets.len() {
                wb.delete_group_rows(uid, &group_prefix(&group));
            } else {
                for o in expired {
                    wb.delete_group_rows(uid, &offset_key(&group, &o.topic, o.partition));
                }
            }
        }
    }
    Ok(())
}

fn put_group(uid: u64, group: &str, record: &GroupRecord, wb: &mut WriteBatch<'_>) {
    // Serializing plain data cannot fail.
    wb.put_group_row(uid, &group_key(group), &serde_json::to_vec(record).unwrap_or_default());
}

/// The record of `group` (a default one if it only has offsets), if the group exists.
pub fn read_group(engine: &Engine, uid: u64, group: &str) -> chronik_engine::Result<Option<GroupRecord>> {
    let rows = engine.group_rows(uid, &group_prefix(group))?;
    let key = group_key(group);
    Ok(match rows.iter().find(|(k, _)| *k == key) {
        Some((_, value)) => Some(decode_group(value)),
        None => (!rows.is_empty()).then(GroupRecord::default),
    })
}

/// Every group stored in partition `uid` with its record, in key order.
pub fn read_groups(engine: &Engine, uid: u64) -> chronik_engine::Result<Vec<(String, GroupRecord)>> {
    let mut groups: Vec<(String, GroupRecord)> = Vec::new();
    for (key, value) in engine.group_rows(uid, &[])? {
        let Some((group, tag, _)) = split_group(&key) else { continue };
        if groups.last().is_none_or(|(last, _)| last != group) {
            groups.push((group.to_string(), GroupRecord::default()));
        }
        if tag == GROUP_TAG {
            if let Some(last) = groups.last_mut() {
                last.1 = decode_group(&value);
            }
        }
    }
    Ok(groups)
}

/// The committed offsets of `group`, ordered by topic and partition.
pub fn read_offsets(engine: &Engine, uid: u64, group: &str) -> chronik_engine::Result<Vec<CommittedOffset>> {
    let mut prefix = group_prefix(group);
    prefix.push(OFFSET_TAG);
    let mut offsets = Vec::new();
    for (key, value) in engine.group_rows(uid, &prefix)? {
        if let Some(o) = decode_offset(&key[prefix.len()..], &value) {
            offsets.push(o);
        }
    }
    Ok(offsets)
}

fn decode_group(raw: &[u8]) -> GroupRecord {
    serde_json::from_slice(raw).unwrap_or_default()
}

fn group_prefix(group: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(3 + group.len());
    key.extend_from_slice(&(group.len() as u16).to_be_bytes());
    key.extend_from_slice(group.as_bytes());
    key
}

fn group_key(group: &str) -> Vec<u8> {
    let mut key = group_prefix(group);
    key.push(GROUP_TAG);
    key
}

fn offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut key = group_prefix(group);
    key.push(OFFSET_TAG);
    key.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    key.extend_from_slice(topic.as_bytes());
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// Splits a row key into (group, tag, rest).
fn split_group(key: &[u8]) -> Option<(&str, u8, &[u8])> {
    let len = u16::from_be_bytes(key.get(..2)?.try_into().ok()?) as usize;
    let group = std::str::from_utf8(key.get(2..2 + len)?).ok()?;
    let (&tag, rest) = key.get(2 + len..)?.split_first()?;
    Some((group, tag, rest))
}

/// Value: offset i64 ++ leader epoch i32 ++ commit timestamp i64 ++ has-metadata u8 ++ metadata.
fn encode_offset(o: &CommittedOffset) -> Vec<u8> {
    let metadata = o.metadata.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(21 + metadata.len());
    out.extend_from_slice(&o.offset.to_be_bytes());
    out.extend_from_slice(&o.leader_epoch.to_be_bytes());
    out.extend_from_slice(&o.commit_timestamp.to_be_bytes());
    out.push(o.metadata.is_some() as u8);
    out.extend_from_slice(metadata.as_bytes());
    out
}

/// Decodes an offset row from its key after the tag and its value.
fn decode_offset(key: &[u8], value: &[u8]) -> Option<CommittedOffset> {
    let len = u16::from_be_bytes(key.get(..2)?.try_into().ok()?) as usize;
    let topic = std::str::from_utf8(key.get(2..2 + len)?).ok()?.to_string();
    let partition = i32::from_be_bytes(key.get(2 + len..)?.try_into().ok()?);
    let offset = i64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let leader_epoch = i32::from_be_bytes(value.get(8..12)?.try_into().ok()?);
    let commit_timestamp = i64::from_be_bytes(value.get(12..20)?.try_into().ok()?);
    let metadata = match value.get(20)? {
        0 => None,
        _ => Some(String::from_utf8_lossy(value.get(21..)?).into_owned()),
    };
    Some(CommittedOffset { topic, partition, offset, leader_epoch, metadata, commit_timestamp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chronik_engine::Durability;

    fn offset(topic: &str, partition: i32, offset: i64) -> CommittedOffset {
        CommittedOffset {
            topic: topic.into(),
            partition,
            offset,
            leader_epoch: 3,
            metadata: Some("m".into()),
            commit_timestamp: 99,
        }
    }

    fn run(engine: &Engine, uid: u64, cmd: GroupCommand) {
        let mut wb = engine.batch();
        apply(engine, uid, cmd, &mut wb).unwrap();
        engine.write(wb, Durability::Memtable).unwrap();
    }

    #[test]
    fn commits_deletes_and_groups_do_not_mix() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        // "g" is a prefix of "g2" as a string; the length prefix keeps them apart.
        run(
            &engine,
            5,
            GroupCommand::Commit { group: "g".into(), offsets: vec![offset("t", 1, 10), offset("t", 0, 7)] },
        );
        run(&engine, 5, GroupCommand::Commit { group: "g2".into(), offsets: vec![offset("t", 0, 1)] });
        let record = GroupRecord { protocol_type: "consumer".into(), generation: 4, ..Default::default() };
        run(&engine, 5, GroupCommand::PutGroup { group: "g2".into(), record: record.clone() });

        assert_eq!(read_offsets(&engine, 5, "g").unwrap(), vec![offset("t", 0, 7), offset("t", 1, 10)]);
        assert_eq!(read_group(&engine, 5, "g").unwrap(), Some(GroupRecord::default()));
        assert_eq!(read_group(&engine, 5, "g2").unwrap(), Some(record.clone()));
        assert_eq!(read_group(&engine, 5, "nope").unwrap(), None);
        let names: Vec<String> = read_groups(&engine, 5).unwrap().into_iter().map(|g| g.0).collect();
        assert_eq!(names, ["g", "g2"]);

        run(&engine, 5, GroupCommand::DeleteOffsets { group: "g".into(), partitions: vec![("t".into(), 1)] });
        assert_eq!(read_offsets(&engine, 5, "g").unwrap(), vec![offset("t", 0, 7)]);
        run(&engine, 5, GroupCommand::DeleteGroup { group: "g".into() });
        assert_eq!(read_group(&engine, 5, "g").unwrap(), None);
        assert!(read_offsets(&engine, 5, "g").unwrap().is_empty());
        assert_eq!(read_offsets(&engine, 5, "g2").unwrap().len(), 1, "the other group keeps its offsets");
        assert_eq!(read_group(&engine, 5, "g2").unwrap(), Some(record));
    }

    #[test]
    fn expiry_counts_from_the_later_of_commit_and_empty_since() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let at = |partition, ts| CommittedOffset { commit_timestamp: ts, ..offset("t", partition, 1) };
        run(&engine, 1, GroupCommand::Commit { group: "g".into(), offsets: vec![at(0, 100), at(1, 500)] });
        let record = GroupRecord { empty_since_ms: 300, ..Default::default() };
        run(&engine, 1, GroupCommand::PutGroup { group: "g".into(), record });
        run(&engine, 1, GroupCommand::ExpireOffsets { group: "g".into(), cutoff_ms: 299 });
        assert_eq!(read_offsets(&engine, 1, "g").unwrap().len(), 2, "empty only since 300");
        run(&engine, 1, GroupCommand::ExpireOffsets { group: "g".into(), cutoff_ms: 300 });
        assert_eq!(read_offsets(&engine, 1, "g").unwrap(), vec![at(1, 500)]);
        run(&engine, 1, GroupCommand::ExpireOffsets { group: "g".into(), cutoff_ms: 500 });
        assert_eq!(read_group(&engine, 1, "g").unwrap(), None, "the group goes with its last offset");
    }

    #[test]
    fn offsets_without_metadata_round_trip() {
        let o = CommittedOffset { metadata: None, ..offset("topic", 7, -1) };
        let key = offset_key("g", "topic", 7);
        assert_eq!(decode_offset(&key[4..], &encode_offset(&o)), Some(o));
        assert_eq!(decode_offset(&key[4..], &[1, 2, 3]), None);
    }
}
