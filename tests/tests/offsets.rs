//! ListOffsets through librdkafka: earliest, latest and by timestamp; and a fetch
//! that long-polls until a record arrives.

use std::time::Duration;

use chronik_tests::{consume, consumer, create_topic, producer, Node};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_for_times_find_the_first_record_at_or_after() {
    let node = Node::start(&[]);
    create_topic(&node, "timed", 1, &[]).await;
    let producer = producer(&node, &[("linger.ms", "0")]);
    // Timestamps 1000, 2000, ... 10000 at offsets 0..10.
    for i in 0..10i64 {
        let record = FutureRecord::<(), _>::to("timed").payload("t").timestamp(1000 * (i + 1));
        producer.send(record, Duration::from_secs(10)).await.expect("acked");
    }
    let c = consumer(&node, "timed", 0, Offset::Beginning, &[]);
    for (timestamp, expected) in
        [(0, Offset::Offset(0)), (2500, Offset::Offset(2)), (10000, Offset::Offset(9)), (10001, Offset::End)]
    {
        let mut query = TopicPartitionList::new();
        query.add_partition_offset("timed", 0, Offset::Offset(timestamp)).expect("query");
        let answer = c.offsets_for_times(query, Duration::from_secs(5)).expect("offsets_for_times");
        let found = answer.find_partition("timed", 0).expect("partition").offset();
        assert_eq!(found, expected, "timestamp {timestamp}");
    }
    assert_eq!(c.fetch_watermarks("timed", 0, Duration::from_secs(5)).expect("watermarks"), (0, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_consumer_gets_a_record_produced_later() {
    let node = Node::start(&[]);
    create_topic(&node, "later", 1, &[]).await;
    let c = consumer(&node, "later", 0, Offset::Beginning, &[("fetch.wait.max.ms", "5000")]);
    // Nothing yet: the consumer's fetch long-polls on the broker.
    assert!(consume(&c, 1, Duration::from_millis(500)).is_empty());
    let producer = producer(&node, &[]);
    producer.send(FutureRecord::<(), _>::to("later").payload("late"), Duration::from_secs(10)).await.expect("acked");
    let got = consume(&c, 1, Duration::from_secs(10));
    assert_eq!(got.first().and_then(|g| g.value.clone()), Some(b"late".to_vec()));
}
