//! Snapshots of the metadata group (group 0): every row of the `cluster` column family
//! as of the applied index. A node that joins after group 0's log was compacted starts
//! from one. Partition groups never need one: their logs are compacted only below what
//! every replica has (see `driver::replicated_floor`).

use chronik_engine::{Durability, Engine, PartitionState};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Snapshot};

use crate::metadata::CONF_STATE_KEY;
use crate::ReplicationError;

/// The metadata state as a snapshot. `conf` is the configuration to record when no
/// configuration change was ever applied (the bootstrap one).
pub(crate) fn build(engine: &Engine, conf: &ConfState) -> Result<Snapshot, ReplicationError> {
    let state = engine.partition_state(0)?.unwrap_or_default();
    let rows = engine.cluster_scan(b"")?;
    let conf = match rows.iter().find(|(key, _)| key == CONF_STATE_KEY) {
        Some((_, raw)) => ConfState::parse_from_bytes(raw).map_err(internal)?,
        None => conf.clone(),
    };
    let mut data = Vec::new();
    for (key, value) in &rows {
        for part in [key, value] {
            data.extend_from_slice(&(part.len() as u32).to_be_bytes());
            data.extend_from_slice(part);
        }
    }
    let mut snapshot = Snapshot { data: data.into(), ..Default::default() };
    let metadata = snapshot.mut_metadata();
    metadata.index = state.applied_index;
    metadata.term = state.applied_term;
    metadata.set_conf_state(conf);
    Ok(snapshot)
}

/// Replaces the metadata rows with the snapshot's and makes them durable: the Raft log
/// that could rebuild them is gone once the snapshot's truncation is persisted.
pub(crate) fn install(engine: &Engine, snapshot: &Snapshot) -> Result<(), ReplicationError> {
    let rows = decode(&snapshot.data).ok_or_else(|| internal("corrupt metadata snapshot"))?;
    let mut wb = engine.batch();
    for (key, _) in engine.cluster_scan(b"")? {
        wb.delete_cluster(&key);
    }
    for (key, value) in rows {
        wb.put_cluster(key, value);
    }
    let metadata = snapshot.get_metadata();
    // The configuration as of this index, also when the sender had no row for it.
    let conf = metadata.get_conf_state().write_to_bytes().map_err(internal)?;
    wb.put_cluster(CONF_STATE_KEY, &conf);
    let state = PartitionState { applied_index: metadata.index, applied_term: metadata.term, ..Default::default() };
    wb.put_partition_state(0, &state);
    engine.write(wb, Durability::Memtable)?;
    engine.flush()?;
    Ok(())
}

fn decode(mut data: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut rows = Vec::new();
    while !data.is_empty() {
        let key = take(&mut data)?;
        let value = take(&mut data)?;
        rows.push((key, value));
    }
    Some(rows)
}

/// Takes one length-prefixed part off the front of `data`.
fn take<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let part = data.get(4..4 + len)?;
    *data = &data[4 + len..];
    Some(part)
}

fn internal(e: impl std::fmt::Display) -> ReplicationError {
    ReplicationError::Internal(format!("metadata snapshot: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_replaces_the_metadata_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Engine::open(&dir.path().join("a")).expect("engine");
        let mut wb = source.batch();
        wb.put_cluster(b"topic/t", b"{}");
        wb.put_cluster(b"next/uid", &7u64.to_be_bytes());
        wb.put_partition_state(0, &PartitionState { applied_index: 12, applied_term: 3, ..Default::default() });
        source.write(wb, Durability::Memtable).expect("write");
        let bootstrap = ConfState { voters: vec![1, 2, 3], learners: vec![4], ..Default::default() };
        let snapshot = build(&source, &bootstrap).expect("build");
        assert_eq!((snapshot.get_metadata().index, snapshot.get_metadata().term), (12, 3));
        assert_eq!(snapshot.get_metadata().get_conf_state(), &bootstrap);

        let target = Engine::open(&dir.path().join("b")).expect("engine");
        let mut wb = target.batch();
        wb.put_cluster(b"topic/stale", b"{}");
        target.write(wb, Durability::Memtable).expect("write");
        install(&target, &snapshot).expect("install");
        let mut expected = source.cluster_scan(b"").expect("scan");
        expected.push((CONF_STATE_KEY.to_vec(), bootstrap.write_to_bytes().expect("encode")));
        expected.sort();
        assert_eq!(
            target.cluster_scan(b"").expect("scan"),
            expected,
            "the rows, and the configuration as of the index"
        );
        assert_eq!(target.partition_state(0).expect("state").map(|s| s.applied_index), Some(12));
        assert!(decode(&snapshot.data[..snapshot.data.len() - 1]).is_none(), "a cut snapshot is refused");
    }
}
