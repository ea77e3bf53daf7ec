//! Test support: start real `chronik` processes on free ports, kill them with SIGKILL,
//! restart them on the same data dir, and talk to them with real clients.

pub mod raw;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
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
    pub data_dir: PathBuf,
    pub kafka_port: u16,
    /// The admin/Raft gRPC port (`rpc=` in `<data-dir>/listeners`).
    pub rpc_port: u16,
    http_port: u16,
    extra: Vec<String>,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Node {
    /// Starts a node in a fresh temporary data dir; `extra` are additional flags. The
    /// node binds free ports itself (port 0) and reports them in `<data-dir>/listeners`;
    /// restarts reuse them, so clients reconnect to the same address.
    pub fn start(extra: &[&str]) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = Node::on(dir.path().join("data"), extra);
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
            data_dir,
            kafka_port: 0,
            rpc_port: 0,
            http_port: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            _dir: None,
        }
    }

    /// The rpc address, for `chronik backup create --node`.
    pub fn rpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.rpc_port)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.data_dir.join("listeners"));
        let child = Command::new(chronik_bin())
            .arg("start")
            .args(["--node-id", "1"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--kafka-addr", &self.bootstrap()])
            .args(["--rpc-addr", &format!("127.0.0.1:{}", self.rpc_port)])
            .args(["--http-addr", &format!("127.0.0.1:{}", self.http_port)])
            .args(&self.extra)
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

    pub fn http_get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).expect("http connect");
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).expect("http write");
        let mut out = String::new();
        let _ = stream.read_to_string(&mut out);
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
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
