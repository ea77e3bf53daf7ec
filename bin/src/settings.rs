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
        Ok(Settings {
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
}
