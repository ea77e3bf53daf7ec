//! The Kafka side of the hot path: validating a produced record batch (framing and
//! CRC-32C), decoding a Produce request and encoding a Fetch response.

use bytes::{Bytes, BytesMut};
use chronik_replication::record_batch;
use chronik_tests::raw::TestBatch;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchResponse, ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

fn batch() -> Bytes {
    let value = vec![b'v'; 1024];
    TestBatch::default().encode(&vec![value.as_slice(); 64])
}

fn validate(c: &mut Criterion) {
    let data = batch();
    let mut group = c.benchmark_group("record batch");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("validate 64x1KiB (CRC-32C)", |b| {
        b.iter(|| record_batch::batches(&data).collect::<Result<Vec<_>, _>>().expect("valid"))
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    let records = batch();
    let topic = || TopicName(StrBytes::from_static_str("bench"));
    let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default().with_name(topic()).with_partition_data(vec![PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(records.clone()))]),
    ]);
    let mut encoded = BytesMut::new();
    produce.encode(&mut encoded, 9).expect("encode");
    let encoded = encoded.freeze();
    let fetch = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(topic())
        .with_partitions(vec![PartitionData::default().with_high_watermark(64).with_records(Some(records.clone()))])]);

    let mut group = c.benchmark_group("kafka codec");
    group.throughput(Throughput::Bytes(records.len() as u64));
    group.bench_function("decode Produce v9 (64 KiB of records)", |b| {
        b.iter(|| ProduceRequest::decode(&mut encoded.clone(), 9).expect("decode"))
    });
    group.bench_function("encode Fetch v12 response (64 KiB of records)", |b| {
        let mut out = BytesMut::with_capacity(128 << 10);
        b.iter(|| {
            out.clear();
            fetch.encode(&mut out, 12).expect("encode");
        })
    });
    group.finish();
}

criterion_group!(benches, validate, codec);
criterion_main!(benches);
