//! `chronik dump` as a library on the data dir of a real node: records print exactly
//! what a consumer reads, and `check` finds a corrupted batch.

use std::time::Duration;

use base64::Engine as _;
use chronik_dump::{DataDir, Format, Output, RecordsQuery};
use chronik_engine::{Durability, Engine};
use chronik_tests::{chronik, create_topic, producer, Node};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

/// What a consumer sees of one record.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    offset: i64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn from_json_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.as_bytes().to_vec()),
        other => {
            let b64 = other["base64"].as_str().expect("base64 field");
            Some(base64::engine::general_purpose::STANDARD.decode(b64).expect("base64"))
        }
    }
}

fn dump_rows(data: &DataDir, run: impl FnOnce(&DataDir, &mut Output<Vec<u8>>)) -> Vec<Value> {
    let mut out = Output::new(Vec::new(), Format::JsonLines);
    run(data, &mut out);
    let text = String::from_utf8(out.finish().expect("finish")).expect("utf-8");
    text.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect()
}

async fn produce_mixed(node: &Node) -> usize {
    let mut sent = 0;
    for (codec, n) in [("none", 120), ("zstd", 150), ("snappy", 90)] {
        let producer = producer(node, &[("compression.codec", codec), ("linger.ms", "5")]);
        let mut futures = Vec::new();
        for i in 0..n {
            let value: Vec<u8> =
                if i % 3 == 0 { vec![0xff, 0xfe, i as u8] } else { format!("{codec}-{i}").into_bytes() };
            let key = format!("k{i}");
            let headers = OwnedHeaders::new().insert(Header { key: "codec", value: Some(codec) });
            let mut record = FutureRecord::to("dumped").partition(0).payload(&value).headers(headers);
            if i % 5 != 0 {
                record = record.key(&key);
            }
            futures.push(producer.send_result(record).expect("queue"));
        }
        for f in futures {
            f.await.expect("delivery").expect("acknowledged");
            sent += 1;
        }
    }
    sent
}

fn consume_all(node: &Node, count: usize) -> Vec<Seen> {
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .set("group.id", "dump-test")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("dumped", 0, Offset::Beginning).expect("offset");
    consumer.assign(&tpl).expect("assign");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < count && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            let headers = m
                .headers()
                .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
                .unwrap_or_default();
            seen.push(Seen {
                offset: m.offset(),
                timestamp: m.timestamp().to_millis().expect("timestamp"),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_records_prints_what_a_consumer_reads_and_check_finds_a_corrupt_batch() {
    let mut node = Node::start(&[]);
    create_topic(&node, "dumped", 1, &[("retention.ms", "-1")]).await;
    let sent = produce_mixed(&node).await;
    let consumed = consume_all(&node, sent);
    assert_eq!(consumed.len(), sent);
    assert_eq!(node.terminate(), Some(0));

    let data = DataDir::open(&node.data_dir).expect("open data dir");
    let query = RecordsQuery { topic: "dumped".into(), partition: 0, from_offset: None, limit: None };
    let rows = dump_rows(&data, |d, out| chronik_dump::records(d, &query, out).expect("records"));
    let dumped: Vec<Seen> = rows
        .iter()
        .map(|r| Seen {
            offset: r["offset"].as_i64().expect("offset"),
            timestamp: r["timestamp"].as_i64().expect("timestamp"),
            key: from_json_bytes(&r["key"]),
            value: from_json_bytes(&r["value"]),
            headers: r["headers"]
                .as_array()
                .expect("headers")
                .iter()
                .map(|h| (h["key"].as_str().expect("key").to_string(), from_json_bytes(&h["value"])))
                .collect(),
        })
        .collect();
    assert_eq!(dumped, consumed, "dump records prints exactly what the consumer read");
    let compressions: std::collections::BTreeSet<&str> =
        rows.iter().filter_map(|r| r["compression"].as_str()).collect();
    assert_eq!(compressions, ["none", "snappy", "zstd"].into_iter().collect());

    // --from-offset and --limit select a window.
    let window = RecordsQuery { from_offset: Some(200), limit: Some(7), ..query.clone() };
    let rows = dump_rows(&data, |d, out| chronik_dump::records(d, &window, out).expect("records"));
    assert_eq!(
        rows.iter().map(|r| r["offset"].as_i64().expect("offset")).collect::<Vec<_>>(),
        (200..207).collect::<Vec<_>>()
    );

    // The consumer's group.id also created the internal __consumer_offsets topic.
    let topics = dump_rows(&data, |d, out| chronik_dump::topics(d, out).expect("topics"));
    let dumped: Vec<&Value> = topics.iter().filter(|t| t["topic"] == "dumped").collect();
    assert_eq!(dumped.len(), 1);
    assert_eq!(dumped[0]["configs"]["retention.ms"].as_str(), Some("-1"));
    let partitions = dump_rows(&data, |d, out| chronik_dump::partitions(d, out).expect("partitions"));
    let partition = partitions.iter().find(|p| p["topic"] == "dumped").expect("the dumped partition");
    assert_eq!(partition["next_offset"].as_i64(), Some(sent as i64));
    let meta_log = dump_rows(&data, |d, out| chronik_dump::raft_log(d, 0, 1000, out).expect("raft log"));
    assert!(meta_log.iter().any(|r| r["command"]["CreateTopic"]["name"] == "dumped"), "{meta_log:?}");

    let clean = dump_rows(&data, |d, out| assert!(chronik_dump::check(d, out).expect("check").is_empty()));
    assert!(clean.is_empty());
    let uid = data.partition_uid("dumped", 0).expect("uid");
    drop(data);

    // Flip one byte inside the records of the batch at offset 0, as a disk might.
    {
        let engine = Engine::open(&node.data_dir.join("db")).expect("open store");
        let mut batch = engine.stored_batch(uid, 0).expect("read").expect("batch at 0");
        let last = batch.len() - 1;
        batch[last] ^= 0x01;
        let mut wb = engine.batch();
        wb.put_batch(uid, 0, &batch);
        engine.write(wb, Durability::Synced).expect("write");
    }
    let data = DataDir::open(&node.data_dir).expect("open data dir");
    let mut out = Output::new(Vec::new(), Format::JsonLines);
    let problems = chronik_dump::check(&data, &mut out).expect("check");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!((problems[0].place.as_str(), problems[0].offset), ("dumped-0", Some(0)));
    assert!(problems[0].detail.contains("CRC"), "{}", problems[0].detail);

    // The CLI is a thin shell over the library: same rows, non-zero exit on problems.
    let dir = node.data_dir.to_str().expect("utf-8");
    let (ok, stdout, _) = chronik(&["dump", "--data-dir", dir, "check"], &[]);
    assert!(!ok && stdout.contains("CRC"), "{stdout}");
    let (ok, stdout, _) = chronik(&["dump", "--data-dir", dir, "--format", "table", "topics"], &[]);
    assert!(ok && stdout.starts_with("TOPIC") && stdout.contains("dumped"), "{stdout}");
}

/// `dump groups` prints every committed offset of a group, as OffsetFetch returns it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_groups_prints_committed_offsets() {
    use rdkafka::consumer::CommitMode;
    let mut node = Node::start(&[]);
    create_topic(&node, "grouped", 2, &[]).await;
    let bootstrap = node.bootstrap();
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "dumped-group")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("grouped", 0, Offset::Offset(7)).expect("offset");
        tpl.add_partition_offset("grouped", 1, Offset::Offset(9)).expect("offset");
        client.commit(&tpl, CommitMode::Sync).expect("commit");
    })
    .await
    .expect("commit task");
    assert_eq!(node.terminate(), Some(0));

    let data = DataDir::open(&node.data_dir).expect("open data dir");
    let rows = dump_rows(&data, |d, out| chronik_dump::groups(d, out).expect("groups"));
    let offsets: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|r| {
            let group = r["group"].as_str().expect("group").to_string();
            (group, r["partition"].as_i64().expect("partition"), r["offset"].as_i64().expect("offset"))
        })
        .collect();
    assert_eq!(offsets, [("dumped-group".to_string(), 0, 7), ("dumped-group".to_string(), 1, 9)]);
    let dir = node.data_dir.to_str().expect("utf-8");
    let (ok, stdout, _) = chronik(&["dump", "--data-dir", dir, "groups"], &[]);
    assert!(ok && stdout.lines().count() == 2, "{stdout}");
}
