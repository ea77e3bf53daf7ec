//! `check`: consistency of a data directory. Each problem is one row; none means clean.
//!
//! Checked: every stored batch parses and its CRC-32C matches; offsets are dense (each
//! batch starts where the previous ended, keys match the batches' base offsets); the
//! state row agrees with the log (next offset = end of the last batch, stored bytes =
//! sum of batch sizes, log start inside the first batch); no batches belong to an
//! unknown partition; each group's applied index is at most its Raft log's last index.

use std::collections::BTreeSet;

use chronik_engine::{cf, keys};
use chronik_replication::offline::META_GROUP;
use chronik_replication::record_batch::BatchHeader;
use serde_json::Value;

use crate::{DataDir, Output, Result};

/// One inconsistency, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `topic-partition`, `group N` or `raft`.
    pub place: String,
    pub offset: Option<i64>,
    pub detail: String,
}

/// Runs every check, prints one row per problem, and returns the problems.
pub fn check<W: std::io::Write>(data: &DataDir, out: &mut Output<W>) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    let mut known = BTreeSet::new();
    for topic in data.meta().topics.values() {
        for (index, p) in topic.partitions.iter().enumerate() {
            known.insert(p.uid);
            check_partition(data, &format!("{}-{index}", topic.name), p.uid, &mut problems)?;
        }
    }
    // Batches whose uid no topic owns (a deleted topic whose delete was lost, say).
    let mut owners = BTreeSet::new();
    let mut from = keys::uid_prefix(0).to_vec();
    while let Some(key) = data.engine().next_key(cf::LOG, &from)? {
        let Some((uid, _)) = keys::decode_log_key(&key) else { break };
        owners.insert(uid);
        match uid.checked_add(1) {
            Some(next) => from = keys::uid_prefix(next).to_vec(),
            None => break,
        }
    }
    for uid in owners.difference(&known) {
        problems.push(Problem {
            place: format!("uid {uid}"),
            offset: None,
            detail: "batches of no known partition".into(),
        });
    }
    check_raft(data, &known, &mut problems)?;
    for p in &problems {
        out.row(vec![
            ("place", Value::from(p.place.clone())),
            ("offset", p.offset.map_or(Value::Null, Value::from)),
            ("problem", Value::from(p.detail.clone())),
        ])?;
    }
    Ok(problems)
}

fn check_partition(data: &DataDir, place: &str, uid: u64, problems: &mut Vec<Problem>) -> Result<()> {
    let state = data.engine().partition_state(uid)?.unwrap_or_default();
    let mut expected: Option<i64> = None;
    let mut first: Option<(i64, i64)> = None;
    let mut size = 0u64;
    let mut problem = |offset: Option<i64>, detail: String| {
        problems.push(Problem { place: place.to_string(), offset, detail });
    };
    let mut stopped = false;
    data.for_each_batch(uid, 0, |key_base, batch| {
        size += batch.len() as u64;
        let header = match BatchHeader::parse_checked(batch) {
            Ok(h) => h,
            Err(e) => {
                problem(Some(key_base), format!("bad batch: {e}"));
                // The end of a batch that does not parse is unknown: stop at it.
                stopped = true;
                return false;
            }
        };
        if let Some(want) = expected {
            if key_base != want {
                problem(Some(key_base), format!("offsets not dense: expected a batch at {want}"));
            }
        }
        let end = key_base + i64::from(header.last_offset_delta()) + 1;
        first.get_or_insert((key_base, end));
        expected = Some(end);
        true
    })?;
    if stopped {
        return Ok(());
    }
    let end = expected.unwrap_or(state.log_start_offset);
    if end != state.next_offset {
        problem(None, format!("state row says next offset {}, the log ends at {end}", state.next_offset));
    }
    if size != state.size_bytes {
        problem(None, format!("state row says {} stored bytes, the batches hold {size}", state.size_bytes));
    }
    if let Some((base, first_end)) = first {
        if state.log_start_offset < base || state.log_start_offset >= first_end {
            problem(
                None,
                format!("log start {} is outside the first batch [{base}, {first_end})", state.log_start_offset),
            );
        }
    }
    Ok(())
}

fn check_raft(data: &DataDir, known: &BTreeSet<u64>, problems: &mut Vec<Problem>) -> Result<()> {
    let reader = match data.raft_log() {
        Ok(reader) => reader,
        Err(e) => {
            problems.push(Problem { place: "raft".into(), offset: None, detail: e.to_string() });
            return Ok(());
        }
    };
    for group in std::iter::once(META_GROUP).chain(known.iter().copied()) {
        let Some(state) = data.engine().partition_state(group)? else { continue };
        let log = reader.group(group, 1)?;
        let last = reader.last_index(group).unwrap_or(0).max(log.truncated.0);
        if state.applied_index > last {
            problems.push(Problem {
                place: format!("group {group}"),
                offset: None,
                detail: format!("applied index {} is beyond the Raft log's last index {last}", state.applied_index),
            });
        }
    }
    Ok(())
}
