//! The replication API end to end in one process: metadata through group 0, appends
//! at dense offsets, reads up to the high watermark, trims, and recovery on reopen.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chronik_engine::Engine;
use chronik_replication::command::{self, MetaCommand, PartitionCommand};
use chronik_replication::offline::LogReader;
use chronik_replication::{MetaOutcome, MetaRejection, RaftLogFiles, Replication, ReplicationConfig, ReplicationError};
use chronik_tests::raw::TestBatch;

fn batch(count: usize, first_timestamp: i64) -> Bytes {
    batch_of(count, 10, first_timestamp)
}

/// A batch of `count` records of `value_bytes` each.
fn batch_of(count: usize, value_bytes: usize, first_timestamp: i64) -> Bytes {
    let value = vec![b'v'; value_bytes];
    let values = vec![value.as_slice(); count];
    TestBatch { first_timestamp, ..TestBatch::default() }.encode(&values)
}

fn open(dir: &std::path::Path) -> Replication {
    let engine = Arc::new(Engine::open(&dir.join("db")).expect("engine"));
    Replication::start(ReplicationConfig::new(1, dir.join("raft")), engine).expect("replication")
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

/// Creates topic `name` with one partition on node 1 and waits for its leader.
async fn create_single_partition_topic(r: &Replication, name: &str) -> u64 {
    let create = MetaCommand::CreateTopic {
        name: name.into(),
        topic_id: [name.len() as u8; 16],
        replicas: vec![vec![1]],
        configs: Default::default(),
    };
    assert_eq!(r.propose_meta(create).await.expect("create"), MetaOutcome::Done);
    let uid = r.cluster().topics[name].partitions[0].uid;
    wait_leader(r, uid).await;
    uid
}

#[tokio::test]
async fn appends_reads_trims_and_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uid;
    {
        let r = open(dir.path());
        let create = MetaCommand::CreateTopic {
            name: "t".into(),
            topic_id: [9; 16],
            replicas: vec![vec![1], vec![1]],
            configs: Default::default(),
        };
        assert_eq!(r.propose_meta(create.clone()).await.expect("create"), MetaOutcome::Done);
        assert_eq!(
            r.propose_meta(create).await.expect("create again"),
            MetaOutcome::Rejected(MetaRejection::TopicExists)
        );
        uid = r.cluster().topics["t"].partitions[1].uid;
        wait_leader(&r, uid).await;

        // Proposals queued in order are applied in order, at dense offsets.
        let mut pending = Vec::new();
        for i in 0..10 {
            pending.push(r.submit_append(uid, batch(3, 1000 + 10 * i)).await.expect("submit"));
        }
        for (i, p) in pending.into_iter().enumerate() {
            assert_eq!(p.await.expect("applied").base_offset, 3 * i as i64);
        }
        let view = r.partition(uid).expect("view");
        assert_eq!(view.high_watermark(), 30);

        // A read inside a batch starts at that batch.
        let mut out = Vec::new();
        let read = r.read(uid, 4, 1 << 20, true, &mut out).expect("read");
        assert_eq!(read.batches, 9);
        assert_eq!(i64::from_be_bytes(out[..8].try_into().expect("8 bytes")), 3);

        // A batch whose record count disagrees with its offsets is refused at apply with
        // nothing stored (the CRC is the produce path's check).
        let mut bad = batch(2, 5).to_vec();
        bad[57..61].copy_from_slice(&7i32.to_be_bytes());
        let refused = r.submit_append(uid, bad.into()).await.expect("submit").await;
        assert!(matches!(refused, Err(ReplicationError::Append(_))), "got {refused:?}");
        assert_eq!(view.high_watermark(), 30);

        assert_eq!(r.trim(uid, 7).await.expect("trim"), 7);
        assert!(matches!(r.read(uid, 0, 100, true, &mut out), Err(ReplicationError::OffsetOutOfRange { .. })));
        // The batch holding offset 7 (base 6) is kept; ListOffsets by time still finds it.
        assert!(r.batches_by_timestamp(uid, Some(1020)).expect("lookup").is_some());
        r.shutdown();
    }
    let r = open(dir.path());
    wait_leader(&r, uid).await;
    let view = r.partition(uid).expect("view after reopen");
    assert_eq!((view.log_start_offset(), view.high_watermark()), (7, 30));
    let next = r.submit_append(uid, batch(1, 2000)).await.expect("submit").await.expect("applied");
    assert_eq!(next.base_offset, 30);
    let epochs = r.epoch_starts(uid).expect("epochs");
    assert_eq!(epochs.len(), 2, "a restart starts a new leader epoch: {epochs:?}");
    assert_eq!(epochs[1].1, 30);
    assert!(epochs[1].0 > epochs[0].0);
}

#[tokio::test]
async fn the_raft_log_is_compacted_once_it_grows_without_waiting_for_the_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(Engine::open(&dir.path().join("db")).expect("engine"));
    let mut config = ReplicationConfig::new(1, dir.path().join("raft"));
    config.log_gc_interval = Duration::from_secs(3600);
    config.log_gc_growth = 256 << 10;
    let r = Replication::start(config, engine).expect("replication");
    let uid = create_single_partition_topic(&r, "t").await;

    // 64 batches of 10 records of 1 KiB: 640 KiB of log, well past the growth threshold.
    for i in 0..64 {
        r.submit_append(uid, batch_of(10, 1024, i)).await.expect("submit").await.expect("applied");
    }
    let mut compacted = false;
    for _ in 0..500 {
        if r.first_log_index(uid).is_none_or(|first| first > 32) {
            compacted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(compacted, "log still starts at {:?} an hour before the interval", r.first_log_index(uid));
    r.shutdown();
    drop(r);

    // The records the compacted entries carried come back from RocksDB after a restart.
    let r = open(dir.path());
    wait_leader(&r, uid).await;
    assert_eq!(r.partition(uid).expect("view").high_watermark(), 640);
    let mut out = Vec::new();
    assert_eq!(r.read(uid, 0, 1 << 20, true, &mut out).expect("read").batches, 64);
}

/// Opens every raft-engine log file in `dir` not yet in `seen` (by inode). Holding them
/// open keeps a deleted file's inode from being reused, so distinct inodes are distinct
/// files, while a recycled file keeps its inode under its new name.
fn hold_raft_log_files(dir: &std::path::Path, seen: &mut std::collections::HashMap<u64, std::fs::File>) {
    use std::os::unix::fs::MetadataExt;
    for entry in std::fs::read_dir(dir).expect("raft dir") {
        let entry = entry.expect("entry");
        if !entry.file_name().to_string_lossy().contains(".raftlog") {
            continue;
        }
        // Renamed or purged since the listing: seen on a later call, or gone.
        let Ok(file) = std::fs::File::open(entry.path()) else { continue };
        let inode = file.metadata().expect("metadata").ino();
        seen.entry(inode).or_insert(file);
    }
}

#[tokio::test]
async fn purged_raft_log_files_are_written_over_and_a_restart_reads_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raft_dir = dir.path().join("raft");
    let files = RaftLogFiles { file_bytes: 1 << 20, purge_bytes: 4 << 20 };
    let start = |dir: &std::path::Path| {
        let engine = Arc::new(Engine::open(&dir.join("db")).expect("engine"));
        let mut config = ReplicationConfig::new(1, dir.join("raft"));
        config.raft_log_files = files;
        config.log_gc_growth = 1 << 20;
        Replication::start(config, engine).expect("replication")
    };
    let r = start(dir.path());
    let uid = create_single_partition_topic(&r, "t").await;

    // 24 MiB through 1 MiB files: without purging and recycling that is 24 files.
    let mut files_seen = std::collections::HashMap::new();
    for i in 0..192 {
        r.submit_append(uid, batch_of(16, 8 << 10, i)).await.expect("submit").await.expect("applied");
        if i % 8 == 0 {
            tokio::time::sleep(Duration::from_millis(120)).await; // longer than one log GC poll
            hold_raft_log_files(&raft_dir, &mut files_seen);
        }
    }
    hold_raft_log_files(&raft_dir, &mut files_seen);
    let names = std::fs::read_dir(&raft_dir).expect("raft dir").count();
    assert!(names <= 10, "{names} files in the raft dir: the log was not purged");
    let distinct = files_seen.len();
    assert!(distinct <= 12, "{distinct} distinct raft log files for 24 MiB: purged files were not reused");
    drop(files_seen);
    r.shutdown();
    drop(r);

    let r = start(dir.path());
    wait_leader(&r, uid).await;
    assert_eq!(r.partition(uid).expect("view").high_watermark(), 192 * 16);
    let mut out = Vec::new();
    assert_eq!(r.read(uid, 0, 64 << 20, true, &mut out).expect("read").batches, 192);
    let next = r.submit_append(uid, batch(1, 5000)).await.expect("submit").await.expect("applied");
    assert_eq!(next.base_offset, 192 * 16);
}

/// Bytes of the raft-engine files in `dir` that are in the page cache, and in all
/// (`fincore` from util-linux).
fn raft_log_cached_and_total(dir: &std::path::Path) -> (u64, u64) {
    let files: Vec<_> = std::fs::read_dir(dir)
        .expect("raft dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".raftlog"))
        .collect();
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--raw", "--output", "RES,SIZE"])
        .args(&files)
        .output()
        .expect("run fincore (util-linux)");
    assert!(out.status.success(), "fincore: {}", String::from_utf8_lossy(&out.stderr));
    let mut sums = (0, 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut fields = line.split_whitespace().map(|f| f.parse::<u64>().expect("a byte count"));
        sums.0 += fields.next().expect("RES");
        sums.1 += fields.next().expect("SIZE");
    }
    sums
}

#[tokio::test]
async fn the_raft_log_is_written_around_the_page_cache_and_reads_back_whole() {
    // On disk, not tmpfs: the page cache of a tmpfs file is the file.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let r = open(dir.path());
    let uid = create_single_partition_topic(&r, "t").await;

    // 48 MiB in batches of about 128 KiB, of sizes that end anywhere in a disk block.
    let mut sent = Vec::new();
    for i in 0..384 {
        let data = batch_of(16, (8 << 10) + (i as usize % 7) * 13, i);
        r.submit_append(uid, data.clone()).await.expect("submit").await.expect("applied");
        sent.push(data);
    }
    let raft_dir = dir.path().join("raft");
    let (cached, total) = raft_log_cached_and_total(&raft_dir);
    assert!(total >= 48 << 20, "{total} bytes of raft log for 48 MiB appended");
    // Written with O_DIRECT (log_files.rs): at most the odd block read back when a file
    // is opened for appending is cached.
    assert!(cached <= 1 << 20, "{cached} of {total} raft log bytes in the page cache");
    r.shutdown();
    drop(r);

    // Every entry reads back from the files, byte for byte.
    let log = LogReader::open_copy(&raft_dir, &dir.path().join("copy")).expect("log copy");
    let stored: Vec<_> =
        log.group(uid, usize::MAX).expect("group log").entries.into_iter().filter(|e| !e.data.is_empty()).collect();
    assert_eq!(stored.len(), sent.len(), "one entry per append");
    for (entry, data) in stored.iter().zip(&sent) {
        let command = command::decode_partition(&entry.context, &entry.data);
        assert_eq!(command, Some(PartitionCommand::Append(data.clone())), "entry {}", entry.index);
    }
}

#[tokio::test]
async fn a_round_larger_than_one_apply_batch_is_applied_whole_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = open(dir.path());
    let uid = create_single_partition_topic(&r, "t").await;

    // 16 MiB queued before any is applied: the driver takes them in one or two rounds,
    // and apply writes them in batches of about 4 MiB.
    let mut sent = Vec::new();
    let mut pending = Vec::new();
    for i in 0..128 {
        let data = batch_of(16, 8 << 10, i);
        pending.push(r.submit_append(uid, data.clone()).await.expect("submit"));
        sent.push(data);
    }
    for (i, applied) in pending.into_iter().enumerate() {
        assert_eq!(applied.await.expect("applied").base_offset, i as i64 * 16);
    }
    let check = |r: &Replication| {
        assert_eq!(r.partition(uid).expect("view").high_watermark(), 128 * 16);
        let mut out = Vec::new();
        assert_eq!(r.read(uid, 0, 64 << 20, true, &mut out).expect("read").batches, 128);
        // Stored as sent, with base offsets rewritten (bytes 0..8) and the leader epoch (12..16).
        let mut at = 0;
        for (i, data) in sent.iter().enumerate() {
            let stored = &out[at..at + data.len()];
            assert_eq!(i64::from_be_bytes(stored[..8].try_into().expect("8 bytes")), i as i64 * 16);
            assert_eq!((&stored[8..12], &stored[16..]), (&data[8..12], &data[16..]), "batch {i}");
            at += data.len();
        }
    };
    check(&r);
    r.shutdown();
    drop(r);
    let r = open(dir.path());
    wait_leader(&r, uid).await;
    check(&r);
}
