//! librdkafka produce/consume round trips, one per compression codec, and a restart
//! after SIGKILL that must lose no acknowledged record.

use std::time::Duration;

use chronik_tests::{consume, consumer, create_topic, producer, Node};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::Offset;

async fn produce_n(node: &Node, topic: &str, n: usize, extra: &[(&str, &str)]) -> Vec<i64> {
    let producer = producer(node, extra);
    let futures: Vec<_> = (0..n)
        .map(|i| {
            let key = format!("key-{i}");
            let value = format!("value-{i}-{}", "x".repeat(i % 200));
            let headers = OwnedHeaders::new().insert(Header { key: "h", value: Some(&i.to_string()) });
            producer.send_result(FutureRecord::to(topic).key(&key).payload(&value).headers(headers)).expect("queue")
        })
        .collect();
    let mut offsets = Vec::new();
    for f in futures {
        let delivery = f.await.expect("delivery future").expect("delivered");
        offsets.push(delivery.offset);
    }
    offsets
}

fn expected_value(i: usize) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat(i % 200)).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_every_codec() {
    let node = Node::start(&[]);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        create_topic(&node, &topic, 1, &[]).await;
        let offsets = produce_n(&node, &topic, 500, &[("compression.codec", codec), ("linger.ms", "5")]).await;
        let mut sorted = offsets.clone();
        sorted.sort();
        assert_eq!(sorted, (0..500).collect::<Vec<i64>>(), "{codec}: offsets must be dense from 0");

        let consumer = consumer(&node, &topic, 0, Offset::Beginning, &[]);
        let got = consume(&consumer, 500, Duration::from_secs(20));
        assert_eq!(got.len(), 500, "{codec}: every record comes back");
        for (i, record) in got.iter().enumerate() {
            assert_eq!(record.offset, i as i64, "{codec}: in order");
            assert_eq!(record.key.as_deref(), Some(format!("key-{i}").as_bytes()), "{codec}: key {i}");
            assert_eq!(record.value.as_deref(), Some(expected_value(i).as_slice()), "{codec}: value {i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_from_the_middle_of_a_batch_skips_earlier_records() {
    let node = Node::start(&[]);
    create_topic(&node, "middle", 1, &[]).await;
    // One linger window: the 100 records travel as few batches.
    produce_n(&node, "middle", 100, &[("linger.ms", "50")]).await;
    let consumer = consumer(&node, "middle", 0, Offset::Offset(37), &[]);
    let got = consume(&consumer, 63, Duration::from_secs(20));
    assert_eq!(got.first().map(|g| g.offset), Some(37));
    assert_eq!(got.len(), 63);
    assert_eq!(got.last().and_then(|g| g.value.clone()), Some(expected_value(99)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill_9() {
    let mut node = Node::start(&[]);
    create_topic(&node, "durable", 4, &[]).await;
    let producer = producer(&node, &[("linger.ms", "1")]);
    let mut acked = Vec::new();
    for i in 0..400 {
        let partition = i % 4;
        let value = format!("durable-{i}");
        let record = FutureRecord::<(), _>::to("durable").partition(partition).payload(&value);
        let delivery = producer.send(record, Duration::from_secs(10)).await.expect("acked");
        acked.push((delivery.partition, delivery.offset, value));
    }
    drop(producer);
    node.kill9();
    node.restart();
    // The log is replayed before the node listens: the high watermark never goes back.
    let probe = consumer(&node, "durable", 0, Offset::Beginning, &[]);
    let (_, high) = probe.fetch_watermarks("durable", 0, Duration::from_secs(5)).expect("watermarks");
    assert_eq!(high, 100);
    for partition in 0..4 {
        let expected: Vec<_> = acked.iter().filter(|a| a.0 == partition).collect();
        let consumer = consumer(&node, "durable", partition, Offset::Beginning, &[]);
        let got = consume(&consumer, expected.len(), Duration::from_secs(20));
        assert_eq!(got.len(), expected.len(), "partition {partition}: every acknowledged record is back");
        for (g, e) in got.iter().zip(expected) {
            assert_eq!((g.offset, g.value.as_deref()), (e.1, Some(e.2.as_bytes())));
        }
    }
    // New writes continue at the next offset.
    let again = chronik_tests::producer(&node, &[]);
    let delivery = again
        .send(FutureRecord::<(), _>::to("durable").partition(0).payload("after"), Duration::from_secs(10))
        .await
        .expect("acked after restart");
    assert_eq!(delivery.offset, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topic_stays_deleted_after_kill_9() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let mut node = Node::start(&["--auto-create-topics-enable", "false"]);
    create_topic(&node, "doomed", 2, &[]).await;
    produce_n(&node, "doomed", 50, &[]).await;
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", node.bootstrap()).create().expect("admin");
    for r in admin.delete_topics(&["doomed"], &AdminOptions::new()).await.expect("delete_topics") {
        r.expect("deleted");
    }
    node.kill9();
    node.restart();
    let metadata_client = chronik_tests::producer(&node, &[]);
    let metadata = rdkafka::producer::Producer::client(&metadata_client)
        .fetch_metadata(None, Duration::from_secs(5))
        .expect("metadata");
    assert!(metadata.topics().iter().all(|t| t.name() != "doomed"), "the topic is gone after the restart");
    // The name can be used again and starts empty.
    create_topic(&node, "doomed", 1, &[]).await;
    let offsets = produce_n(&node, "doomed", 3, &[]).await;
    assert_eq!(offsets, vec![0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_and_exits_zero() {
    let mut node = Node::start(&[]);
    create_topic(&node, "graceful", 1, &[]).await;
    produce_n(&node, "graceful", 50, &[]).await;
    assert_eq!(node.terminate(), Some(0));
    node.restart();
    let consumer = consumer(&node, "graceful", 0, Offset::Beginning, &[]);
    assert_eq!(consume(&consumer, 50, Duration::from_secs(20)).len(), 50);
    assert!(node.http_get("/health").starts_with("HTTP/1.1 200"));
    assert!(node.http_get("/metrics").contains("chronik_raft_fsyncs_total"));
}
