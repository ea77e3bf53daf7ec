//! Retention by time and by size moves the log start; ListOffsets earliest follows;
//! DeleteRecords moves it on request.

use std::time::{Duration, Instant};

use chronik_tests::{consume, consumer, create_topic, producer, Node};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::Offset;

async fn produce_batches(node: &Node, topic: &str, batches: usize, per_batch: usize) {
    let producer = producer(node, &[("linger.ms", "0"), ("batch.num.messages", &per_batch.to_string())]);
    for b in 0..batches {
        let futures: Vec<_> = (0..per_batch)
            .map(|i| {
                let value = format!("{b}-{i}-{}", "r".repeat(100));
                producer.send_result(FutureRecord::<(), _>::to(topic).payload(&value)).expect("queue")
            })
            .collect();
        for f in futures {
            f.await.expect("future").expect("delivered");
        }
    }
}

fn low_watermark(node: &Node, topic: &str) -> i64 {
    let c = consumer(node, topic, 0, Offset::Beginning, &[]);
    c.fetch_watermarks(topic, 0, Duration::from_secs(5)).expect("watermarks").0
}

fn wait_for<F: FnMut() -> bool>(timeout: Duration, mut f: F) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_retention_deletes_expired_records() {
    let node = Node::start(&["--log-retention-check-interval", "200ms"]);
    create_topic(&node, "expiring", 1, &[("retention.ms", "1500")]).await;
    produce_batches(&node, "expiring", 5, 20).await;
    assert_eq!(low_watermark(&node, "expiring"), 0);
    // Records are timestamped "now"; once they are older than 1.5 s they go.
    assert!(wait_for(Duration::from_secs(15), || low_watermark(&node, "expiring") == 100), "log start reaches the end");
    produce_batches(&node, "expiring", 1, 10).await;
    let c = consumer(&node, "expiring", 0, Offset::Beginning, &[]);
    let got = consume(&c, 10, Duration::from_secs(10));
    assert_eq!(got.first().map(|g| g.offset), Some(100), "new records are readable after the trim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_retention_keeps_the_newest_bytes() {
    let node = Node::start(&["--log-retention-check-interval", "200ms"]);
    // Each batch of 20 records is ~2.5 KB; keep about two of them.
    create_topic(&node, "sized", 1, &[("retention.bytes", "5000")]).await;
    produce_batches(&node, "sized", 10, 20).await;
    assert!(wait_for(Duration::from_secs(15), || low_watermark(&node, "sized") >= 140), "old batches are deleted");
    let low = low_watermark(&node, "sized");
    assert!(low <= 180, "the newest batches stay (log start {low})");
    let c = consumer(&node, "sized", 0, Offset::Offset(low), &[]);
    let got = consume(&c, (200 - low) as usize, Duration::from_secs(10));
    assert_eq!(got.last().map(|g| g.offset), Some(199));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_log_start() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    use rdkafka::TopicPartitionList;
    let node = Node::start(&[]);
    create_topic(&node, "trimmed", 1, &[]).await;
    produce_batches(&node, "trimmed", 3, 10).await;
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", node.bootstrap()).create().expect("admin");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("trimmed", 0, Offset::Offset(15)).expect("offset");
    let result = admin.delete_records(&tpl, &AdminOptions::new()).await.expect("delete_records");
    let elem = result.find_partition("trimmed", 0).expect("partition in result");
    assert_eq!(elem.offset(), Offset::Offset(15));
    assert_eq!(low_watermark(&node, "trimmed"), 15);
    let c = consumer(&node, "trimmed", 0, Offset::Beginning, &[("auto.offset.reset", "earliest")]);
    let got = consume(&c, 15, Duration::from_secs(10));
    assert_eq!(got.first().map(|g| g.offset), Some(15), "reading from the beginning starts at the log start");
}
