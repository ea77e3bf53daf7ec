//! Backups end to end: real nodes, real librdkafka clients, a real local-directory
//! backup location, the real `chronik backup` CLI and admin gRPC service.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chronik_backup::{BackupStore, Manifest};
use chronik_tests::{chronik, consume, consumer, create_topic, producer, Node};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

/// (topic, partition) -> acknowledged (offset, key, value) in offset order.
type Acked = BTreeMap<(String, i32), Vec<(i64, Vec<u8>, Vec<u8>)>>;

const TOPICS: [(&str, i32, &str); 3] = [("rt-gzip", 2, "gzip"), ("rt-zstd", 1, "zstd"), ("rt-plain", 3, "none")];

/// The group whose committed offsets the round trip carries.
const GROUP: &str = "rt-group";

/// The offsets `GROUP` commits: partition p of each topic at 100 + 10 * p.
fn group_offsets() -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (topic, partitions, _) in TOPICS {
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Offset(100 + 10 * p as i64)).expect("offset");
        }
    }
    tpl
}

fn group_client(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .expect("group consumer")
}

async fn produce(node: &Node, topic: &str, partitions: i32, codec: &str, n: usize, acked: &mut Acked) {
    let producer = producer(node, &[("compression.codec", codec), ("linger.ms", "5")]);
    let mut futures = Vec::new();
    for i in 0..n {
        let key = format!("{topic}-key-{i}").into_bytes();
        // Some values are not UTF-8: the restore must keep bytes, not text.
        let value: Vec<u8> = (0..(i % 300)).map(|j| (i * 31 + j) as u8).collect();
        let partition = (i as i32) % partitions;
        let record = FutureRecord::to(topic).partition(partition).key(&key).payload(&value);
        futures.push((producer.send_result(record).expect("queue"), key.clone(), value.clone()));
    }
    for (future, key, value) in futures {
        let delivery = future.await.expect("delivery").expect("acknowledged");
        acked.entry((topic.to_string(), delivery.partition)).or_default().push((delivery.offset, key, value));
    }
    for records in acked.values_mut() {
        records.sort_by_key(|r| r.0);
    }
}

fn assert_serves(node: &Node, acked: &Acked) {
    for ((topic, partition), records) in acked {
        let consumer = consumer(node, topic, *partition, Offset::Beginning, &[]);
        let got = consume(&consumer, records.len(), Duration::from_secs(30));
        assert_eq!(got.len(), records.len(), "{topic}-{partition}: every acknowledged record is back");
        for (g, (offset, key, value)) in got.iter().zip(records) {
            assert_eq!(g.offset, *offset, "{topic}-{partition}");
            assert_eq!(g.key.as_deref(), Some(key.as_slice()), "{topic}-{partition} key at {offset}");
            assert_eq!(g.value.as_deref().unwrap_or_default(), value.as_slice(), "{topic}-{partition} at {offset}");
        }
    }
}

fn manifests(location: &str) -> Vec<Manifest> {
    BackupStore::open(location).expect("store").list().expect("list")
}

fn run_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let (ok, stdout, stderr) = chronik(args, env);
    assert!(ok, "chronik {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

async fn retention_of(node: &Node, topic: &str) -> Option<String> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", node.bootstrap()).create().expect("admin");
    let results =
        admin.describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new()).await.expect("describe");
    let resource = results.into_iter().next().expect("one result").expect("described");
    resource.get("retention.ms").and_then(|e| e.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_backup_while_producing_restores_every_acknowledged_record() {
    let node = Node::start(&[]);
    let mut acked = Acked::new();
    for (topic, partitions, codec) in TOPICS {
        let retention = format!("{}", 86_400_000 * (partitions as i64 + 1));
        create_topic(&node, topic, partitions, &[("retention.ms", &retention)]).await;
        produce(&node, topic, partitions, codec, 600, &mut acked).await;
    }

    // A consumer group's committed offsets (a commit is acknowledged once applied).
    let committing = node.bootstrap();
    tokio::task::spawn_blocking(move || {
        group_client(&committing).commit(&group_offsets(), CommitMode::Sync).expect("commit");
    })
    .await
    .expect("commit task");

    // A producer keeps writing to its own topic while the backup runs.
    create_topic(&node, "rt-live", 1, &[]).await;
    let writing = Arc::new(AtomicBool::new(true));
    let live_acked = Arc::new(AtomicUsize::new(0));
    let live_producer = producer(&node, &[("linger.ms", "1")]);
    let writer = {
        let (writing, live_acked) = (writing.clone(), live_acked.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while writing.load(Ordering::Relaxed) {
                let value = format!("live-{i}");
                let record = FutureRecord::<(), _>::to("rt-live").partition(0).payload(&value);
                let delivery = live_producer.send(record, Duration::from_secs(10)).await.expect("live ack");
                acked.push((delivery.offset, value.into_bytes()));
                live_acked.store(acked.len(), Ordering::Release);
                i += 1;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let location = dir.path().join("backups");
    let location = location.to_str().expect("utf-8");
    let rpc = node.rpc_addr();
    let acked_before_backup = live_acked.load(Ordering::Acquire);
    assert!(acked_before_backup > 0, "the producer is writing when the backup starts");
    let output = tokio::task::spawn_blocking({
        let location = location.to_string();
        move || run_ok(&["backup", "create", "--node", &rpc, "--to", &location], &[])
    })
    .await
    .expect("backup task");
    writing.store(false, Ordering::Relaxed);
    let live = writer.await.expect("writer");
    assert!(output.contains("created backup"), "{output}");
    let manifest = manifests(location).pop().expect("one backup");
    assert!(!manifest.groups.is_empty() && manifest.node_id == 1, "{manifest:?}");

    run_ok(&["backup", "verify", "--from", location, "--id", &manifest.id], &[]);
    let restored_dir = dir.path().join("restored");
    let restored_str = restored_dir.to_str().expect("utf-8");
    run_ok(&["backup", "restore", "--from", location, "--id", &manifest.id, "--data-dir", restored_str], &[]);
    check_restored_dir_is_consistent(&restored_dir);
    let restored = Node::start_on(&restored_dir, &[]);

    assert_serves(&restored, &acked);
    for (topic, partitions, _) in TOPICS {
        let expected = format!("{}", 86_400_000 * (partitions as i64 + 1));
        assert_eq!(retention_of(&restored, topic).await, Some(expected), "{topic}: its config survives");
    }
    // The group's committed offsets are there.
    let client = group_client(&restored.bootstrap());
    let committed = client.committed_offsets(group_offsets(), Duration::from_secs(10)).expect("committed");
    assert_eq!(committed.to_topic_map(), group_offsets().to_topic_map(), "committed group offsets survive");

    // The live topic holds a prefix of what was acknowledged: all records acknowledged
    // before the backup started at least, byte for byte, and nothing invented.
    let probe = consumer(&restored, "rt-live", 0, Offset::Beginning, &[]);
    let (_, high) = probe.fetch_watermarks("rt-live", 0, Duration::from_secs(5)).expect("watermarks");
    assert!(
        high as usize >= acked_before_backup && high as usize <= live.len(),
        "restored high watermark {high}: {acked_before_backup} acknowledged before the backup, {} in all",
        live.len()
    );
    let got = consume(&probe, high as usize, Duration::from_secs(30));
    assert_eq!(got.len(), high as usize);
    for (g, (offset, value)) in got.iter().zip(&live) {
        assert_eq!((g.offset, g.value.as_deref()), (*offset, Some(value.as_slice())));
    }

    // New writes continue after the restored offsets.
    let next = producer(&restored, &[]);
    let delivery = next
        .send(FutureRecord::<(), _>::to("rt-zstd").partition(0).payload("after restore"), Duration::from_secs(10))
        .await
        .expect("write after restore");
    assert_eq!(delivery.offset, 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_backup_uploads_only_new_files() {
    let node = Node::start(&[]);
    let mut acked = Acked::new();
    create_topic(&node, "inc", 1, &[]).await;
    produce(&node, "inc", 1, "none", 3000, &mut acked).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let location = dir.path().to_str().expect("utf-8").to_string();
    let rpc = node.rpc_addr();
    let backup = {
        let (location, rpc) = (location.clone(), rpc.clone());
        move || run_ok(&["backup", "create", "--node", &rpc, "--to", &location], &[])
    };
    tokio::task::spawn_blocking(backup.clone()).await.expect("first");
    produce(&node, "inc", 1, "none", 5, &mut acked).await;
    tokio::task::spawn_blocking(backup).await.expect("second");

    let list = manifests(&location);
    let [first, second] = list.as_slice() else { panic!("two backups expected, got {}", list.len()) };
    let first_ssts: BTreeMap<&str, &str> =
        first.files.iter().filter(|f| f.name.ends_with(".sst")).map(|f| (f.name.as_str(), f.object.as_str())).collect();
    let mut reused = 0;
    for file in second.files.iter().filter(|f| f.name.ends_with(".sst")) {
        match first_ssts.get(file.name.as_str()) {
            Some(object) => {
                assert_eq!(file.uploaded_by, first.id, "{} was stored by the first backup", file.name);
                assert_eq!(file.object, *object);
                reused += 1;
            }
            None => assert_eq!(file.uploaded_by, second.id, "{} is new", file.name),
        }
    }
    assert!(reused > 0, "the SSTs of the first backup are referred to");
    assert!(second.uploaded().any(|f| f.name.ends_with(".sst")), "the small write made a new SST");
    assert!(
        second.uploaded_bytes() * 4 < first.uploaded_bytes(),
        "the second upload ({} bytes) is a fraction of the first ({} bytes)",
        second.uploaded_bytes(),
        first.uploaded_bytes()
    );
    let listing = run_ok(&["backup", "list", "--from", &location], &[]);
    assert!(listing.contains(&first.id) && listing.contains(&second.id), "{listing}");
    run_ok(&["backup", "prune", "--from", &location, "--keep", "1"], &[]);
    let left = manifests(&location);
    assert_eq!(left.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), vec![second.id.as_str()]);
    run_ok(&["backup", "verify", "--from", &location, "--id", &second.id], &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_missing_file_fails_verify_and_restore_by_name() {
    let mut node = Node::start(&[]);
    let mut acked = Acked::new();
    create_topic(&node, "bad", 1, &[]).await;
    produce(&node, "bad", 1, "none", 500, &mut acked).await;
    assert_eq!(node.terminate(), Some(0));
    let dir = tempfile::tempdir().expect("tempdir");
    let location = dir.path().join("store");
    let location = location.to_str().expect("utf-8");
    let data_dir = node.data_dir.to_str().expect("utf-8");
    // Offline: the node is stopped.
    run_ok(&["backup", "create", "--data-dir", data_dir, "--to", location, "--compression", "gzip"], &[]);
    let manifest = manifests(location).pop().expect("backup");
    let victim = manifest.files.iter().filter(|f| f.name.ends_with(".sst")).max_by_key(|f| f.size).expect("an SST");
    let object = dir.path().join("store").join(&victim.object);
    let mut bytes = std::fs::read(&object).expect("object");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&object, &bytes).expect("flip a byte");

    let (ok, _, stderr) = chronik(&["backup", "verify", "--from", location, "--id", &manifest.id], &[]);
    assert!(!ok && stderr.contains(&victim.name), "verify names {}: {stderr}", victim.name);
    let target = dir.path().join("never");
    let target_str = target.to_str().expect("utf-8");
    let restore = ["backup", "restore", "--from", location, "--id", &manifest.id, "--data-dir", target_str];
    let (ok, _, stderr) = chronik(&restore, &[]);
    assert!(!ok && stderr.contains(&victim.name), "restore names {}: {stderr}", victim.name);
    assert!(!target.exists(), "nothing is written to the target");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1, "no staging dir is left behind");

    std::fs::remove_file(&object).expect("remove");
    let (ok, _, stderr) = chronik(&["backup", "verify", "--from", location, "--id", &manifest.id], &[]);
    assert!(!ok && stderr.contains(&victim.name) && stderr.contains("missing"), "{stderr}");

    // A non-empty target and an unknown id are refused with what is wrong.
    let (ok, _, stderr) =
        chronik(&["backup", "restore", "--from", location, "--id", &manifest.id, "--data-dir", data_dir], &[]);
    assert!(!ok && stderr.contains("is not empty"), "{stderr}");
    let (ok, _, stderr) = chronik(&["backup", "verify", "--from", location, "--id", "no-such-id"], &[]);
    assert!(!ok && stderr.contains("no-such-id"), "{stderr}");
    let (ok, _, stderr) = chronik(&["backup", "list", "--from", "ftp://nowhere/x"], &[]);
    assert!(!ok && stderr.contains("ftp://nowhere/x"), "{stderr}");
}

fn check_restored_dir_is_consistent(dir: &Path) {
    let data = chronik_dump::DataDir::open(dir).expect("open restored dir");
    let mut out = chronik_dump::Output::new(Vec::new(), chronik_dump::Format::JsonLines);
    let problems = chronik_dump::check(&data, &mut out).expect("check");
    assert!(problems.is_empty(), "{problems:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_backup_of_a_killed_node_holds_every_acknowledged_record() {
    let mut node = Node::start(&[]);
    let mut acked = Acked::new();
    create_topic(&node, "killed", 2, &[]).await;
    produce(&node, "killed", 2, "zstd", 400, &mut acked).await;
    // A bad location is refused by the node with the location in the message.
    let (ok, _, stderr) = chronik(&["backup", "create", "--node", &node.rpc_addr(), "--to", "ftp://nowhere/x"], &[]);
    assert!(!ok && stderr.contains("ftp://nowhere/x"), "{stderr}");
    // SIGKILL: applied writes were never flushed; the offline backup replays the log first.
    node.kill9();
    let dir = tempfile::tempdir().expect("tempdir");
    let location = dir.path().join("store");
    let location = location.to_str().expect("utf-8");
    let data_dir = node.data_dir.to_str().expect("utf-8");
    run_ok(&["backup", "create", "--data-dir", data_dir, "--to", location, "--compression", "none"], &[]);
    let manifest = manifests(location).pop().expect("backup");
    let restored_dir = dir.path().join("restored");
    let target = restored_dir.to_str().expect("utf-8");
    run_ok(&["backup", "restore", "--from", location, "--id", &manifest.id, "--data-dir", target], &[]);
    check_restored_dir_is_consistent(&restored_dir);
    let restored = Node::start_on(&restored_dir, &[]);
    assert_serves(&restored, &acked);
}

/// An S3-compatible server (`moto` from PyPI) on a free loopback port, holding one
/// bucket. Killed on drop.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl S3Server {
    fn start(bucket: &str) -> S3Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let child = std::process::Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3");
        let mut server = S3Server { child, endpoint: format!("http://127.0.0.1:{port}") };
        // moto accepts unsigned requests: create the bucket with a plain PUT.
        let request = format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(reply) = http(port, &request) {
                assert!(reply.starts_with("HTTP/1.1 200"), "creating bucket {bucket}: {reply}");
                return server;
            }
            let exited = server.child.try_wait().expect("wait");
            assert!(
                exited.is_none() && std::time::Instant::now() < deadline,
                "the moto S3 server did not start ({exited:?}); install it with tests/clients/install-deps.sh"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What a node or the CLI needs to reach the bucket: the usual AWS variables.
    fn env(&self) -> [(&str, &str); 5] {
        [
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(port: u16, request: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.write_all(request.as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Writes `bytes` of incompressible 64 KiB records to partition 0 of `topic`.
async fn produce_incompressible(node: &Node, topic: &str, bytes: usize, acked: &mut Acked) {
    let producer = producer(node, &[("linger.ms", "5")]);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut futures = Vec::new();
    for i in 0..bytes / 65_536 {
        let value: Vec<u8> = (0..65_536 / 8)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()
            })
            .collect();
        let key = format!("big-{i}").into_bytes();
        let record = FutureRecord::to(topic).partition(0).key(&key).payload(&value);
        futures.push((producer.send_result(record).expect("queue"), key.clone(), value.clone()));
    }
    for (future, key, value) in futures {
        let delivery = future.await.expect("delivery").expect("acknowledged");
        acked.entry((topic.to_string(), 0)).or_default().push((delivery.offset, key, value));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_round_trip_through_an_s3_server() {
    let s3 = S3Server::start("chronik");
    let env = s3.env();
    let node = Node::start_with_env(&[], &env);
    let mut acked = Acked::new();
    create_topic(&node, "s3-mixed", 2, &[]).await;
    produce(&node, "s3-mixed", 2, "zstd", 500, &mut acked).await;
    // One SST larger than a multipart part (16 MiB), so the upload goes in parts.
    create_topic(&node, "s3-big", 1, &[]).await;
    produce_incompressible(&node, "s3-big", 24 << 20, &mut acked).await;

    let location = "s3://chronik/backups-of/node-1";
    let rpc = node.rpc_addr();
    let cli = move |args: Vec<String>| {
        let env = env.map(|(k, v)| (k.to_string(), v.to_string()));
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            run_ok(&args, &env)
        })
    };
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let create = args(&["backup", "create", "--node", &rpc, "--to", location, "--compression", "none"]);
    cli(create.clone()).await.expect("first backup");
    produce(&node, "s3-mixed", 2, "zstd", 20, &mut acked).await;
    cli(create).await.expect("second backup");

    let listing = cli(args(&["backup", "list", "--from", location, "--json"])).await.expect("list");
    let list: Vec<Manifest> =
        listing.lines().map(|line| Manifest::from_json("list", line.as_bytes()).expect("manifest")).collect();
    let [first, second] = list.as_slice() else { panic!("two backups expected: {listing}") };
    assert!(
        first.files.iter().any(|f| f.stored_size > 16 << 20),
        "an object above one part was uploaded: {:?}",
        first.files.iter().map(|f| f.stored_size).max()
    );
    assert!(
        second.files.iter().any(|f| f.uploaded_by == first.id && f.name.ends_with(".sst")),
        "the second backup refers to the first one's SSTs"
    );
    assert!(second.uploaded_bytes() * 4 < first.uploaded_bytes(), "the second upload is a fraction of the first");

    cli(args(&["backup", "prune", "--from", location, "--keep", "1"])).await.expect("prune");
    let listing = cli(args(&["backup", "list", "--from", location])).await.expect("list");
    assert!(listing.contains(&second.id) && !listing.contains(&first.id), "{listing}");
    cli(args(&["backup", "verify", "--from", location, "--id", &second.id])).await.expect("verify");

    let dir = tempfile::tempdir().expect("tempdir");
    let restored_dir = dir.path().join("restored");
    let target = restored_dir.to_str().expect("utf-8");
    cli(args(&["backup", "restore", "--from", location, "--id", &second.id, "--data-dir", target]))
        .await
        .expect("restore");
    check_restored_dir_is_consistent(&restored_dir);
    let restored = Node::start_on(&restored_dir, &[]);
    assert_serves(&restored, &acked);
}
