//! Node settings: defaults, then `chronik.toml`, then `CHRONIK_*` environment
//! variables and flags (clap reads both), validated once at start-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

/// The `[node]`-less flat TOML file; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileSettings {
    /// Node id, >= 1. Default 1.
    pub node_id: Option<u64>,
    /// Data directory. Default `./chronik-data`.
    pub data_dir: Option<PathBuf>,
    /// Kafka listener. Default `0.0.0.0:9092`.
    pub kafka_addr: Option<String>,
    /// Address clients are told to connect to. Default: the Kafka listener, with
    /// `localhost` in place of an unspecified host.
    pub advertise_kafka_addr: Option<String>,
    /// Raft and admin RPC listener. Default `0.0.0.0:9093`.
    pub rpc_addr: Option<String>,
    /// HTTP listener for `/metrics` and `/health`. Default `0.0.0.0:9644`.
    pub http_addr: Option<String>,
    /// Create unknown topics on Metadata requests. Default true.
    pub auto_create_topics_enable: Option<bool>,
    /// Partitions of an auto-created topic. Default 1.
    pub num_partitions: Option<i32>,
    /// Default `retention.ms` of topics; -1 keeps forever. Default 604800000 (7 days).
    pub log_retention_ms: Option<i64>,
    /// Default `retention.bytes` of partitions; -1 is unlimited. Default -1.
    pub log_retention_bytes: Option<i64>,
    /// How often retention runs, e.g. "5m", "500ms". Default 5m.
    pub log_retention_check_interval: Option<String>,
    /// Largest record batch accepted, in bytes. Default 1048588.
    pub message_max_bytes: Option<i64>,
    /// Largest request frame accepted, in bytes. Default 104857600 (100 MiB).
    pub socket_request_max_bytes: Option<usize>,
    /// Partitions of `__consumer_offsets` (fixed once the topic exists). Default 50.
    pub offsets_topic_num_partitions: Option<i32>,
    /// How long a group starting from empty waits for more members. Default 3000.
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// Committed offsets of an empty group are deleted after this long. Default 10080 (7 days).
    pub offsets_retention_minutes: Option<u64>,
    /// Every node of the cluster as `ID@HOST:RPC_PORT`, comma-separated, the same list
    /// on every node (including this one). The first 3 (5 with 5 or more nodes) vote in
    /// the metadata group. Default: none, a single node.
    pub peers: Option<String>,
    /// This node joins a running cluster: it starts as a learner of the metadata group
    /// and asks the nodes in `peers` to add it. Default false.
    pub join: Option<bool>,
    /// Rack of this node, used to spread replicas. Default none.
    pub rack: Option<String>,
    /// Data centre of this node. Default none.
    pub dc: Option<String>,
    /// Replicas of auto-created topics and of topics created without one. Default: 3,
    /// or the number of nodes if fewer.
    pub default_replication_factor: Option<i16>,
    /// Default `min.insync.replicas` of topics. Default 1.
    pub min_insync_replicas: Option<i64>,
    /// A follower not caught up for this long leaves the in-sync replicas, in ms.
    /// Default 10000.
    pub replica_lag_time_max_ms: Option<u64>,
    /// One Raft tick, e.g. "100ms"; elections start after 10 to 20 silent ticks and
    /// leaders heartbeat every 2. Default 100ms.
    pub raft_tick_interval: Option<String>,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub kafka_addr: SocketAddr,
    pub advertise_host: String,
    pub advertise_port: u16,
    pub rpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub auto_create_topics: bool,
    pub num_partitions: i32,
    pub log_retention_ms: i64,
    pub log_retention_bytes: i64,
    pub retention_check_interval: Duration,
    pub message_max_bytes: i64,
    pub socket_request_max_bytes: usize,
    pub offsets_topic_num_partitions: i32,
    pub group_initial_rebalance_delay: Duration,
    pub offsets_retention: Duration,
    /// All nodes (id, RPC address) in configuration order; empty for a single node.
    pub peers: Vec<(u64, String)>,
    pub join: bool,
    pub rack: Option<String>,
    pub dc: Option<String>,
    pub default_replication_factor: i16,
    pub min_insync_replicas: i64,
    pub replica_lag_time: Duration,
    pub raft_tick_interval: Duration,
}

impl FileSettings {
    pub fn load(path: &Path) -> anyhow::Result<FileSettings> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Fields set in `over` replace those in `self`.
    pub fn overlay(self, over: FileSettings) -> FileSettings {
        FileSettings {
            node_id: over.node_id.or(self.node_id),
            data_dir: over.data_dir.or(self.data_dir),
            kafka_addr: over.kafka_addr.or(self.kafka_addr),
            advertise_kafka_addr: over.advertise_kafka_addr.or(self.advertise_kafka_addr),
            rpc_addr: over.rpc_addr.or(self.rpc_addr),
            http_addr: over.http_addr.or(self.http_addr),
            auto_create_topics_enable: over.auto_create_topics_enable.or(self.auto_create_topics_enable),
            num_partitions: over.num_partitions.or(self.num_partitions),
            log_retention_ms: over.log_retention_ms.or(self.log_retention_ms),
            log_retention_bytes: over.log_retention_bytes.or(self.log_retention_bytes),
            log_retention_check_interval: over.log_retention_check_interval.or(self.log_retention_check_interval),
            message_max_bytes: over.message_max_bytes.or(self.message_max_bytes),
            socket_request_max_bytes: over.socket_request_max_bytes.or(self.socket_request_max_bytes),
            offsets_topic_num_partitions: over.offsets_topic_num_partitions.or(self.offsets_topic_num_partitions),
            group_initial_rebalance_delay_ms: over
                .group_initial_rebalance_delay_ms
                .or(self.group_initial_rebalance_delay_ms),
            offsets_retention_minutes: over.offsets_retention_minutes.or(self.offsets_retention_minutes),
            peers: over.peers.or(self.peers),
            join: over.join.or(self.join),
            rack: over.rack.or(self.rack),
            dc: over.dc.or(self.dc),
            default_replication_factor: over.default_replication_factor.or(self.default_replication_factor),
            min_insync_replicas: over.min_insync_replicas.or(self.min_insync_replicas),
            replica_lag_time_max_ms: over.replica_lag_time_max_ms.or(self.replica_lag_time_max_ms),
            raft_tick_interval: over.raft_tick_interval.or(self.raft_tick_interval),
        }
    }

    pub fn validate(self) -> anyhow::Result<Settings> {
        let node_id = self.node_id.unwrap_or(1);
        if node_id == 0 {
            bail!("node-id must be >= 1 (0 is reserved)");
        }
        let addr = |name: &str, value: Option<String>, default: &str| -> anyhow::Result<SocketAddr> {
            let value = value.unwrap_or_else(|| default.to_string());
            value
                .parse()
                .with_context(|| format!("{name} {value:?} is not a HOST:PORT socket address (e.g. {default})"))
        };
        let kafka_addr = addr("kafka-addr", self.kafka_addr, "0.0.0.0:9092")?;
        let (advertise_host, advertise_port) = match self.advertise_kafka_addr {
            Some(a) => {
                let (host, port) =
                    a.rsplit_once(':').with_context(|| format!("advertise-kafka-addr {a:?} must be HOST:PORT"))?;
                let port = port.parse().with_context(|| format!("advertise-kafka-addr {a:?} has an invalid port"))?;
                (host.to_string(), port)
            }
            None if kafka_addr.ip().is_unspecified() => ("localhost".to_string(), kafka_addr.port()),
            None => (kafka_addr.ip().to_string(), kafka_addr.port()),
        };
        let num_partitions = self.num_partitions.unwrap_or(1);
        if num_partitions < 1 {
            bail!("num-partitions must be >= 1, got {num_partitions}");
        }
        let offsets_topic_num_partitions = self.offsets_topic_num_partitions.unwrap_or(50);
        if !(1..=1000).contains(&offsets_topic_num_partitions) {
            bail!("offsets-topic-num-partitions must be between 1 and 1000, got {offsets_topic_num_partitions}");
        }
        let offsets_retention_minutes = self.offsets_retention_minutes.unwrap_or(7 * 24 * 60);
        if offsets_retention_minutes == 0 {
            bail!("offsets-retention-minutes must be >= 1");
        }
        let interval = self.log_retention_check_interval.unwrap_or_else(|| "5m".into());
        let retention_check_interval = humantime::parse_duration(&interval).with_context(|| {
            format!("log-retention-check-interval {interval:?} is not a duration like \"5m\" or \"500ms\"")
        })?;
        let peers = match self.peers.as_deref().map(str::trim) {
            None | Some("") => Vec::new(),
            Some(list) => parse_peers(list)?,
        };
        if !peers.is_empty() && !peers.iter().any(|(id, _)| *id == node_id) {
            bail!("peers must list this node (node-id {node_id}) too, e.g. {node_id}@HOST:RPC_PORT");
        }
        let nodes = peers.len().max(1);
        let default_replication_factor = self.default_replication_factor.unwrap_or(nodes.min(3) as i16);
        if default_replication_factor < 1 || default_replication_factor as usize > nodes {
            bail!("default-replication-factor must be between 1 and the number of nodes ({nodes}), got {default_replication_factor}");
        }
        let min_insync_replicas = self.min_insync_replicas.unwrap_or(1);
        if min_insync_replicas < 1 {
            bail!("min-insync-replicas must be >= 1, got {min_insync_replicas}");
        }
        let tick = self.raft_tick_interval.unwrap_or_else(|| "100ms".into());
        let raft_tick_interval = humantime::parse_duration(&tick)
            .with_context(|| format!("raft-tick-interval {tick:?} is not a duration like \"100ms\""))?;
        if raft_tick_interval < Duration::from_millis(1) || raft_tick_interval > Duration::from_secs(10) {
            bail!("raft-tick-interval must be between 1ms and 10s, got {tick}");
        }
        let replica_lag_time_max_ms = self.replica_lag_time_max_ms.unwrap_or(10_000);
        if replica_lag_time_max_ms == 0 {
            bail!("replica-lag-time-max-ms must be > 0");
        }
        let join = self.join.unwrap_or(false);
        if join && !peers.iter().any(|(id, _)| *id != node_id) {
            bail!("join needs peers listing at least one node of the running cluster");
        }
        Ok(Settings {
            peers,
            join,
            rack: self.rack.filter(|r| !r.is_empty()),
            dc: self.dc.filter(|d| !d.is_empty()),
            default_replication_factor,
            min_insync_replicas,
            replica_lag_time: Duration::from_millis(replica_lag_time_max_ms),
            raft_tick_interval,
            node_id,
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from("./chronik-data")),
            kafka_addr,
            advertise_host,
            advertise_port,
            rpc_addr: addr("rpc-addr", self.rpc_addr, "0.0.0.0:9093")?,
            http_addr: addr("http-addr", self.http_addr, "0.0.0.0:9644")?,
            auto_create_topics: self.auto_create_topics_enable.unwrap_or(true),
            num_partitions,
            log_retention_ms: self.log_retention_ms.unwrap_or(7 * 24 * 3600 * 1000),
            log_retention_bytes: self.log_retention_bytes.unwrap_or(-1),
            retention_check_interval,
            message_max_bytes: self.message_max_bytes.unwrap_or(1024 * 1024 + 12),
            socket_request_max_bytes: self.socket_request_max_bytes.unwrap_or(100 * 1024 * 1024),
            offsets_topic_num_partitions,
            group_initial_rebalance_delay: Duration::from_millis(self.group_initial_rebalance_delay_ms.unwrap_or(3000)),
            offsets_retention: Duration::from_secs(offsets_retention_minutes * 60),
        })
    }
}

/// Parses `ID@HOST:PORT,...`: ids >= 1 and unique, addresses with a port.
fn parse_peers(list: &str) -> anyhow::Result<Vec<(u64, String)>> {
    let mut peers: Vec<(u64, String)> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (id, addr) = item
            .split_once('@')
            .with_context(|| format!("peer {item:?} must be ID@HOST:PORT, e.g. 1@10.0.0.1:9093"))?;
        let id: u64 = id.parse().with_context(|| format!("peer {item:?}: {id:?} is not a node id"))?;
        if id == 0 {
            bail!("peer {item:?}: node ids start at 1");
        }
        let (host, port) = addr.rsplit_once(':').with_context(|| format!("peer {item:?}: address needs a :PORT"))?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            bail!("peer {item:?}: {addr:?} is not HOST:PORT with a port from 1 to 65535");
        }
        if peers.iter().any(|(other, _)| *other == id) {
            bail!("peers: node id {id} is listed twice");
        }
        peers.push((id, addr.to_string()));
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let s = FileSettings::default().validate().expect("defaults");
        assert_eq!(s.node_id, 1);
        assert_eq!(s.kafka_addr.port(), 9092);
        assert_eq!((s.advertise_host.as_str(), s.advertise_port), ("localhost", 9092));
        assert_eq!(s.retention_check_interval, Duration::from_secs(300));
    }

    #[test]
    fn flags_override_the_file_and_errors_name_the_setting() {
        let file: FileSettings = toml::from_str("node-id = 3\nkafka-addr = \"127.0.0.1:1\"").expect("toml");
        let flags = FileSettings { node_id: Some(4), ..Default::default() };
        let s = file.overlay(flags).validate().expect("valid");
        assert_eq!((s.node_id, s.kafka_addr.port()), (4, 1));
        let bad = FileSettings { kafka_addr: Some("nope".into()), ..Default::default() };
        assert!(bad.validate().expect_err("bad address").to_string().contains("kafka-addr"));
        assert!(toml::from_str::<FileSettings>("no-such-key = 1").is_err());
    }

    #[test]
    fn peers_are_parsed_and_checked() {
        let ok = FileSettings {
            node_id: Some(2),
            peers: Some("1@a:9093, 2@b:9093,3@10.0.0.3:9093".into()),
            ..Default::default()
        };
        let s = ok.validate().expect("valid peers");
        assert_eq!(s.peers.len(), 3);
        assert_eq!(s.peers[2], (3, "10.0.0.3:9093".to_string()));
        assert_eq!(s.default_replication_factor, 3);
        for (peers, wanted) in [
            ("1@a:9093,1@b:9093", "listed twice"),
            ("1@a", "needs a :PORT"),
            ("x@a:1", "not a node id"),
            ("0@a:1", "start at 1"),
            ("1@a:0", "HOST:PORT"),
            ("3@a:1,4@b:1", "must list this node"),
        ] {
            let bad = FileSettings { node_id: Some(1), peers: Some(peers.into()), ..Default::default() };
            let err = bad.validate().expect_err(peers).to_string();
            assert!(err.contains(wanted), "{peers}: {err}");
        }
        let file: FileSettings =
            toml::from_str("node-id = 1\npeers = \"1@10.0.0.1:9093,2@10.0.0.2:9093\"\nrack = \"rack-a\"")
                .expect("cluster toml");
        let s = file.validate().expect("valid cluster toml");
        assert_eq!((s.peers.len(), s.rack.as_deref()), (2, Some("rack-a")));
        let too_many = FileSettings { default_replication_factor: Some(2), ..Default::default() };
        assert!(too_many.validate().is_err(), "one node cannot hold two replicas");
    }
}
