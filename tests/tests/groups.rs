//! Consumer groups with librdkafka: subscribe(), rebalances while members join and
//! leave, committed offsets across a node restart, and the coordinator's error codes
//! on a raw connection.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chronik_tests::raw::RawClient;
use chronik_tests::{create_topic, Cluster, Node};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::{
    DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 6;

/// Every (partition, offset) some member consumed.
type Seen = Arc<Mutex<BTreeSet<(i32, i64)>>>;

/// A consumer thread in a group: polls, records what it sees, commits as it goes and
/// once more (synchronously) before it leaves.
struct Member {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    /// The member's position on each partition it holds now.
    positions: Arc<Mutex<BTreeMap<i32, i64>>>,
}

impl Member {
    fn start(bootstrap: &str, group: &str, topic: &str, extra: &[(&str, &str)], seen: Seen) -> Member {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        for (k, v) in extra {
            config.set(*k, *v);
        }
        let consumer: BaseConsumer = config.create().expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let positions: Arc<Mutex<BTreeMap<i32, i64>>> = Arc::default();
        let held = positions.clone();
        let thread = std::thread::spawn(move || {
            let mut since_commit = 0;
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(now) = consumer.position() {
                    let mut held = held.lock().expect("lock");
                    held.clear();
                    for e in now.elements() {
                        if let Offset::Offset(o) = e.offset() {
                            held.insert(e.partition(), o);
                        }
                    }
                }
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        seen.lock().expect("lock").insert((m.partition(), m.offset()));
                        since_commit += 1;
                        if since_commit >= 50 {
                            // Async: a commit refused during a rebalance is retried by the next one.
                            let _ = consumer.commit_consumer_state(CommitMode::Async);
                            since_commit = 0;
                        }
                    }
                    Some(Err(e)) => eprintln!("consumer error (retried): {e}"),
                    None => {}
                }
            }
            // The last commit can meet a rebalance (REBALANCE_IN_PROGRESS, or
            // UNKNOWN_MEMBER_ID after a coordinator change): keep polling, which lets the
            // client rejoin, and commit again, for up to 30 s.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => break,
                    Err(e) if std::time::Instant::now() > deadline => panic!("final commit failed: {e}"),
                    Err(_) => {
                        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                            seen.lock().expect("lock").insert((m.partition(), m.offset()));
                        }
                    }
                }
            }
            drop(consumer); // closes: commits nothing more, leaves the group
        });
        Member { stop, thread, positions }
    }

    fn leave(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("member thread");
    }
}

/// Produces `count` records round-robin over the partitions; returns every acknowledged
/// (partition, offset).
async fn produce(bootstrap: &str, topic: &str, count: usize, pause_every: usize) -> BTreeSet<(i32, i64)> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let mut acked = BTreeSet::new();
    for chunk in 0..count.div_ceil(pause_every) {
        let sends: Vec<_> = (chunk * pause_every..((chunk + 1) * pause_every).min(count))
            .map(|i| {
                let value = format!("record-{i}");
                let record = FutureRecord::<(), _>::to(topic).payload(&value).partition(i as i32 % PARTITIONS);
                producer.send_result(record).expect("queue")
            })
            .collect();
        for send in sends {
            let delivery = send.await.expect("delivery").expect("acknowledged");
            acked.insert((delivery.partition, delivery.offset));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    acked
}

/// The group's committed offsets (partitions without one are left out), or `None` if
/// the coordinator could not answer.
fn committed(bootstrap: &str, group: &str, topic: &str) -> Option<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
    Some(
        committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect(),
    )
}

/// The group's committed offsets and the partitions' end offsets, by partition.
fn committed_and_end(bootstrap: &str, group: &str, topic: &str) -> (BTreeMap<i32, i64>, BTreeMap<i32, i64>) {
    let committed = committed(bootstrap, group, topic).expect("committed offsets");
    assert_eq!(committed.len(), PARTITIONS as usize, "every partition has a committed offset: {committed:?}");
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("consumer");
    let end = (0..PARTITIONS)
        .map(|p| (p, consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks").1))
        .collect();
    (committed, end)
}

/// The end offset of each partition after the acknowledged writes (offsets are dense from 0).
fn end_offsets(acked: &BTreeSet<(i32, i64)>) -> BTreeMap<i32, i64> {
    (0..PARTITIONS).map(|p| (p, acked.iter().filter(|(q, _)| *q == p).count() as i64)).collect()
}

/// Waits until the members together hold every partition at its end offset (each
/// partition's current owner consumed everything), so their last commits are the ends.
fn wait_caught_up(members: &[&Member], ends: &BTreeMap<i32, i64>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut held = BTreeMap::new();
    while Instant::now() < deadline {
        held = members.iter().flat_map(|m| m.positions.lock().expect("lock").clone()).collect();
        if &held == ends {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("members never caught up: they hold {held:?}, the ends are {ends:?}");
}

fn wait_until_seen(seen: &Seen, acked: &BTreeSet<(i32, i64)>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if seen.lock().expect("lock").is_superset(acked) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let missing: Vec<_> = acked.difference(&seen.lock().expect("lock")).take(10).copied().collect();
    panic!("records never consumed (first 10): {missing:?}");
}

/// Three members share six partitions while a producer writes; one joins and one
/// leaves mid-way. Nothing acknowledged goes unconsumed, and the final commits equal
/// the end offsets.
async fn group_survives_membership_changes(extra: &[(&str, &str)]) {
    let node = Node::start(&["--group-initial-rebalance-delay-ms", "200"]);
    let (topic, group) = ("group-topic", "group-under-test");
    create_topic(&node, topic, PARTITIONS, &[]).await;
    let seen: Seen = Arc::default();

    let a = Member::start(&node.bootstrap(), group, topic, extra, seen.clone());
    let mut b = Some(Member::start(&node.bootstrap(), group, topic, extra, seen.clone()));
    let bootstrap = node.bootstrap();
    let producing = produce(&bootstrap, topic, 3000, 100);
    tokio::pin!(producing);
    let mut joined = None;
    let started = Instant::now();
    let acked = loop {
        tokio::select! {
            acked = &mut producing => break acked,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if joined.is_none() && started.elapsed() > Duration::from_secs(1) {
                    joined = Some(Member::start(&node.bootstrap(), group, topic, extra, seen.clone()));
                }
                if started.elapsed() > Duration::from_secs(2) {
                    if let Some(b) = b.take() {
                        tokio::task::spawn_blocking(move || b.leave()).await.expect("b left");
                    }
                }
            }
        }
    };
    assert_eq!(acked.len(), 3000);
    assert!(b.is_none() && joined.is_some(), "the producer outlived the membership changes");
    let c = joined.expect("third member");
    let wait_seen = seen.clone();
    let wait_acked = acked.clone();
    tokio::task::spawn_blocking(move || wait_until_seen(&wait_seen, &wait_acked, Duration::from_secs(60)))
        .await
        .expect("all records consumed");
    let ends = end_offsets(&acked);
    tokio::task::spawn_blocking(move || {
        wait_caught_up(&[&a, &c], &ends, Duration::from_secs(60));
        a.leave();
        c.leave();
    })
    .await
    .expect("members left");

    let (committed, end) = committed_and_end(&node.bootstrap(), group, topic);
    assert_eq!(committed, end, "the final commits are the end offsets");
    assert_eq!(end.values().sum::<i64>(), 3000);
}

/// Classic-protocol members heartbeat often so rebalances are noticed quickly.
const CLASSIC: [(&str, &str); 2] = [("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "500")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_group_consumes_everything_while_members_join_and_leave() {
    group_survives_membership_changes(&[CLASSIC[0], CLASSIC[1], ("partition.assignment.strategy", "range")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_group_consumes_everything_while_members_join_and_leave() {
    let strategy = ("partition.assignment.strategy", "cooperative-sticky");
    group_survives_membership_changes(&[CLASSIC[0], CLASSIC[1], strategy]).await;
}

/// KIP-848: the coordinator assigns partitions (`group.protocol=consumer`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_protocol_group_consumes_everything_while_members_join_and_leave() {
    group_survives_membership_changes(&[("group.protocol", "consumer")]).await;
}

/// A consumer commits, the node is killed and restarted, and a new consumer in the same
/// group resumes exactly at the committed offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_restart_and_the_group_resumes_there() {
    let mut node = Node::start(&["--group-initial-rebalance-delay-ms", "0"]);
    let (topic, group) = ("resume-topic", "resume-group");
    create_topic(&node, topic, PARTITIONS, &[]).await;
    let acked = produce(&node.bootstrap(), topic, 600, 600).await;
    assert_eq!(acked.len(), 600);

    let seen: Seen = Arc::default();
    let first = Member::start(&node.bootstrap(), group, topic, &CLASSIC, seen.clone());
    let half: BTreeSet<(i32, i64)> = acked.iter().filter(|(_, o)| *o < 50).copied().collect();
    let waiting = seen.clone();
    tokio::task::spawn_blocking(move || wait_until_seen(&waiting, &half, Duration::from_secs(30))).await.unwrap();
    tokio::task::spawn_blocking(move || first.leave()).await.unwrap();
    let (before, _) = committed_and_end(&node.bootstrap(), group, topic);
    assert!(before.values().all(|&o| o >= 50), "committed at least what was seen: {before:?}");

    node.kill9();
    node.restart();
    let (after, end) = committed_and_end(&node.bootstrap(), group, topic);
    assert_eq!(after, before, "committed offsets survive kill -9");

    // The next member starts at the committed offsets, not at the beginning.
    let resumed: Seen = Arc::default();
    let second = Member::start(&node.bootstrap(), group, topic, &CLASSIC, resumed.clone());
    let rest: BTreeSet<(i32, i64)> = acked.iter().filter(|(p, o)| *o >= after[p]).copied().collect();
    let waiting = resumed.clone();
    tokio::task::spawn_blocking(move || wait_until_seen(&waiting, &rest, Duration::from_secs(30))).await.unwrap();
    tokio::task::spawn_blocking(move || second.leave()).await.unwrap();
    let first_seen: BTreeMap<i32, i64> = resumed.lock().expect("lock").iter().fold(BTreeMap::new(), |mut m, (p, o)| {
        m.entry(*p).or_insert(*o);
        m
    });
    for (p, offset) in &first_seen {
        assert_eq!(*offset, after[p], "partition {p} resumed at its committed offset");
    }
    let (last, _) = committed_and_end(&node.bootstrap(), group, topic);
    assert_eq!(last, end);
}

fn join_request(member_id: &str, session_timeout_ms: i32) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("raw-group")))
        .with_session_timeout_ms(session_timeout_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(bytes::Bytes::from_static(b"\0\0\0\0\0\0"))])
}

fn heartbeat(member_id: &str, generation: i32) -> HeartbeatRequest {
    HeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("raw-group")))
        .with_generation_id(generation)
        .with_member_id(StrBytes::from_string(member_id.to_string()))
}

/// The coordinator's error codes, request by request, on one raw connection.
#[test]
fn coordinator_error_codes() {
    use kafka_protocol::error::ResponseError as E;
    let node = Node::start(&["--group-initial-rebalance-delay-ms", "0"]);
    let mut client = RawClient::connect(&node.bootstrap());

    // Before anything asked for a coordinator, __consumer_offsets does not exist yet.
    let early = client.request(5, &join_request("", 10_000));
    assert_eq!(early.error_code, E::CoordinatorNotAvailable.code());

    let find = client.request(3, &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("raw-group")));
    assert_eq!((find.error_code, find.node_id.0), (0, 1));

    let invalid = client.request(5, &join_request("", 10));
    assert_eq!(invalid.error_code, E::InvalidSessionTimeout.code());

    let first = client.request(5, &join_request("", 10_000));
    assert_eq!(first.error_code, E::MemberIdRequired.code());
    let member = first.member_id.to_string();
    assert!(!member.is_empty());

    let joined = client.request(5, &join_request(&member, 10_000));
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    assert_eq!(joined.leader.as_str(), member);

    let unknown = client.request(3, &heartbeat("nobody", 1));
    assert_eq!(unknown.error_code, E::UnknownMemberId.code());
    let stale = client.request(3, &heartbeat(&member, 0));
    assert_eq!(stale.error_code, E::IllegalGeneration.code());

    // A second member's join puts the group into a rebalance the first must rejoin.
    let mut other = RawClient::connect(&node.bootstrap());
    let second = other.request(5, &join_request("", 10_000));
    let second_id = second.member_id.to_string();
    other
        .send_request(5, &join_request(&second_id, 10_000))
        .expect("second member's join is sent and waits for the rebalance");
    let mut in_rebalance = None;
    for _ in 0..50 {
        let beat = client.request(3, &heartbeat(&member, 1));
        if beat.error_code == E::RebalanceInProgress.code() {
            in_rebalance = Some(beat.error_code);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(in_rebalance, Some(E::RebalanceInProgress.code()));
    let sync = client.request(
        3,
        &SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("raw-group")))
            .with_generation_id(1)
            .with_member_id(StrBytes::from_string(member.clone())),
    );
    assert_eq!(sync.error_code, E::RebalanceInProgress.code());

    // The group state is intact: the first member rejoins and both get generation 2.
    let rejoined = client.request(5, &join_request(&member, 10_000));
    assert_eq!((rejoined.error_code, rejoined.generation_id), (0, 2));
    let second_joined: kafka_protocol::messages::JoinGroupResponse = other.read_response(5);
    assert_eq!((second_joined.error_code, second_joined.generation_id), (0, 2));
}

/// The group's state and member count, from DescribeGroups on a raw connection.
fn describe_group(bootstrap: &str, group: &str) -> (String, usize) {
    let mut client = RawClient::connect(bootstrap);
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
    let response = client.request(5, &request);
    let described = &response.groups[0];
    match described.error_code {
        0 => (described.group_state.to_string(), described.members.len()),
        // Before the first FindCoordinator, __consumer_offsets does not exist yet.
        code => (format!("error {code}"), 0),
    }
}

fn wait_for_group(bootstrap: &str, group: &str, state: &str, members: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut last = (String::new(), 0);
    while Instant::now() < deadline {
        last = describe_group(bootstrap, group);
        if last.0 == state && last.1 == members {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("group {group} never reached {state} with {members} members; last {last:?}");
}

/// A child process that does not outlive a failed test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A member process killed with SIGKILL sends no LeaveGroup: the coordinator expels it
/// after its session timeout and its partitions move to the surviving member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_is_expelled_after_its_session_timeout() {
    let node = Node::start(&["--group-initial-rebalance-delay-ms", "0"]);
    let (topic, group) = ("expel-topic", "expel-group");
    create_topic(&node, topic, PARTITIONS, &[]).await;
    let seen: Seen = Arc::default();
    let survivor = Member::start(&node.bootstrap(), group, topic, &CLASSIC, seen.clone());
    let mut doomed = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_group_member"))
            .args([node.bootstrap().as_str(), group, topic])
            .spawn()
            .expect("member process"),
    );
    let bootstrap = node.bootstrap();
    tokio::task::spawn_blocking(move || wait_for_group(&bootstrap, group, "Stable", 2, Duration::from_secs(60)))
        .await
        .expect("two members");

    doomed.0.kill().expect("SIGKILL");
    doomed.0.wait().expect("reaped");
    let acked = produce(&node.bootstrap(), topic, 600, 600).await;
    let waiting = (seen.clone(), acked.clone());
    tokio::task::spawn_blocking(move || wait_until_seen(&waiting.0, &waiting.1, Duration::from_secs(60)))
        .await
        .expect("the survivor consumes every partition");
    assert_eq!(describe_group(&node.bootstrap(), group).1, 1, "the killed member was expelled");
    tokio::task::spawn_blocking(move || survivor.leave()).await.expect("left");
}

/// Every advertised version of every group API, through one full member life cycle
/// per step: versions of different APIs advance together (each clamped to its range).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_group_api_version_works() {
    use kafka_protocol::messages::consumer_group_heartbeat_request::ConsumerGroupHeartbeatRequest as Ch;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::*;

    let node = Node::start(&["--group-initial-rebalance-delay-ms", "0", "--offsets-topic-num-partitions", "3"]);
    create_topic(&node, "sweep-topic", 1, &[]).await;
    let bootstrap = node.bootstrap();
    tokio::task::spawn_blocking(move || {
        let mut c = RawClient::connect(&bootstrap);
        let s = |v: &str| StrBytes::from_string(v.to_string());
        for i in 0..=9i16 {
            let v = |min: i16, max: i16| i.clamp(min, max);
            let name = format!("sweep-{i}");
            let group = GroupId(s(&name));

            let find = |key: &StrBytes, version: i16| match version {
                0..=3 => FindCoordinatorRequest::default().with_key(key.clone()),
                _ => FindCoordinatorRequest::default().with_coordinator_keys(vec![key.clone()]),
            };
            let found = c.request(v(0, 6), &find(&s(&name), v(0, 6)));
            let error = if v(0, 6) >= 4 { found.coordinators[0].error_code } else { found.error_code };
            assert_eq!(error, 0, "FindCoordinator v{}", v(0, 6));

            let join = |member: &str| {
                JoinGroupRequest::default()
                    .with_group_id(group.clone())
                    .with_session_timeout_ms(10_000)
                    .with_rebalance_timeout_ms(if v(0, 9) >= 1 { 10_000 } else { -1 })
                    .with_member_id(s(member))
                    .with_protocol_type(s("consumer"))
                    .with_protocols(vec![JoinGroupRequestProtocol::default()
                        .with_name(s("range"))
                        .with_metadata(bytes::Bytes::from_static(b"m"))])
            };
            let mut joined = c.request(v(0, 9), &join(""));
            if v(0, 9) >= 4 {
                assert_eq!(joined.error_code, kafka_protocol::error::ResponseError::MemberIdRequired.code());
                let id = joined.member_id.to_string();
                joined = c.request(v(0, 9), &join(&id));
            }
            assert_eq!((joined.error_code, joined.generation_id), (0, 1), "JoinGroup v{}", v(0, 9));
            let member = joined.member_id.to_string();

            let sync = SyncGroupRequest::default()
                .with_group_id(group.clone())
                .with_generation_id(1)
                .with_member_id(s(&member))
                .with_protocol_type((v(0, 5) >= 5).then(|| s("consumer")))
                .with_protocol_name((v(0, 5) >= 5).then(|| s("range")))
                .with_assignments(vec![SyncGroupRequestAssignment::default()
                    .with_member_id(s(&member))
                    .with_assignment(bytes::Bytes::from_static(b"assigned"))]);
            let synced = c.request(v(0, 5), &sync);
            assert_eq!((synced.error_code, &synced.assignment[..]), (0, &b"assigned"[..]), "SyncGroup v{}", v(0, 5));

            let beat = HeartbeatRequest::default()
                .with_group_id(group.clone())
                .with_generation_id(1)
                .with_member_id(s(&member));
            assert_eq!(c.request(v(0, 4), &beat).error_code, 0, "Heartbeat v{}", v(0, 4));

            let commit = OffsetCommitRequest::default()
                .with_group_id(group.clone())
                .with_generation_id_or_member_epoch(1)
                .with_member_id(s(&member))
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("sweep-topic")))
                    .with_partitions(vec![OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(10 + i as i64)])]);
            let committed = c.request(v(2, 9), &commit);
            assert_eq!(committed.topics[0].partitions[0].error_code, 0, "OffsetCommit v{}", v(2, 9));

            let fetched = if v(1, 9) >= 8 {
                let request = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(group.clone())
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(TopicName(s("sweep-topic")))
                        .with_partition_indexes(vec![0])]))]);
                c.request(v(1, 9), &request).groups[0].topics[0].partitions[0].committed_offset
            } else {
                let request = OffsetFetchRequest::default().with_group_id(group.clone()).with_topics(Some(vec![
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(s("sweep-topic")))
                        .with_partition_indexes(vec![0]),
                ]));
                c.request(v(1, 9), &request).topics[0].partitions[0].committed_offset
            };
            assert_eq!(fetched, 10 + i as i64, "OffsetFetch v{}", v(1, 9));

            let described = c.request(v(0, 6), &DescribeGroupsRequest::default().with_groups(vec![group.clone()]));
            assert_eq!(described.groups[0].group_state.as_str(), "Stable", "DescribeGroups v{}", v(0, 6));
            assert_eq!(described.groups[0].members.len(), 1);

            let listed = c.request(v(0, 5), &ListGroupsRequest::default());
            assert!(listed.groups.iter().any(|g| g.group_id == group), "ListGroups v{}", v(0, 5));

            let leave = match v(0, 5) {
                0..=2 => LeaveGroupRequest::default().with_group_id(group.clone()).with_member_id(s(&member)),
                _ => LeaveGroupRequest::default()
                    .with_group_id(group.clone())
                    .with_members(vec![MemberIdentity::default().with_member_id(s(&member))]),
            };
            let left = c.request(v(0, 5), &leave);
            let error = if v(0, 5) >= 3 { left.members[0].error_code } else { left.error_code };
            assert_eq!((left.error_code, error), (0, 0), "LeaveGroup v{}", v(0, 5));

            let delete_offsets = OffsetDeleteRequest::default().with_group_id(group.clone()).with_topics(vec![
                OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s("sweep-topic")))
                    .with_partitions(vec![OffsetDeleteRequestPartition::default().with_partition_index(0)]),
            ]);
            let deleted = c.request(0, &delete_offsets);
            assert_eq!((deleted.error_code, deleted.topics[0].partitions[0].error_code), (0, 0), "OffsetDelete v0");

            let delete = DeleteGroupsRequest::default().with_groups_names(vec![group.clone()]);
            assert_eq!(c.request(v(0, 2), &delete).results[0].error_code, 0, "DeleteGroups v{}", v(0, 2));

            // KIP-848: join, describe, leave.
            let kip = GroupId(s(&format!("sweep848-{i}")));
            c.request(v(0, 6), &find(&kip.0, v(0, 6)));
            let member_id = format!("member-{i}");
            let join = Ch::default()
                .with_group_id(kip.clone())
                .with_member_id(s(&member_id))
                .with_member_epoch(0)
                .with_rebalance_timeout_ms(10_000)
                .with_subscribed_topic_names(Some(vec![TopicName(s("sweep-topic"))]))
                .with_topic_partitions(Some(vec![]));
            let hb = c.request(v(0, 1), &join);
            assert_eq!(hb.error_code, 0, "ConsumerGroupHeartbeat v{}", v(0, 1));
            assert!(hb.member_epoch > 0);
            let assigned: Vec<i32> = hb
                .assignment
                .expect("an assignment")
                .topic_partitions
                .iter()
                .flat_map(|t| t.partitions.clone())
                .collect();
            assert_eq!(assigned, [0]);
            let described =
                c.request(v(0, 1), &ConsumerGroupDescribeRequest::default().with_group_ids(vec![kip.clone()]));
            assert_eq!(
                (described.groups[0].error_code, described.groups[0].members.len()),
                (0, 1),
                "ConsumerGroupDescribe v{}",
                v(0, 1)
            );
            let leave = Ch::default().with_group_id(kip.clone()).with_member_id(s(&member_id)).with_member_epoch(-1);
            assert_eq!(c.request(v(0, 1), &leave).member_epoch, -1);
        }
    })
    .await
    .expect("sweep");
}

/// Three nodes: the group's coordinator is killed with SIGKILL while two members consume
/// and commit. The coordinator moves with its `__consumer_offsets` partition, the
/// members rejoin, every acknowledged record is consumed, and no committed offset ever
/// goes backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_fails_over_with_its_partition_and_commits_never_go_back() {
    let extra = ["--group-initial-rebalance-delay-ms", "0", "--offsets-topic-num-partitions", "3"];
    let mut cluster = Cluster::start(46, 3, &extra);
    let (topic, group) = ("failover-topic", "failover-group");
    cluster.create_topic(topic, PARTITIONS, 3, &[]).await;
    let bootstrap = cluster.bootstrap();
    let seen: Seen = Arc::default();
    let a = Member::start(&bootstrap, group, topic, &CLASSIC, seen.clone());
    let b = Member::start(&bootstrap, group, topic, &CLASSIC, seen.clone());

    // Watch the committed offsets from the side: they must never go down.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (watching, bootstrap) = (watching.clone(), bootstrap.clone());
        std::thread::spawn(move || {
            let mut highest: BTreeMap<i32, i64> = BTreeMap::new();
            let mut backwards = Vec::new();
            loop {
                // One last look after the members left, so a late backward commit is seen too.
                let last = !watching.load(Ordering::Relaxed);
                for (p, offset) in committed(&bootstrap, group, topic).unwrap_or_default() {
                    let seen_before = highest.entry(p).or_insert(offset);
                    if offset < *seen_before {
                        backwards.push((p, *seen_before, offset));
                    }
                    *seen_before = (*seen_before).max(offset);
                }
                if last {
                    return (backwards, highest);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    let mut acked = produce(&bootstrap, topic, 1200, 100).await;
    let mut probe = RawClient::connect(&cluster.nodes[0].bootstrap());
    let found = probe.request(3, &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str(group)));
    assert_eq!(found.error_code, 0);
    let coordinator = found.node_id.0 as u64;
    cluster.node(coordinator).kill9();
    acked.extend(produce(&bootstrap, topic, 1200, 100).await);
    cluster.node(coordinator).restart();

    let waiting = (seen.clone(), acked.clone());
    tokio::task::spawn_blocking(move || wait_until_seen(&waiting.0, &waiting.1, Duration::from_secs(120)))
        .await
        .expect("every acknowledged record consumed after the failover");
    let ends = end_offsets(&acked);
    tokio::task::spawn_blocking(move || {
        wait_caught_up(&[&a, &b], &ends, Duration::from_secs(120));
        a.leave();
        b.leave();
    })
    .await
    .expect("members left");
    watching.store(false, Ordering::Relaxed);
    let (backwards, highest) = watcher.join().expect("watcher");
    assert!(backwards.is_empty(), "committed offsets went backwards (partition, before, after): {backwards:?}");
    // The members stop while the group may still be settling after the failover, so the
    // last commits can trail the end (a next member re-reads from there: at least once).
    let (committed, end) = committed_and_end(&bootstrap, group, topic);
    for (p, offset) in &committed {
        assert!(
            *offset <= end[p] && *offset >= highest.get(p).copied().unwrap_or(0),
            "partition {p}: committed {offset}, end {}",
            end[p]
        );
    }
}
