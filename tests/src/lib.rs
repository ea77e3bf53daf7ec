//! Test support: start real `chronik` processes on free ports, kill them with SIGKILL,
//! restart them on the same data dir, and talk to them with real clients.

pub mod raw;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

/// The `chronik` binary built next to this test executable (or `$CHRONIK_BIN`).
pub fn chronik_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("CHRONIK_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps");
    let bin = profile_dir.join("chronik");
    assert!(
        bin.exists(),
        "{} not found: run `cargo test --workspace` (it builds the binary) or set CHRONIK_BIN",
        bin.display()
    );
    bin
}

/// A running node process with its own data dir.
pub struct Node {
    pub node_id: u64,
    /// Address every listener of this node binds (127.0.0.1, or its own loopback
    /// address in a cluster).
    pub host: String,
    pub data_dir: PathBuf,
    pub kafka_port: u16,
    /// The admin/Raft gRPC port (`rpc=` in `<data-dir>/listeners`).
    pub rpc_port: u16,
    http_port: u16,
    extra: Vec<String>,
    /// Environment variables the process gets on top of the test's own.
    env: Vec<(String, String)>,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Node {
    /// Starts a node in a fresh temporary data dir; `extra` are additional flags. The
    /// node binds free ports itself (port 0) and reports them in `<data-dir>/listeners`;
    /// restarts reuse them, so clients reconnect to the same address.
    pub fn start(extra: &[&str]) -> Node {
        Node::start_with_env(extra, &[])
    }

    /// [`Node::start`] with extra environment variables for the node process.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = Node::on(dir.path().join("data"), extra);
        node.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        node._dir = Some(dir);
        node.spawn();
        node
    }

    /// Starts a node on an existing data dir (a restored backup, say), which the caller
    /// owns and removes.
    pub fn start_on(data_dir: &Path, extra: &[&str]) -> Node {
        let mut node = Node::on(data_dir.to_path_buf(), extra);
        node.spawn();
        node
    }

    fn on(data_dir: PathBuf, extra: &[&str]) -> Node {
        Node {
            node_id: 1,
            host: "127.0.0.1".into(),
            data_dir,
            kafka_port: 0,
            http_port: 0,
            rpc_port: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            child: None,
            _dir: None,
        }
    }

    /// The rpc address, for `chronik backup create --node`.
    pub fn rpc_addr(&self) -> String {
        format!("{}:{}", self.host, self.rpc_port)
    }

    /// Starts node `id` of a cluster of `size` nodes. Node `id` listens on its own
    /// loopback address `127.0.<subnet>.<id + 1>` with fixed ports (Kafka 9092, RPC 9093,
    /// HTTP 9644), so every node knows its peers' addresses before they start and a
    /// restarted node comes back at the same address. Give each test its own subnet.
    pub fn start_member(subnet: u8, id: u64, size: u64, extra: &[&str]) -> Node {
        let all: Vec<u64> = (1..=size).collect();
        Node::start_member_knowing(subnet, id, &all, extra)
    }

    /// [`Node::start_member`] with a `--peers` list of only the nodes `known` (which
    /// should include `id`), as for a node joining a running cluster.
    pub fn start_member_knowing(subnet: u8, id: u64, known: &[u64], extra: &[&str]) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let peers: Vec<String> = known.iter().map(|i| format!("{i}@{}:9093", member_host(subnet, *i))).collect();
        let mut args: Vec<String> = vec!["--peers".into(), peers.join(",")];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut node = Node {
            node_id: id,
            host: member_host(subnet, id),
            data_dir: dir.path().join("data"),
            kafka_port: 9092,
            http_port: 9644,
            rpc_port: 9093,
            extra: args,
            env: Vec::new(),
            child: None,
            _dir: Some(dir),
        };
        node.spawn();
        node
    }

    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.host, self.kafka_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGSTOP / SIGCONT: the process stays alive but stops answering (a cut network,
    /// as seen by its peers).
    pub fn pause(&self, paused: bool) {
        if let Some(child) = &self.child {
            let signal = if paused { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill").args([signal, &child.id().to_string()]).status();
        }
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.data_dir.join("listeners"));
        let child = Command::new(chronik_bin())
            .arg("start")
            .args(["--node-id", &self.node_id.to_string()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--kafka-addr", &self.bootstrap()])
            .args(["--rpc-addr", &format!("{}:{}", self.host, self.rpc_port)])
            .args(["--http-addr", &format!("{}:{}", self.host, self.http_port)])
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("CHRONIK_LOG", std::env::var("CHRONIK_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn chronik");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some((kafka, http, rpc)) = self.read_listeners() {
                self.kafka_port = kafka;
                self.http_port = http;
                self.rpc_port = rpc;
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("chronik exited during start-up: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("chronik did not start listening within 30 s");
    }

    /// The ports in `<data-dir>/listeners`, written once the node listens.
    fn read_listeners(&self) -> Option<(u16, u16, u16)> {
        let text = std::fs::read_to_string(self.data_dir.join("listeners")).ok()?;
        let port = |name: &str| -> Option<u16> {
            let line = text.lines().find_map(|l| l.strip_prefix(name))?;
            line.rsplit_once(':')?.1.parse().ok()
        };
        Some((port("kafka=")?, port("http=")?, port("rpc=")?))
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        child.wait().ok()?.code()
    }

    /// Starts the process again on the same data dir and ports.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Starts the process again on the same data dir and ports, with other extra flags.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.restart();
    }

    pub fn http_get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect((self.host.as_str(), self.http_port)).expect("http connect");
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).expect("http write");
        let mut out = String::new();
        let _ = stream.read_to_string(&mut out);
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.pause(false);
        self.kill9();
    }
}

/// Runs `chronik ARGS` to completion with extra environment variables; returns
/// (success, stdout, stderr).
pub fn chronik(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = Command::new(chronik_bin())
        .args(args)
        .envs(env.iter().copied())
        .env("CHRONIK_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run chronik");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

fn member_host(subnet: u8, id: u64) -> String {
    format!("127.0.{subnet}.{}", id + 1)
}

/// Real `chronik` processes forming one cluster; see [`Node::start_member`].
pub struct Cluster {
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Starts `size` nodes and waits until they elected a controller and registered.
    pub fn start(subnet: u8, size: u64, extra: &[&str]) -> Cluster {
        let cluster = Cluster { nodes: (1..=size).map(|id| Node::start_member(subnet, id, size, extra)).collect() };
        let deadline = Instant::now() + Duration::from_secs(30);
        let client: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", cluster.bootstrap()).create().expect("metadata client");
        while Instant::now() < deadline {
            let ready = client.fetch_metadata(None, Duration::from_secs(2)).is_ok_and(|m| m.orig_broker_id() > 0)
                && cluster.formed();
            if ready {
                return cluster;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the cluster did not form within 30 s");
    }

    /// Whether every node names a controller (the group-0 leader) and lists every node
    /// as a broker (all registered), so topics can be placed on all of them.
    pub fn formed(&self) -> bool {
        use kafka_protocol::messages::MetadataRequest;
        self.nodes.iter().all(|n| {
            let mut client = raw::RawClient::connect(&n.bootstrap());
            let metadata = client.request(12, &MetadataRequest::default());
            metadata.controller_id.0 > 0 && metadata.brokers.len() == self.nodes.len()
        })
    }

    pub fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Kafka addresses of all nodes, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.nodes.iter().map(Node::bootstrap).collect::<Vec<_>>().join(",")
    }

    /// The partition's leader as a running node reports it, once one is known.
    pub fn leader(&self, topic: &str, partition: i32, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", node.bootstrap())
                    .set("socket.timeout.ms", "2000")
                    .create()
                    .expect("metadata client");
                let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(2)) else { continue };
                let leader = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .and_then(|t| t.partitions().iter().find(|p| p.id() == partition))
                    .map(|p| p.leader())
                    .filter(|l| *l > 0);
                if let Some(leader) = leader {
                    return Some(leader as u64);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Creates a topic with `replicas` replicas per partition through any node.
    pub async fn create_topic(&self, name: &str, partitions: i32, replicas: i32, configs: &[(&str, &str)]) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.bootstrap()).create().expect("admin");
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replicas));
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        let results = admin.create_topics([&topic], &AdminOptions::new()).await.expect("create_topics");
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
    }
}

/// Reads `partition` of `topic` from one node's own data with raw Fetch v12 requests
/// (a replica that is not the leader serves v11+ fetches from its applied data), until
/// `count` records arrived or `timeout` passed. Returns (offset, value) pairs.
pub fn read_replica(node: &Node, topic: &str, partition: i32, count: usize, timeout: Duration) -> Vec<(i64, Vec<u8>)> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::RecordBatchDecoder;
    let deadline = Instant::now() + timeout;
    let mut got: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut client = raw::RawClient::connect(&node.bootstrap());
    while got.len() < count && Instant::now() < deadline {
        let next = got.last().map_or(0, |(o, _)| o + 1);
        let request = FetchRequest::default()
            .with_max_wait_ms(200)
            .with_min_bytes(1)
            .with_max_bytes(16 << 20)
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(next)
                    .with_partition_max_bytes(8 << 20)])]);
        let response = client.request(12, &request);
        let Some(data) = response.responses.first().and_then(|t| t.partitions.first()) else { continue };
        if data.error_code != 0 {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let mut records = data.records.clone().unwrap_or_default();
        while !records.is_empty() {
            let Ok(set) = RecordBatchDecoder::decode(&mut records) else { break };
            for r in set.records {
                if r.offset >= next {
                    got.push((r.offset, r.value.map(|v| v.to_vec()).unwrap_or_default()));
                }
            }
        }
    }
    got
}

/// A producer; `extra` settings override the defaults.
pub fn producer(node: &Node, extra: &[(&str, &str)]) -> FutureProducer {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", node.bootstrap()).set("acks", "all").set("message.timeout.ms", "30000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("producer")
}

/// A consumer without a group, reading one partition from `offset`.
pub fn consumer(node: &Node, topic: &str, partition: i32, offset: Offset, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", node.bootstrap())
        .set("group.id", "chronik-tests-assign")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, offset).expect("offset");
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// A consumed record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// Polls until `count` records arrived or `timeout` passed; consumer errors fail the test.
pub fn consume(consumer: &BaseConsumer, count: usize, timeout: Duration) -> Vec<Got> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => got.push(Got {
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
            }),
            // librdkafka reports a dropped connection (and, with one broker, that all are
            // down) and then reconnects by itself: a lost record still fails the caller's
            // count check.
            Some(Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
            ))) => {}
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    got
}

/// Creates a topic with an admin client and waits for it.
pub async fn create_topic(node: &Node, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", node.bootstrap()).create().expect("admin");
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let results = admin.create_topics([&topic], &AdminOptions::new()).await.expect("create_topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}
