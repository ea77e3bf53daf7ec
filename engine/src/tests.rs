use super::*;

fn open() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path()).expect("open");
    (dir, engine)
}

fn append(engine: &Engine, uid: u64, batches: &[(i64, &[u8])]) {
    let mut wb = engine.batch();
    for (base, data) in batches {
        wb.put_batch(uid, *base, data);
    }
    engine.write(wb, Durability::Memtable).expect("write");
}

fn read(engine: &Engine, uid: u64, from: i64, end: i64, max_bytes: usize) -> Vec<u8> {
    let mut out = Vec::new();
    engine.read_batches(uid, from, end, max_bytes, true, &mut out).expect("read");
    out
}

#[test]
fn fetch_inside_a_batch_returns_that_batch() {
    let (_dir, engine) = open();
    append(&engine, 7, &[(0, b"aaaa"), (4, b"bb"), (6, b"cccccc")]);
    append(&engine, 8, &[(0, b"other")]);
    assert_eq!(read(&engine, 7, 0, 12, 100), b"aaaabbcccccc");
    assert_eq!(read(&engine, 7, 5, 12, 100), b"bbcccccc");
    assert_eq!(read(&engine, 7, 6, 12, 100), b"cccccc");
    // The end bound is exclusive on base offsets: the last batch is not yet visible.
    assert_eq!(read(&engine, 7, 0, 6, 100), b"aaaabb");
    assert_eq!(read(&engine, 8, 0, 1, 100), b"other");
    assert_eq!(read(&engine, 9, 0, 100, 100), b"");
}

#[test]
fn max_bytes_stops_at_whole_batches_but_returns_one() {
    let (_dir, engine) = open();
    append(&engine, 1, &[(0, b"aaaa"), (4, b"bb")]);
    assert_eq!(read(&engine, 1, 0, 10, 5), b"aaaa");
    assert_eq!(read(&engine, 1, 0, 10, 2), b"aaaa");
    let mut out = Vec::new();
    assert_eq!(engine.read_batches(1, 0, 10, 2, false, &mut out).expect("read"), 0);
}

#[test]
fn retention_deletes_whole_batches_before_an_offset() {
    let (_dir, engine) = open();
    append(&engine, 3, &[(0, b"a"), (10, b"b"), (20, b"c")]);
    let mut wb = engine.batch();
    wb.delete_batches_before(3, 20);
    engine.write(wb, Durability::Memtable).expect("write");
    assert_eq!(read(&engine, 3, 0, 30, 100), b"c");
    assert_eq!(engine.batch_sizes(3, 0, 30).expect("sizes"), vec![(20, 1)]);
}

#[test]
fn time_index_seeks_by_timestamp() {
    let (_dir, engine) = open();
    let mut wb = engine.batch();
    wb.put_time_index(5, 100, 0);
    wb.put_time_index(5, 200, 10);
    wb.put_time_index(6, 50, 0);
    engine.write(wb, Durability::Memtable).expect("write");
    assert_eq!(engine.time_index_seek(5, 150).expect("seek"), Some((200, 10)));
    assert_eq!(engine.time_index_seek(5, 100).expect("seek"), Some((100, 0)));
    assert_eq!(engine.time_index_seek(5, 201).expect("seek"), None);
    assert_eq!(engine.time_index_last(5).expect("last"), Some((200, 10)));
    assert_eq!(engine.time_index_before(5, 10).expect("before"), vec![(100, 0)]);
}

#[test]
fn state_survives_reopen_after_flush_and_delete_partition_clears_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = PartitionState {
        applied_index: 9,
        applied_term: 2,
        log_start_offset: 3,
        next_offset: 40,
        max_timestamp: -1,
        size_bytes: 1234,
    };
    {
        let engine = Engine::open(dir.path()).expect("open");
        let mut wb = engine.batch();
        wb.put_partition_state(4, &state);
        wb.put_producer_state(4, 77, b"p");
        wb.put_batch(4, 0, b"x");
        wb.put_cluster(b"t/a", b"1");
        engine.write(wb, Durability::Memtable).expect("write");
        engine.flush().expect("flush");
    }
    let engine = Engine::open(dir.path()).expect("reopen");
    assert_eq!(engine.partition_state(4).expect("state"), Some(state));
    assert_eq!(engine.producer_states(4).expect("producers"), vec![(77, b"p".to_vec())]);
    assert_eq!(engine.cluster_scan(b"t/").expect("scan"), vec![(b"t/a".to_vec(), b"1".to_vec())]);
    let mut wb = engine.batch();
    wb.delete_partition(4);
    engine.write(wb, Durability::Synced).expect("write");
    assert_eq!(engine.partition_state(4).expect("state"), None);
    assert!(engine.producer_states(4).expect("producers").is_empty());
    assert_eq!(read(&engine, 4, 0, 10, 10), b"");
}

#[test]
fn corrupt_state_row_is_an_error() {
    assert!(PartitionState::decode(&[1, 2, 3]).is_err());
    let row = PartitionState::default().encode();
    assert_eq!(PartitionState::decode(&row).expect("decode"), PartitionState::default());
}

#[test]
fn group_rows_scan_by_prefix_and_delete_by_prefix() {
    let (_dir, engine) = open();
    let mut wb = engine.batch();
    wb.put_group_row(7, b"g1/a", b"1");
    wb.put_group_row(7, b"g1/b", b"2");
    wb.put_group_row(7, b"g2/a", b"3");
    wb.put_group_row(8, b"g1/a", b"4");
    engine.write(wb, Durability::Memtable).unwrap();
    let rows = engine.group_rows(7, b"g1/").unwrap();
    assert_eq!(rows, vec![(b"g1/a".to_vec(), b"1".to_vec()), (b"g1/b".to_vec(), b"2".to_vec())]);
    assert_eq!(engine.group_rows(7, b"").unwrap().len(), 3);

    let mut wb = engine.batch();
    wb.delete_group_rows(7, b"g1/");
    engine.write(wb, Durability::Memtable).unwrap();
    assert_eq!(engine.group_rows(7, b"").unwrap(), vec![(b"g2/a".to_vec(), b"3".to_vec())]);

    let mut wb = engine.batch();
    wb.delete_partition(7);
    engine.write(wb, Durability::Memtable).unwrap();
    assert!(engine.group_rows(7, b"").unwrap().is_empty());
    assert_eq!(engine.group_rows(8, b"").unwrap().len(), 1, "other partitions keep their rows");
}

#[test]
fn a_checkpoint_holds_memtable_only_writes_and_every_state_row() {
    let (dir, engine) = open();
    append(&engine, 3, &[(0, b"batch")]);
    let mut wb = engine.batch();
    let state = PartitionState { applied_index: 9, applied_term: 2, next_offset: 1, ..Default::default() };
    wb.put_partition_state(3, &state);
    wb.put_producer_state(3, 77, b"producer row");
    wb.put_partition_state(0, &PartitionState { applied_index: 4, ..Default::default() });
    engine.write(wb, Durability::Memtable).expect("write");

    let copy = dir.path().join("checkpoint");
    engine.checkpoint(&copy).expect("checkpoint");
    let restored = Engine::open_read_only(&copy).expect("open checkpoint");
    assert_eq!(restored.stored_batch(3, 0).expect("read"), Some(b"batch".to_vec()));
    let states = restored.partition_states().expect("states");
    assert_eq!(states, vec![(0, PartitionState { applied_index: 4, ..Default::default() }), (3, state)]);
}

#[test]
fn a_secondary_sees_flushed_writes_of_a_live_primary() {
    let (dir, engine) = open();
    append(&engine, 5, &[(0, b"flushed")]);
    engine.flush().expect("flush");
    let scratch = tempfile::tempdir().expect("tempdir");
    let secondary = Engine::open_secondary(dir.path(), scratch.path()).expect("secondary");
    assert_eq!(secondary.stored_batch(5, 0).expect("read"), Some(b"flushed".to_vec()));
    assert_eq!(secondary.scan(cf::LOG, &keys::uid_prefix(5), 10).expect("scan").len(), 1);
    assert!(matches!(secondary.scan("nope", b"", 1), Err(Error::UnknownColumnFamily(_))));
}

/// The nice value of every thread of this process named `name`.
fn nice_of_threads(name: &str) -> Vec<i64> {
    let mut nices = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("tasks") {
        let task = task.expect("task").path();
        let (Ok(comm), Ok(stat)) =
            (std::fs::read_to_string(task.join("comm")), std::fs::read_to_string(task.join("stat")))
        else {
            continue; // the thread ended since the listing
        };
        if comm.trim() == name {
            // Fields after the command name start at field 3; nice is field 19.
            let after_comm = stat.rsplit_once(')').expect("stat").1;
            nices.push(after_comm.split_whitespace().nth(16).expect("nice").parse().expect("a number"));
        }
    }
    nices
}

#[test]
fn flushes_run_at_the_lowest_cpu_priority() {
    let (_dir, engine) = open();
    append(&engine, 1, &[(0, b"x")]);
    // A thread takes its pool's priority when it runs its first job: this flush.
    engine.flush().expect("flush");
    let nices = nice_of_threads("rocksdb:high");
    assert!(!nices.is_empty() && nices.iter().all(|&n| n == 19), "nice of the flush threads: {nices:?}");
}
