//! `chronik dump`: read a node's data directory without changing it and print what is
//! stored, as JSON lines (or a table).
//!
//! [`DataDir`] opens `<dir>/db` as a RocksDB secondary (works on a stopped node, a
//! restored backup, and a running node, whose unflushed writes it does not see) and
//! `<dir>/raft` through a copy. Each subcommand is one function writing [`Row`]s to an
//! [`Output`]; adding one is adding a function and a match arm in the CLI.
//! Records are decoded with `kafka-protocol`, batch headers and CRCs with replication's
//! `record_batch`, Raft entries with replication's `command`.

mod check;
mod output;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use bytes::Bytes;
use chronik_engine::Engine;
use chronik_replication::command::{self, PartitionCommand};
use chronik_replication::groups;
use chronik_replication::offline::{LogReader, META_GROUP};
use chronik_replication::record_batch::BatchHeader;
use chronik_replication::{ClusterMeta, TopicMeta};
use kafka_protocol::records::RecordBatchDecoder;
use serde_json::{json, Value};

pub use check::{check, Problem};
pub use output::{Format, Output, Row};

/// Bytes of batches read from the store at a time.
const READ_CHUNK_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is not a Chronik data directory (no db/ inside)")]
    NotADataDir(PathBuf),
    #[error("cannot open the store in {path}: {source}")]
    Open { path: PathBuf, source: chronik_engine::Error },
    #[error("store: {0}")]
    Engine(#[from] chronik_engine::Error),
    #[error("raft log: {0}")]
    Raft(#[from] chronik_replication::ReplicationError),
    #[error("no topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("partition {topic}-{partition}, batch at offset {offset}: {detail}")]
    BadBatch { topic: String, partition: i32, offset: i64, detail: String },
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A data directory opened read-only.
pub struct DataDir {
    dir: PathBuf,
    engine: Engine,
    meta: ClusterMeta,
    scratch: tempfile::TempDir,
}

impl DataDir {
    pub fn open(dir: &Path) -> Result<DataDir> {
        let db = dir.join("db");
        if !db.join("CURRENT").is_file() {
            return Err(Error::NotADataDir(dir.to_path_buf()));
        }
        let scratch = tempfile::tempdir()?;
        let engine = Engine::open_secondary(&db, &scratch.path().join("secondary"))
            .map_err(|source| Error::Open { path: db.clone(), source })?;
        let meta = ClusterMeta::load(&engine)?;
        Ok(DataDir { dir: dir.to_path_buf(), engine, meta, scratch })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn meta(&self) -> &ClusterMeta {
        &self.meta
    }

    fn topic(&self, name: &str) -> Result<&TopicMeta> {
        self.meta.topics.get(name).map(|t| t.as_ref()).ok_or_else(|| Error::UnknownTopic(name.to_string()))
    }

    /// The partition uid of `topic`-`partition`.
    pub fn partition_uid(&self, topic: &str, partition: i32) -> Result<u64> {
        let t = self.topic(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| t.partitions.get(p))
            .map(|p| p.uid)
            .ok_or_else(|| Error::UnknownPartition { topic: topic.to_string(), partition })
    }

    /// A reader over a copy of the Raft log (made on first use).
    fn raft_log(&self) -> Result<LogReader> {
        let copy = self.scratch.path().join(format!("raft-{}", unique_suffix()));
        Ok(LogReader::open_copy(&self.dir.join("raft"), &copy)?)
    }

    /// Every stored batch of `uid` from the one holding `from`, in order, read a chunk
    /// at a time; `visit` gets each batch's base offset and bytes and returns false to stop.
    fn for_each_batch(&self, uid: u64, from: i64, mut visit: impl FnMut(i64, &[u8]) -> bool) -> Result<()> {
        // Base offsets below `next` were visited (a read starts at the batch holding its
        // offset, so each chunk after the first begins with the last batch seen).
        let mut next = i64::MIN;
        let mut read_from = from;
        loop {
            let mut chunk = Vec::new();
            self.engine.read_batches(uid, read_from, i64::MAX, READ_CHUNK_BYTES, true, &mut chunk)?;
            let mut rest = chunk.as_slice();
            let mut progressed = false;
            while !rest.is_empty() {
                // A value whose header does not parse is passed on whole; `visit` reports it.
                let len = BatchHeader::parse(rest).map(|h| h.len()).unwrap_or(rest.len());
                let (batch, tail) = rest.split_at(len);
                rest = tail;
                let base = i64::from_be_bytes(batch.get(..8).and_then(|b| b.try_into().ok()).unwrap_or_default());
                if base < next {
                    continue;
                }
                progressed = true;
                if !visit(base, batch) {
                    return Ok(());
                }
                next = base + 1;
                read_from = next;
            }
            if !progressed {
                return Ok(());
            }
        }
    }
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos:x}")
}

/// Bytes as JSON: a string when they are UTF-8, else `{"base64": ...}`; null when absent.
pub fn bytes_value(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(text) => Value::from(text),
            Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
        },
    }
}

/// `topics`: name, id, partition count, the configs set on the topic.
pub fn topics<W: std::io::Write>(data: &DataDir, out: &mut Output<W>) -> Result<()> {
    for topic in data.meta.topics.values() {
        out.row(vec![
            ("topic", Value::from(topic.name.clone())),
            ("id", Value::from(hex(&topic.id))),
            ("partitions", Value::from(topic.partitions.len())),
            ("configs", json!(topic.configs)),
        ])?;
    }
    Ok(())
}

/// `groups`: every consumer group with its record and committed offsets, one row per
/// committed offset (a group without offsets gets one row without them).
pub fn groups<W: std::io::Write>(data: &DataDir, out: &mut Output<W>) -> Result<()> {
    let Some(topic) = data.meta.topics.get("__consumer_offsets") else { return Ok(()) };
    for (index, partition) in topic.partitions.iter().enumerate() {
        for (group, record) in groups::read_groups(&data.engine, partition.uid)? {
            let base = |row: &mut Vec<(&'static str, Value)>| {
                row.push(("group", Value::from(group.clone())));
                row.push(("type", Value::from(if record.group_type.is_empty() { "classic" } else { "consumer" })));
                row.push(("protocol_type", Value::from(record.protocol_type.clone())));
                row.push(("generation", Value::from(record.generation)));
                row.push(("offsets_partition", Value::from(index)));
            };
            let offsets = groups::read_offsets(&data.engine, partition.uid, &group)?;
            if offsets.is_empty() {
                let mut row = Vec::new();
                base(&mut row);
                out.row(row)?;
            }
            for o in offsets {
                let mut row = Vec::new();
                base(&mut row);
                row.push(("topic", Value::from(o.topic)));
                row.push(("partition", Value::from(o.partition)));
                row.push(("offset", Value::from(o.offset)));
                row.push(("leader_epoch", Value::from(o.leader_epoch)));
                row.push(("metadata", json!(o.metadata)));
                row.push(("commit_timestamp", Value::from(o.commit_timestamp)));
                out.row(row)?;
            }
        }
    }
    Ok(())
}

/// `partitions`: each partition's uid, replicas and state row.
pub fn partitions<W: std::io::Write>(data: &DataDir, out: &mut Output<W>) -> Result<()> {
    for topic in data.meta.topics.values() {
        for (index, p) in topic.partitions.iter().enumerate() {
            let state = data.engine.partition_state(p.uid)?.unwrap_or_default();
            out.row(vec![
                ("topic", Value::from(topic.name.clone())),
                ("partition", Value::from(index)),
                ("uid", Value::from(p.uid)),
                ("replicas", json!(p.replicas)),
                ("log_start_offset", Value::from(state.log_start_offset)),
                ("next_offset", Value::from(state.next_offset)),
                ("size_bytes", Value::from(state.size_bytes)),
                ("max_timestamp", Value::from(state.max_timestamp)),
                ("applied_index", Value::from(state.applied_index)),
                ("applied_term", Value::from(state.applied_term)),
            ])?;
        }
    }
    Ok(())
}

/// Which records `records` prints.
#[derive(Debug, Clone)]
pub struct RecordsQuery {
    pub topic: String,
    pub partition: i32,
    /// First offset printed; default the log start.
    pub from_offset: Option<i64>,
    /// Records printed at most; default all.
    pub limit: Option<usize>,
}

/// `records`: every record a consumer would read, from the log start (or
/// `from_offset`) to the high watermark, with its batch's attributes.
pub fn records<W: std::io::Write>(data: &DataDir, query: &RecordsQuery, out: &mut Output<W>) -> Result<()> {
    let uid = data.partition_uid(&query.topic, query.partition)?;
    let state = data.engine.partition_state(uid)?.unwrap_or_default();
    let from = query.from_offset.unwrap_or(state.log_start_offset).max(state.log_start_offset);
    let limit = query.limit.unwrap_or(usize::MAX);
    let mut printed = 0usize;
    let mut failure = None;
    data.for_each_batch(uid, from, |base, batch| {
        let mut buf = Bytes::copy_from_slice(batch);
        let set = match RecordBatchDecoder::decode(&mut buf) {
            Ok(set) => set,
            Err(e) => {
                failure = Some(Error::BadBatch {
                    topic: query.topic.clone(),
                    partition: query.partition,
                    offset: base,
                    detail: e.to_string(),
                });
                return false;
            }
        };
        for record in set.records {
            if record.offset < from || record.offset >= state.next_offset || record.control {
                continue;
            }
            if printed >= limit {
                return false;
            }
            let headers: Vec<Value> = record
                .headers
                .iter()
                .map(|(k, v)| json!({ "key": k.as_str(), "value": bytes_value(v.as_deref()) }))
                .collect();
            let row = vec![
                ("offset", Value::from(record.offset)),
                ("timestamp", Value::from(record.timestamp)),
                ("timestamp_type", Value::from(format!("{:?}", record.timestamp_type))),
                ("key", bytes_value(record.key.as_deref())),
                ("value", bytes_value(record.value.as_deref())),
                ("headers", Value::from(headers)),
                ("batch_base_offset", Value::from(base)),
                ("compression", Value::from(format!("{:?}", set.compression).to_lowercase())),
                ("transactional", Value::from(record.transactional)),
                ("producer_id", Value::from(record.producer_id)),
                ("producer_epoch", Value::from(record.producer_epoch)),
                ("sequence", Value::from(record.sequence)),
                ("leader_epoch", Value::from(record.partition_leader_epoch)),
            ];
            if let Err(e) = out.row(row) {
                failure = Some(e.into());
                return false;
            }
            printed += 1;
        }
        true
    })?;
    failure.map_or(Ok(()), Err)
}

/// `raft-log --group G`: the group's hard state, then each entry decoded (partition
/// commands summarised, metadata commands as their JSON).
pub fn raft_log<W: std::io::Write>(data: &DataDir, group: u64, limit: usize, out: &mut Output<W>) -> Result<()> {
    let reader = data.raft_log()?;
    let log = reader.group(group, limit)?;
    let hs = log.hard_state.unwrap_or_default();
    out.row(vec![
        ("group", Value::from(group)),
        ("term", Value::from(hs.term)),
        ("vote", Value::from(hs.vote)),
        ("commit", Value::from(hs.commit)),
        ("voters", json!(log.conf_state.map(|c| c.voters).unwrap_or_default())),
        ("compacted_index", Value::from(log.truncated.0)),
        ("compacted_term", Value::from(log.truncated.1)),
    ])?;
    for entry in log.entries {
        let command = if entry.conf_change {
            json!({ "conf_change": entry.data.len() })
        } else if entry.data.is_empty() {
            json!("empty (leader election)")
        } else if group == META_GROUP {
            command::decode_meta(&entry.data).map_or(json!("undecodable"), |c| json!(c))
        } else {
            match command::decode_partition(&entry.context, &entry.data) {
                Some(PartitionCommand::Append(records)) => append_summary(&records),
                Some(PartitionCommand::Trim { log_start_offset }) => json!({ "trim": log_start_offset }),
                Some(PartitionCommand::Group(group)) => json!({ "group": group }),
                None => json!("undecodable"),
            }
        };
        out.row(vec![
            ("index", Value::from(entry.index)),
            ("term", Value::from(entry.term)),
            ("bytes", Value::from(entry.data.len())),
            ("command", command),
        ])?;
    }
    Ok(())
}

fn append_summary(records: &[u8]) -> Value {
    let mut batches = Vec::new();
    for header in chronik_replication::record_batch::batches(records) {
        match header {
            Ok(h) => batches.push(json!({
                "records": h.records_count(),
                "bytes": h.len(),
                "producer_id": h.producer_id(),
                "base_sequence": h.base_sequence(),
                "attributes": h.attributes(),
            })),
            Err(e) => batches.push(json!({ "error": e.to_string() })),
        }
    }
    json!({ "append": batches })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
