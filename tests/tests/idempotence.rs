//! Idempotent producers: librdkafka end to end, and the broker's dedupe rules
//! (KIP-98) checked with exact batches on a raw connection.

use std::time::Duration;

use chronik_tests::raw::{batch, produce, RawClient};
use chronik_tests::{consume, consumer, create_topic, producer, Node};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::InitProducerIdRequest;
use kafka_protocol::records::Compression;
use rdkafka::producer::FutureRecord;
use rdkafka::Offset;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_dropped_and_gaps_refused() {
    let node = Node::start(&[]);
    create_topic(&node, "dedupe", 1, &[]).await;
    let mut client = RawClient::connect(&node.bootstrap());
    let init = client
        .request(4, &InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60000));
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    assert!(pid >= 0);

    let first = batch(&[b"a", b"b", b"c"], pid, epoch, 0, Compression::None);
    assert_eq!(produce(&mut client, "dedupe", first.clone()), (0, 0));
    // The same batch again (a retry): same offset, nothing stored twice.
    assert_eq!(produce(&mut client, "dedupe", first), (0, 0));
    assert_eq!(produce(&mut client, "dedupe", batch(&[b"d"], pid, epoch, 3, Compression::Lz4)), (0, 3));
    // A gap in sequence numbers is refused.
    let (code, _) = produce(&mut client, "dedupe", batch(&[b"x"], pid, epoch, 10, Compression::None));
    assert_eq!(code, ResponseError::OutOfOrderSequenceNumber.code());
    // An older epoch is fenced once a newer one wrote.
    assert_eq!(produce(&mut client, "dedupe", batch(&[b"e"], pid, epoch + 1, 0, Compression::None)), (0, 4));
    let (code, _) = produce(&mut client, "dedupe", batch(&[b"y"], pid, epoch, 4, Compression::None));
    assert_eq!(code, ResponseError::InvalidProducerEpoch.code());

    // Two batches of one producer in one request: the second follows the first.
    let two = [
        batch(&[b"f"], pid, epoch + 1, 1, Compression::None),
        batch(&[b"g", b"h"], pid, epoch + 1, 2, Compression::None),
    ]
    .concat();
    assert_eq!(produce(&mut client, "dedupe", two.into()), (0, 5));

    let consumer = consumer(&node, "dedupe", 0, Offset::Beginning, &[]);
    let got = consume(&consumer, 8, Duration::from_secs(10));
    let values: Vec<_> = got.iter().filter_map(|g| g.value.clone()).collect();
    let expected: Vec<Vec<u8>> = [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h"].iter().map(|v| v.to_vec()).collect();
    assert_eq!(values, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_idempotent_producer_writes_each_record_once_across_restart() {
    let mut node = Node::start(&[]);
    create_topic(&node, "idem", 1, &[]).await;
    let settings =
        [("enable.idempotence", "true"), ("retries", "1000"), ("retry.backoff.ms", "50"), ("linger.ms", "2")];
    let producer = producer(&node, &settings);
    let mut pending = Vec::new();
    for i in 0..2000 {
        let value = format!("idem-{i}");
        pending.push(producer.send_result(FutureRecord::<(), _>::to("idem").payload(&value)).expect("queue"));
        if i == 1000 {
            // The broker dies with requests in flight; the producer retries them.
            node.restart();
        }
    }
    for p in pending {
        p.await.expect("future").expect("delivered after retries");
    }
    let consumer = consumer(&node, "idem", 0, Offset::Beginning, &[]);
    let got = consume(&consumer, 2000, Duration::from_secs(30));
    let values: Vec<String> =
        got.iter().map(|g| String::from_utf8_lossy(g.value.as_deref().unwrap_or_default()).into_owned()).collect();
    let expected: Vec<String> = (0..2000).map(|i| format!("idem-{i}")).collect();
    assert_eq!(values, expected, "exactly once, in order");
}
