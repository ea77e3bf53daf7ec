//! The durable write path below Kafka: engine append/read of batches, and a full Raft
//! round (propose -> raft-engine fsync -> apply into RocksDB) for 1, 100 and 1,000 groups.

use std::sync::Arc;

use chronik_engine::{Durability, Engine};
use chronik_replication::command::MetaCommand;
use chronik_replication::{Replication, ReplicationConfig};
use chronik_tests::raw::TestBatch;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// A v2 batch of `count` records of `size` bytes each.
fn batch(count: usize, size: usize) -> bytes::Bytes {
    let value = vec![b'v'; size];
    TestBatch::default().encode(&vec![value.as_slice(); count])
}

fn engine_append_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path()).expect("open");
    let data = batch(64, 1024);
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Bytes(data.len() as u64));
    let mut offset = 0i64;
    group.bench_function("append 64x1KiB batch (memtable)", |b| {
        b.iter(|| {
            let mut wb = engine.batch();
            wb.put_batch(1, offset, &data);
            engine.write(wb, Durability::Memtable).expect("write");
            offset += 64;
        })
    });
    group.throughput(Throughput::Bytes(1 << 20));
    group.bench_function("read 1 MiB from the middle", |b| {
        let mut out = Vec::with_capacity(2 << 20);
        b.iter(|| {
            out.clear();
            engine.read_batches(1, offset / 2, offset, 1 << 20, true, &mut out).expect("read");
        })
    });
    group.finish();
}

fn raft_round(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("raft round");
    group.sample_size(20);
    for partitions in [1usize, 100, 1000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Arc::new(Engine::open(&dir.path().join("db")).expect("open"));
        let replication =
            Replication::start(ReplicationConfig::new(1, dir.path().join("raft")), engine).expect("replication");
        runtime.block_on(async {
            replication
                .propose_meta(MetaCommand::CreateTopic {
                    name: "bench".into(),
                    topic_id: [1; 16],
                    replicas: vec![vec![1]; partitions],
                    configs: Default::default(),
                })
                .await
                .expect("create");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        });
        let uids: Vec<u64> = replication.cluster().topics["bench"].partitions.iter().map(|p| p.uid).collect();
        let data = batch(16, 1024);
        group.throughput(Throughput::Bytes((data.len() * partitions) as u64));
        group.bench_function(format!("append 16 KiB to each of {partitions} partitions"), |b| {
            b.iter_batched(
                || (),
                |_| {
                    runtime.block_on(async {
                        let mut pending = Vec::with_capacity(uids.len());
                        for uid in &uids {
                            pending.push(replication.submit_append(*uid, data.clone()).await.expect("submit"));
                        }
                        for p in pending {
                            p.await.expect("applied");
                        }
                    })
                },
                BatchSize::SmallInput,
            )
        });
        replication.shutdown();
    }
    group.finish();
}

criterion_group!(benches, engine_append_read, raft_round);
criterion_main!(benches);
