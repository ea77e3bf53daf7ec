//! Error paths seen by librdkafka: unknown topics, records over max.message.bytes,
//! offsets out of range; and a damaged batch on a raw connection.

use std::time::Duration;

use chronik_tests::raw::{batch, produce, RawClient};
use chronik_tests::{consume, consumer, create_topic, producer, Node};
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::Compression;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use rdkafka::Offset;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_is_an_error_when_auto_create_is_off() {
    let node = Node::start(&["--auto-create-topics-enable", "false"]);
    let producer = producer(&node, &[("message.timeout.ms", "3000")]);
    let err = producer
        .send(FutureRecord::<(), _>::to("nowhere").payload("x"), Duration::from_secs(5))
        .await
        .expect_err("no such topic");
    assert!(
        matches!(
            err.0,
            KafkaError::MessageProduction(
                RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::MessageTimedOut
            )
        ),
        "got {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_create_makes_the_topic_on_first_use() {
    let node = Node::start(&["--num-partitions", "3"]);
    let producer = producer(&node, &[]);
    let delivery = producer
        .send(FutureRecord::<(), _>::to("made-on-demand").partition(2).payload("x"), Duration::from_secs(10))
        .await
        .expect("auto-created");
    assert_eq!((delivery.partition, delivery.offset), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_over_max_message_bytes_are_refused() {
    let node = Node::start(&[]);
    create_topic(&node, "small", 1, &[("max.message.bytes", "2000")]).await;
    let producer = producer(&node, &[("compression.codec", "none")]);
    let big = vec![b'z'; 5000];
    let err = producer
        .send(FutureRecord::<(), _>::to("small").payload(&big), Duration::from_secs(10))
        .await
        .expect_err("too large");
    assert_eq!(err.0, KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge));
    // A small record still goes through.
    let ok = producer.send(FutureRecord::<(), _>::to("small").payload("fits"), Duration::from_secs(10)).await;
    assert_eq!(ok.expect("small record").offset, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetching_past_the_end_is_offset_out_of_range() {
    let node = Node::start(&[]);
    create_topic(&node, "short", 1, &[]).await;
    let producer = producer(&node, &[]);
    producer.send(FutureRecord::<(), _>::to("short").payload("only"), Duration::from_secs(10)).await.expect("acked");
    let c = consumer(&node, "short", 0, Offset::Offset(1000), &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut seen = None;
    while std::time::Instant::now() < deadline && seen.is_none() {
        if let Some(Err(e)) = c.poll(Duration::from_millis(100)) {
            seen = Some(e);
        }
    }
    // librdkafka turns the broker's OFFSET_OUT_OF_RANGE into this error when
    // auto.offset.reset=error.
    assert_eq!(seen, Some(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)));
}

/// The produce path is where a batch's CRC-32C is checked (a Raft apply cannot refuse a
/// committed entry on one replica alone): a damaged batch is refused with
/// CORRUPT_MESSAGE and nothing of it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_bad_crc_is_corrupt_message_and_stores_nothing() {
    let node = Node::start(&[]);
    create_topic(&node, "crc", 1, &[]).await;
    let mut client = RawClient::connect(&node.bootstrap());
    let mut damaged = batch(&[b"a", b"b"], -1, -1, 0, Compression::None).to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x01;
    let (code, _) = produce(&mut client, "crc", damaged.into());
    assert_eq!(code, ResponseError::CorruptMessage.code());
    assert_eq!(produce(&mut client, "crc", batch(&[b"c"], -1, -1, 0, Compression::None)), (0, 0));
    let got = consume(&consumer(&node, "crc", 0, Offset::Beginning, &[]), 1, Duration::from_secs(10));
    assert_eq!(got.iter().map(|g| (g.offset, g.value.clone())).collect::<Vec<_>>(), vec![(0, Some(b"c".to_vec()))]);
}
