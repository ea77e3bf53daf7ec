//! Three real `chronik` processes on real sockets (each on its own loopback address),
//! every partition a three-replica Raft group.
//!
//! - An idempotent acks=all librdkafka producer writes while the partition leader is
//!   killed with SIGKILL and later restarted: every acknowledged record is read back
//!   exactly once, in order, from each replica's own data, at identical offsets
//!   (Raft §5.4: a committed entry is in every later leader's log).
//!   A consumer reading meanwhile sees every offset once, in order, never going
//!   backwards across the leader change.
//! - A leader cut off from both followers stops acknowledging: its client sees errors,
//!   never a success it cannot keep (check-quorum, Raft thesis §6.2).
//! - A node started later joins the metadata group as a learner, hosts replicas of new
//!   topics and serves clients; it can be promoted to voter; a node is removed only
//!   once it holds no replicas.

use std::collections::VecDeque;
use std::time::Duration;

use chronik_tests::{chronik, read_replica, Cluster, Node};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, FutureRecord};

const RECORDS: usize = 3000;

fn idempotent_producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "60000")
        .set("topic.metadata.refresh.interval.ms", "500");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("producer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_of_the_partition_leader() {
    let mut cluster = Cluster::start(41, 3, &["--min-insync-replicas", "2"]);
    cluster.create_topic("failover", 1, 3, &[]).await;
    let first_leader = cluster.leader("failover", 0, Duration::from_secs(20)).expect("a leader is elected");
    let producer = idempotent_producer(&cluster.bootstrap(), &[]);
    let reader = std::thread::spawn({
        let bootstrap = cluster.bootstrap();
        move || read_through_failover(&bootstrap)
    });

    let mut in_flight = VecDeque::new();
    let mut acked: Vec<(i64, usize)> = Vec::new();
    let mut failed = Vec::new();
    let mut settle = |result: (usize, Result<(i32, i64), String>)| match result {
        (i, Ok((_, offset))) => acked.push((offset, i)),
        (i, Err(e)) => failed.push((i, e)),
    };
    for i in 0..RECORDS {
        if i == RECORDS / 3 {
            // Kill the leader while up to 200 writes are in flight.
            cluster.node(first_leader).kill9();
        }
        if i == 2 * RECORDS / 3 {
            cluster.node(first_leader).restart();
        }
        let value = format!("record-{i:05}");
        let delivery = producer.send_result(FutureRecord::<(), _>::to("failover").partition(0).payload(&value));
        let delivery = delivery.map_err(|(e, _)| e).expect("queue the record");
        in_flight.push_back((i, delivery));
        if in_flight.len() >= 200 {
            let (i, d) = in_flight.pop_front().expect("in flight");
            settle((
                i,
                d.await.expect("delivery future").map(|d| (d.partition, d.offset)).map_err(|(e, _)| e.to_string()),
            ));
        }
    }
    while let Some((i, d)) = in_flight.pop_front() {
        settle((i, d.await.expect("delivery future").map(|d| (d.partition, d.offset)).map_err(|(e, _)| e.to_string())));
    }
    // With idempotence and a 60 s delivery timeout every record gets through the failover.
    assert!(failed.is_empty(), "failed deliveries: {:?}", &failed[..failed.len().min(5)]);

    // Exactly once and in order: offsets 0..N hold records 0..N.
    acked.sort_unstable();
    let expected: Vec<(i64, usize)> = (0..RECORDS).map(|i| (i as i64, i)).collect();
    assert_eq!(acked, expected, "acknowledged offsets must be dense and in send order");

    let seen = reader.join().expect("reader thread");
    assert_eq!(seen.len(), RECORDS, "the consumer read every record once");

    // Every replica, including the restarted one once it caught up, holds the same log.
    for node in &cluster.nodes {
        let got = read_replica(node, "failover", 0, RECORDS, Duration::from_secs(60));
        assert_eq!(got.len(), RECORDS, "node {} holds every acknowledged record", node.node_id);
        for (offset, value) in &got {
            assert_eq!(value, format!("record-{offset:05}").as_bytes(), "node {} offset {offset}", node.node_id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_followers_stops_acknowledging() {
    let mut cluster = Cluster::start(42, 3, &[]);
    cluster.create_topic("cut", 1, 3, &[]).await;
    let leader = cluster.leader("cut", 0, Duration::from_secs(20)).expect("a leader is elected");
    let warm_up = idempotent_producer(&cluster.bootstrap(), &[]);
    warm_up
        .send(FutureRecord::<(), _>::to("cut").partition(0).payload("before"), Duration::from_secs(10))
        .await
        .expect("acked");

    // Freeze both followers: the leader is alone, a minority of one.
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for id in &followers {
        cluster.node(*id).pause(true);
    }
    let isolated_leader = cluster.node(leader).bootstrap();
    let client = idempotent_producer(&isolated_leader, &[("message.timeout.ms", "5000")]);
    let result =
        client.send(FutureRecord::<(), _>::to("cut").partition(0).payload("during"), Duration::from_secs(10)).await;
    assert!(result.is_err(), "a leader without a quorum must not acknowledge: {result:?}");

    // Heal: the majority elects a leader (maybe the old one) and writes go through again.
    for id in &followers {
        cluster.node(*id).pause(false);
    }
    let after = idempotent_producer(&cluster.bootstrap(), &[]);
    let delivered =
        after.send(FutureRecord::<(), _>::to("cut").partition(0).payload("after"), Duration::from_secs(30)).await;
    assert!(delivered.is_ok(), "the healed cluster accepts writes: {delivered:?}");
}

/// In-sync replicas as Metadata reports them.
fn isr(cluster: &Cluster, topic: &str) -> Vec<i32> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", cluster.bootstrap()).create().expect("metadata client");
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(5)).expect("metadata");
    let mut isr = metadata.topics()[0].partitions()[0].isr().to_vec();
    isr.sort_unstable();
    isr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_insync_replicas_refuses_acks_all_writes_when_the_isr_shrinks() {
    let mut cluster = Cluster::start(44, 3, &["--replica-lag-time-max-ms", "1000"]);
    cluster.create_topic("strict", 1, 3, &[("min.insync.replicas", "3")]).await;
    let leader = cluster.leader("strict", 0, Duration::from_secs(20)).expect("a leader is elected");
    let producer = idempotent_producer(&cluster.bootstrap(), &[("message.timeout.ms", "5000")]);
    producer
        .send(FutureRecord::<(), _>::to("strict").partition(0).payload("all in sync"), Duration::from_secs(10))
        .await
        .expect("acked");

    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.node(follower).kill9();
    // Wait until the leader drops the dead follower from the in-sync replicas.
    let mut shrunk = false;
    for _ in 0..300 {
        if isr(&cluster, "strict").len() == 2 {
            shrunk = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(shrunk, "the ISR should shrink to the two live replicas");
    // Two live replicas would make a Raft quorum, but the topic demands three in sync.
    let refused = producer
        .send(FutureRecord::<(), _>::to("strict").partition(0).payload("two in sync"), Duration::from_secs(10))
        .await;
    assert!(refused.is_err(), "acks=all below min.insync.replicas must fail: {refused:?}");

    cluster.node(follower).restart();
    let fresh = idempotent_producer(&cluster.bootstrap(), &[]);
    let accepted =
        fresh.send(FutureRecord::<(), _>::to("strict").partition(0).payload("back"), Duration::from_secs(30)).await;
    assert!(accepted.is_ok(), "writes resume once the follower is back in sync: {accepted:?}");
}

/// Metadata from a node without a replica names the leader its leader reported through
/// the metadata group, so a client that knows only that node can still write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_names_the_leaders_of_partitions_it_does_not_host() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let cluster = Cluster::start(45, 3, &[]);
    cluster.create_topic("spread", 3, 1, &[]).await;
    // One replica per partition, placed on three different nodes.
    let mut leaders: Vec<u64> =
        (0..3).map(|p| cluster.leader("spread", p, Duration::from_secs(20)).expect("leader")).collect();
    leaders.sort_unstable();
    assert_eq!(leaders, vec![1, 2, 3], "placement rotates the single replica over the nodes");
    for node in &cluster.nodes {
        let client: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", node.bootstrap()).create().expect("metadata client");
        let mut known = false;
        for _ in 0..100 {
            let metadata = client.fetch_metadata(Some("spread"), Duration::from_secs(5)).expect("metadata");
            known = metadata.topics()[0].partitions().iter().all(|p| p.leader() > 0 && p.error().is_none());
            if known {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(known, "node {} should name every partition's leader", node.node_id);
        let producer = idempotent_producer(&node.bootstrap(), &[("message.timeout.ms", "20000")]);
        for p in 0..3 {
            let sent = producer
                .send(FutureRecord::<(), _>::to("spread").partition(p).payload("x"), Duration::from_secs(20))
                .await;
            assert!(sent.is_ok(), "write to partition {p} knowing only node {}: {sent:?}", node.node_id);
        }
    }
}

/// A node names itself at the Kafka address it was started with, also before the
/// metadata group has recorded that address (here never: it lost its quorum). Otherwise
/// a restored or moved node sends clients to its old address, maybe another process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_names_itself_at_its_new_address_before_the_cluster_records_it() {
    use kafka_protocol::messages::MetadataRequest;
    let mut cluster = Cluster::start(48, 3, &[]);
    cluster.node(2).kill9();
    cluster.node(3).kill9();
    let node = cluster.node(1);
    let moved = format!("{}:9192", node.host);
    node.restart_with(&["--advertise-kafka-addr", &moved]);
    let metadata = chronik_tests::raw::RawClient::connect(&node.bootstrap()).request(12, &MetadataRequest::default());
    let me = metadata.brokers.iter().find(|b| b.node_id.0 == 1).expect("node 1 is listed");
    assert_eq!(format!("{}:{}", me.host, me.port), moved, "node 1 names its own new address");
    let other = metadata.brokers.iter().find(|b| b.node_id.0 == 2).expect("node 2 is still listed");
    assert_eq!(other.port, 9092, "the other nodes keep their recorded addresses");
}

/// Consumes partition 0 of "failover" from the start while the leader changes; checks
/// each record arrives at the next offset with its own value. Returns the offsets read.
fn read_through_failover(bootstrap: &str) -> Vec<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "failover-reader")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("failover", 0, Offset::Beginning).expect("offset");
    consumer.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut seen: Vec<i64> = Vec::new();
    while seen.len() < RECORDS && std::time::Instant::now() < deadline {
        // Errors during the failover (leader moved, broker down) are retried by the client.
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let expected = seen.last().map_or(0, |o| o + 1);
            assert_eq!(m.offset(), expected, "the consumer's offsets never skip or go backwards");
            assert_eq!(m.payload(), Some(format!("record-{expected:05}").as_bytes()), "offset {expected}");
            seen.push(m.offset());
        }
    }
    seen
}

/// `chronik cluster ARGS --node RPC`: the members JSON on success, the error otherwise.
fn cluster_cli(node: &Node, args: &[&str]) -> Result<serde_json::Value, String> {
    let rpc = node.rpc_addr();
    let mut all = vec!["cluster"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--node", &rpc]);
    let (ok, stdout, stderr) = chronik(&all, &[]);
    match ok {
        true => Ok(serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("members JSON {stdout:?}: {e}"))),
        false => Err(stderr),
    }
}

fn ids(members: &serde_json::Value, role: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = members[role].as_array().expect(role).iter().filter_map(|v| v.as_u64()).collect();
    ids.sort_unstable();
    ids
}

/// Runs `check` every 200 ms until it holds; panics with `what` after 30 s.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..150 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: not reached within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_later_joins_serves_and_is_promoted_and_removed() {
    let mut cluster = Cluster::start(47, 3, &[]);
    cluster.create_topic("early", 2, 3, &[]).await;

    // Node 4 starts knowing only node 2 and itself: it asks to join through node 2 and
    // learns every other address from the metadata.
    cluster.nodes.push(Node::start_member_knowing(47, 4, &[2, 4], &["--join"]));
    wait_for("every node lists node 4 as a broker", || cluster.formed());
    let members = cluster_cli(&cluster.nodes[0], &["members"]).expect("members");
    assert_eq!((ids(&members, "voters"), ids(&members, "learners")), (vec![1, 2, 3], vec![4]), "{members}");

    // New topics place replicas on node 4; clients of node 4 alone produce and consume.
    cluster.create_topic("late", 4, 3, &[]).await;
    let node4 = cluster.node(4).bootstrap();
    let producer = idempotent_producer(&node4, &[]);
    let mut acked = Vec::new();
    for i in 0..200 {
        let value = format!("late-{i}");
        let record = FutureRecord::<(), _>::to("late").partition(i % 4).payload(&value);
        let delivery = producer.send(record, Duration::from_secs(30)).await.expect("acks=all write");
        acked.push((delivery.partition, delivery.offset, value));
    }
    let metadata_client: rdkafka::consumer::BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &node4).create().expect("metadata client");
    let metadata = metadata_client.fetch_metadata(Some("late"), Duration::from_secs(5)).expect("metadata");
    let hosted: Vec<i32> =
        metadata.topics()[0].partitions().iter().filter(|p| p.replicas().contains(&4)).map(|p| p.id()).collect();
    assert_eq!(hosted.len(), 3, "with four nodes each holds three of the four partitions: {hosted:?}");
    for partition in hosted {
        let expected: Vec<(i64, Vec<u8>)> =
            acked.iter().filter(|(p, _, _)| *p == partition).map(|(_, o, v)| (*o, v.clone().into_bytes())).collect();
        let got = read_replica(cluster.node(4), "late", partition, expected.len(), Duration::from_secs(20));
        assert_eq!(got, expected, "late-{partition}: node 4's own replica holds every acknowledged record");
    }

    // Promotion goes through any node, here the learner itself.
    let members = cluster_cli(cluster.node(4), &["promote", "--id", "4"]).expect("promote");
    assert_eq!(ids(&members, "voters"), vec![1, 2, 3, 4], "{members}");
    // Node 4 holds replicas of "late": removing it is refused, naming them.
    let refused = cluster_cli(&cluster.nodes[0], &["remove", "--id", "4"]).expect_err("remove refused");
    assert!(refused.contains("late-"), "{refused}");

    // Node 5 joins and holds nothing: it can be removed, and the cluster forgets it.
    cluster.nodes.push(Node::start_member_knowing(47, 5, &[3, 5], &["--join"]));
    wait_for("every node lists node 5 as a broker", || cluster.formed());
    let members = cluster_cli(&cluster.nodes[1], &["remove", "--id", "5"]).expect("remove node 5");
    assert_eq!((ids(&members, "voters"), ids(&members, "learners")), (vec![1, 2, 3, 4], vec![]), "{members}");
    let mut removed = cluster.nodes.pop().expect("node 5");
    removed.kill9();
    wait_for("node 5 is no longer a broker", || cluster.formed());
    let unknown = cluster_cli(&cluster.nodes[0], &["promote", "--id", "5"]).expect_err("promote a removed node");
    assert!(unknown.contains("not a member"), "{unknown}");
}
