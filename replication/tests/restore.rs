//! A store copied from a live node (a RocksDB checkpoint) plus a Raft log seeded from
//! it starts as a node that serves everything applied before the copy, replays
//! nothing, and continues offsets where they stopped.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chronik_engine::Engine;
use chronik_replication::command::MetaCommand;
use chronik_replication::offline::{seed_raft_log, LogReader};
use chronik_replication::{MetaOutcome, Replication, ReplicationConfig};
use chronik_tests::raw::TestBatch;

fn batch(count: usize) -> Bytes {
    let values = vec![b"restored".as_slice(); count];
    TestBatch { first_timestamp: 1000, ..TestBatch::default() }.encode(&values)
}

async fn wait_leader(r: &Replication, uid: u64) {
    for _ in 0..500 {
        if r.partition(uid).is_some_and(|v| v.leader() == Some(1)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("partition {uid} elected no leader");
}

#[tokio::test]
async fn a_checkpoint_with_a_seeded_log_restarts_where_it_was_taken() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live_engine = Arc::new(Engine::open(&dir.path().join("live/db")).expect("engine"));
    let live = Replication::start(ReplicationConfig::new(1, dir.path().join("live/raft")), live_engine.clone())
        .expect("replication");
    let create = MetaCommand::CreateTopic {
        name: "t".into(),
        topic_id: [3; 16],
        replicas: vec![vec![1]],
        configs: Default::default(),
    };
    assert_eq!(live.propose_meta(create).await.expect("create"), MetaOutcome::Done);
    let uid = live.cluster().topics["t"].partitions[0].uid;
    wait_leader(&live, uid).await;
    for _ in 0..3 {
        live.submit_append(uid, batch(3)).await.expect("submit").await.expect("applied");
    }

    // Copy while the node runs; the copy's writes are applied but were never flushed.
    let restored_dir = dir.path().join("restored");
    std::fs::create_dir_all(&restored_dir).expect("mkdir");
    live_engine.checkpoint(&restored_dir.join("db")).expect("checkpoint");
    live.submit_append(uid, batch(1)).await.expect("submit").await.expect("applied after the copy");
    {
        let engine = Engine::open(&restored_dir.join("db")).expect("open copy");
        let seeded = seed_raft_log(&restored_dir.join("raft"), &engine, 1).expect("seed");
        assert_eq!(seeded.iter().map(|g| g.group).collect::<Vec<_>>(), vec![0, uid]);
        assert!(seeded.iter().all(|g| g.applied_index > 0), "{seeded:?}");
        let err = seed_raft_log(&restored_dir.join("raft"), &engine, 1).expect_err("seeding twice");
        assert!(err.to_string().contains("already holds a Raft log"), "{err}");
    }

    let engine = Arc::new(Engine::open(&restored_dir.join("db")).expect("engine"));
    let restored =
        Replication::start(ReplicationConfig::new(1, restored_dir.join("raft")), engine).expect("restored replication");
    wait_leader(&restored, uid).await;
    let view = restored.partition(uid).expect("view");
    assert_eq!(view.high_watermark(), 9, "what was applied before the copy, and nothing after");
    let next = restored.submit_append(uid, batch(2)).await.expect("submit").await.expect("applied");
    assert_eq!(next.base_offset, 9, "offsets continue");
    let mut out = Vec::new();
    assert_eq!(restored.read(uid, 0, 1 << 20, true, &mut out).expect("read").batches, 4);
    restored.shutdown();

    // The Raft log of the restored node starts right after the seeded applied index.
    let scratch = tempfile::tempdir().expect("scratch");
    let reader = LogReader::open_copy(&restored_dir.join("raft"), scratch.path()).expect("reader");
    assert!(reader.groups().contains(&uid));
    let log = reader.group(uid, 100).expect("group log");
    let first = log.entries.first().expect("entries after the restart");
    assert_eq!(first.index, log.truncated.0 + 1);
    live.shutdown();
}
